"""Helpers for real-broker tests: run a faust app in-process, produce and consume with aiokafka."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1) -> None:
    """Create topics up front (idempotent), so consumers never wait on auto-creation."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


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
