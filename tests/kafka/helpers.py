"""Helpers for real-broker tests: run a faust app in-process, produce and consume with aiokafka."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from banditroute.bench import common as bench_common


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1) -> None:
    """Create topics up front (idempotent), so consumers never wait on auto-creation (one partition unless told)."""
    await bench_common.create_topics(bootstrap, names, partitions)


@asynccontextmanager
async def run_faust_app(app: faust.App, ready: Callable[[], bool] | None = None) -> AsyncIterator[faust.App]:
    """Start a faust app in this event loop and stop it on exit."""
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@asynccontextmanager
async def producer(bootstrap: str, **kwargs: Any) -> AsyncIterator[AIOKafkaProducer]:
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, **kwargs)
    await prod.start()
    try:
        yield prod
    finally:
        await prod.stop()


async def consume(
    bootstrap: str,
    topic: str,
    *,
    count: int,
    timeout_s: float = 60.0,
    key_filter: Callable[[Any], bool] | None = None,
) -> list[Any]:
    """Read ``count`` records of ``topic`` from the beginning, or fail after ``timeout_s``."""
    cons = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await cons.start()
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < count and time.monotonic() < deadline:
            batch = await cons.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(r for r in records if key_filter is None or key_filter(r))
    finally:
        await cons.stop()
    return out


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 60.0, interval_s: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or the deadline passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval_s)
    return predicate()


class WorkerProcess:
    """``banditroute worker`` in a subprocess, for tests that kill and restart it."""

    def __init__(self, env: dict[str, str], log_path: str, argv: list[str] | None = None) -> None:
        self.env = env
        self.log_path = log_path
        self.argv = argv
        """The command (default: ``python -m banditroute worker``)."""
        self.proc: Any = None

    def start(self) -> WorkerProcess:
        import os
        import subprocess
        import sys

        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                self.argv or [sys.executable, "-m", "banditroute", "worker"],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def kill(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def terminate(self, timeout_s: float = 30.0) -> int | None:
        import signal
        import subprocess

        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return int(self.proc.returncode)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the worker's log (for failure messages: pytest keeps few temp folders)."""
        try:
            with open(self.log_path, "rb") as fh:
                return b"".join(fh.readlines()[-lines:]).decode("utf-8", "replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"


def worker_env(bootstrap: str, prefix: str, config_dir: str, data_dir: str, **extra: str) -> dict[str, str]:
    """Environment for a test worker with its own topics, group and data folder."""
    return {
        "BANDITROUTE_KAFKA_BOOTSTRAP": bootstrap,
        "BANDITROUTE_TOPIC_PREFIX": prefix,
        "BANDITROUTE_APP_ID": prefix,
        "BANDITROUTE_CONFIG_DIR": config_dir,
        "BANDITROUTE_DATA_DIR": data_dir,
        "BANDITROUTE_WEB_ENABLED": "false",
        "BANDITROUTE_PARTITIONS": "4",
        "BANDITROUTE_STATE_PARTITIONS": "2",
        "BANDITROUTE_SESSION_TIMEOUT_S": "6",
        "BANDITROUTE_LOG_LEVEL": "warning",
        **extra,
    }
