"""Fetch records a faust stream skipped, so nothing is lost.

faust 0.15 can silently drop the rest of a fetched batch when a rebalance changes the consumer generation
mid-iteration (``Consumer.getmany`` breaks out of the loop) and, because its commit logic only looks for
gaps between acknowledged offsets, later commits move past the dropped records. Our own topics have
contiguous offsets (no compaction, no transactions), so any jump seen by an agent is such a drop; the agent
reads the missing range directly with this small aiokafka reader and processes it first, in order.
"""

from __future__ import annotations

import asyncio
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
        self._lock = (
            asyncio.Lock()
        )  # the join and the learn agents share the one consumer: one range at a time
        self.filled = 0
        self.last_offsets: dict[tuple[str, int], int] = {}
        """(topic, partition) -> offset of the last record seen (seeded with committed offset - 1)."""

    async def seed(self, group_id: str, assigned: list[Any], attempts: int = 5) -> None:
        """Forget what was seen and start from where each newly assigned stream partition resumes (the group's
        committed offset), so a skip right at the head shows too. Retried; without seeds only such a skip at
        the start of a partition goes unseen."""
        from banditroute.kafka.admin import admin_client

        self.last_offsets.clear()  # another worker may have read these partitions meanwhile
        tps = [TopicPartition(tp.topic, tp.partition) for tp in assigned]
        for attempt in range(attempts):
            try:
                if tps:
                    async with admin_client(self.bootstrap, self.security) as admin:
                        committed = await admin.list_consumer_group_offsets(group_id, partitions=tps)
                    for tp in tps:
                        meta = committed.get(tp)
                        if meta is not None and meta.offset >= 0:  # unless a record was seen meanwhile
                            self.last_offsets.setdefault((tp.topic, tp.partition), meta.offset - 1)
                return
            except Exception as exc:  # retried; see above for what a missing seed costs
                log.warning("could not read committed offsets (attempt %d): %s", attempt + 1, exc)
                await asyncio.sleep(0.2 * (attempt + 1))

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
        async with self._lock:
            return await self._fetch(topic, partition, start, end, timeout_s)

    async def _fetch(self, topic: str, partition: int, start: int, end: int, timeout_s: float) -> list[Any]:
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
