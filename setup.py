"""The optional C extension (``banditroute._native``); everything else is in pyproject.toml.

``optional=True``: without a C compiler the install goes on without it, and the worker writes its record
batches with aiokafka's builder instead (``banditroute.kafka.native_batch``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "banditroute._native",
            sources=["src/banditroute/_native.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
