"""Fetch records a faust stream skipped, so nothing is lost.

faust 0.15 can silently drop the rest of a fetched batch when a rebalance changes the consumer generation
mid-iteration (``Consumer.getmany`` breaks out of the loop) and, because its commit logic only looks for
gaps between acknowledged offsets, later commits move past the dropped records. Our own topics have
contiguous offsets (no compaction, no transactions), so any jump seen by an agent is such a drop; the agent
reads the missing range directly with this small aiokafka reader and processes it first, in order.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger("banditroute.worker")


class GapFiller:
    """Watches the offsets each stream partition delivers and reads a skipped range ``[start, end)`` directly
    (lazily started consumer, no consumer group). Counts ``stream_gaps``, ``stream_gap_records`` and
    ``stream_gap_unread`` in ``counters``."""

    def __init__(
        self, bootstrap: str, security: dict[str, Any], counters: Counter[str] | None = None
    ) -> None:
        self.bootstrap = bootstrap
        self.security = security
        self.counters: Counter[str] = Counter() if counters is None else counters
        self._consumer: AIOKafkaConsumer | None = None
        self.filled = 0
        self.last_offsets: dict[tuple[str, int], int] = {}
        """(topic, partition) -> offset of the last record seen (seeded with committed offset - 1)."""

    async def missed(self, msg: Any) -> list[Any]:
        """Records of this partition the stream skipped since the last one seen, read directly, in order."""
        key = (msg.topic, msg.partition)
        last = self.last_offsets.get(key)
        self.last_offsets[key] = msg.offset
        if last is None or msg.offset <= last + 1:
            return []
        self.counters["stream_gaps"] += 1
        log.warning(
            "stream skipped offsets %d..%d of %s[%d]; reading them directly",
            last + 1,
            msg.offset - 1,
            msg.topic,
            msg.partition,
        )
        records = await self.fetch(msg.topic, msg.partition, last + 1, msg.offset)
        self.counters["stream_gap_records"] += len(records)
        if len(records) < msg.offset - last - 1:
            self.counters["stream_gap_unread"] += msg.offset - last - 1 - len(records)
            log.error(
                "read only %d of %d skipped records of %s[%d]",
                len(records),
                msg.offset - last - 1,
                msg.topic,
                msg.partition,
            )
        return records

    async def fetch(
        self, topic: str, partition: int, start: int, end: int, timeout_s: float = 30.0
    ) -> list[Any]:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False, **self.security
            )
            await self._consumer.start()
        consumer = self._consumer
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=200, max_records=max(1, end - start))
            for record in batch.get(tp, []):
                if start <= record.offset < end:
                    out.append(record)
            if out and out[-1].offset >= end - 1:
                break
            if await consumer.position(tp) >= end:
                break
        self.filled += len(out)
        return out

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
