# The banditroute worker image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
RUN pip install --no-cache-dir -c constraints.txt . && banditroute init /app/config
USER 65534
ENTRYPOINT ["banditroute"]
CMD ["worker"]
