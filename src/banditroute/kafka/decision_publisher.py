"""Publish a local-mode client's decisions to the ``decisions`` topic asynchronously, in batches.

``route()`` in local mode appends the encoded decision to a bounded in-memory queue and returns; one task
ships the queue every ``linger_s`` (or sooner when ``batch`` records wait) as one record batch per partition,
keyed by ``request_id`` and placed by the default partitioner, exactly where a worker puts the same decision
(so it co-partitions with the feedback). A failed send is retried with the same records (a decision stored
twice repeats its ``decision_id``, which the join already treats as one). Decisions still queued when the
process dies are lost: their feedback then joins no decision (the join's unknown-request path), as for a
worker killed before publishing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any

from banditroute.kafka.outbox import PartitionBatches
from banditroute.kafka.topics import partition_for

log = logging.getLogger("banditroute.client")

LAG_SAMPLES = 200_000
"""How many publish lags (route() returning -> acknowledged) are kept for ``banditroute bench route``."""


class DecisionPublisher:
    """A bounded queue of decisions, shipped by one background task (start with :meth:`start`)."""

    def __init__(
        self,
        producer: Any,
        *,
        max_pending: int = 100_000,
        linger_s: float = 0.005,
        batch: int = 5_000,
        retry_s: float = 0.5,
    ) -> None:
        self.producer = producer
        self.max_pending = max_pending
        self.linger_s = linger_s
        self.batch = batch
        self.retry_s = retry_s
        self._queue: list[tuple[str, int, bytes, bytes, float]] = []
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._partitions: dict[str, int] = {}
        self.lags_ms: collections.deque[float] = collections.deque(maxlen=LAG_SAMPLES)
        self.stats = {"published": 0, "send_failures": 0, "refused_full": 0}

    @property
    def pending(self) -> int:
        """Decisions queued or in flight (not yet acknowledged)."""
        return len(self._queue) + self._in_flight

    async def start(self, topics: list[str]) -> None:
        """Learn the partition counts of ``topics`` and start shipping."""
        for topic in topics:
            parts = await self.producer.partitions_for(topic)
            self._partitions[topic] = len(parts)
        self._task = asyncio.create_task(self._run(), name="banditroute-decision-publisher")

    def offer(self, topic: str, key: bytes, value: bytes) -> bool:
        """Queue one record (no await); False when ``max_pending`` records already wait (nothing queued)."""
        if self.pending >= self.max_pending:
            self.stats["refused_full"] += 1
            return False
        partition = partition_for(key, self._partitions[topic])
        self._queue.append((topic, partition, key, value, time.perf_counter()))
        self._idle.clear()
        if len(self._queue) >= self.batch:
            self._wake.set()
        return True

    async def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything queued so far is acknowledged; False if that did not happen in time."""
        if self.pending == 0:
            return True
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.linger_s)
            self._wake.clear()
            if not self._queue:
                if self._in_flight == 0:
                    self._idle.set()
                continue
            items, self._queue = self._queue, []
            self._in_flight = len(items)
            while True:
                try:
                    await self._ship(items)
                    break
                except asyncio.CancelledError:
                    self._queue[:0] = items
                    raise
                except Exception as exc:  # broker trouble: keep the records, retry them
                    self.stats["send_failures"] += 1
                    log.warning("publishing %d decisions failed (retrying): %r", len(items), exc)
                    await asyncio.sleep(self.retry_s)
            self._in_flight = 0
            if not self._queue:
                self._idle.set()

    async def _ship(self, items: list[tuple[str, int, bytes, bytes, float]]) -> None:
        batches = PartitionBatches(self.producer)
        for topic, partition, key, value, _at in items:
            await batches.add(topic, partition, key, value)
        await asyncio.gather(*await batches.submit())
        now = time.perf_counter()
        self.lags_ms.extend((now - at) * 1000.0 for *_rest, at in items)
        self.stats["published"] += len(items)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Ship what is queued (bounded by ``timeout_s``), then stop; unshipped decisions are logged."""
        if self._task is None:
            return
        await self.flush(timeout_s)
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        self._task = None
        if self._queue:
            log.warning("%d decisions not published at close (broker unreachable)", len(self._queue))


__all__ = ["LAG_SAMPLES", "DecisionPublisher"]
