# The banditroute worker image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
# setup.py builds the optional C extension (banditroute._native) where a C compiler is installed; the slim image
# has none, so the image runs its pure-Python fallback (add build-essential to this stage for the extension)
COPY pyproject.toml setup.py constraints.txt README.md ./
COPY src ./src
RUN pip install --no-cache-dir -c constraints.txt . && banditroute init /app/config
USER 65534
ENTRYPOINT ["banditroute"]
CMD ["worker"]
