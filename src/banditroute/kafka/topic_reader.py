"""Follow every partition of one topic without a consumer group: the simulators' and benchmarks' decision tap.

A :class:`TopicReader` assigns all partitions of its topic (manual assignment, nothing committed) and starts
at their end (only records produced from now on) or their beginning. Positions are resolved in
:meth:`TopicReader.start`, so a record produced after ``start`` returns is never missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition

from banditroute.kafka.raw_fetch import install as install_raw_fetch
from banditroute.kafka.raw_fetch import raw_records
from banditroute.kafka.topics import partitions_of


class TopicReader:
    """Records of every partition of ``topic``, fetched with :meth:`fetch`; use as ``async with``."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        security: Mapping[str, Any] | None = None,
        *,
        start_at: Literal["end", "beginning"] = "end",
        fetch_max_wait_ms: int = 20,
        max_partition_fetch_bytes: int = 1024 * 1024,
        raw: bool = False,
    ) -> None:
        """``raw``: :meth:`fetch` returns each record batch's own records (aiokafka's C ``DefaultRecord``:
        ``offset``, ``key``, ``value``, ``timestamp``, ``headers``; no ``topic`` or ``partition``) instead of a
        ``ConsumerRecord`` made per record (:mod:`~banditroute.kafka.raw_fetch`). Under an aiokafka release it
        was not checked against, aiokafka's own ``ConsumerRecord`` objects, which have those fields too."""
        if raw:
            install_raw_fetch()
        self.topic = topic
        self.start_at = start_at
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "group_id": None,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest" if start_at == "beginning" else "latest",
            "fetch_max_wait_ms": fetch_max_wait_ms,
            "max_partition_fetch_bytes": max_partition_fetch_bytes,
            **({"value_deserializer": raw_records} if raw else {}),
            **dict(security or {}),
        }
        self._consumer: Any = None

    async def start(self, wait_s: float = 0.0) -> TopicReader:
        """Connect, assign every partition and resolve its start position. Raises ``LookupError`` when the
        topic (with a leader for each partition) does not appear within ``wait_s`` seconds."""
        self._consumer = AIOKafkaConsumer(**self._options)  # made here: aiokafka binds the running loop
        try:
            await self._consumer.start()
            deadline = time.monotonic() + wait_s
            while not (parts := await partitions_of(self._consumer, self.topic, require_leader=True)):
                if time.monotonic() >= deadline:
                    raise LookupError(f"topic {self.topic} does not exist")
                await asyncio.sleep(0.1)
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            self._consumer.assign(tps)
            if self.start_at == "end":
                await self._consumer.seek_to_end(*tps)
            else:
                await self._consumer.seek_to_beginning(*tps)
            for tp in tps:
                await self._consumer.position(tp)
        except BaseException:
            with contextlib.suppress(Exception):  # the start's own error is the one to raise
                await self.stop()
            raise
        return self

    async def fetch(self, timeout_ms: int = 100, max_records: int | None = None) -> dict[Any, list[Any]]:
        """The records that arrived, by partition (empty after ``timeout_ms`` without any)."""
        if self._consumer is None:
            raise RuntimeError("TopicReader.fetch before start")
        batch: dict[Any, list[Any]] = await self._consumer.getmany(
            timeout_ms=timeout_ms, max_records=max_records
        )
        return batch

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def __aenter__(self) -> TopicReader:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()


__all__ = ["TopicReader"]
