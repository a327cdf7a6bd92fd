"""Publish a local-mode client's decisions to the ``decisions`` topic asynchronously, in batches.

``route()`` in local mode appends the encoded decision to a bounded in-memory queue and returns; one task
ships the queue ``linger_s`` after its first record (sooner when ``batch`` records wait; no timer runs while
the queue is empty) as one record batch per partition, keyed by ``request_id`` and placed by the default
partitioner, exactly where a worker puts the same decision (so it co-partitions with the feedback). A failed send is retried with the same records (a decision stored
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

from banditroute.kafka.outbox import Headers, PartitionBatches
from banditroute.kafka.topics import partitions_for

log = logging.getLogger("banditroute.client")

MAX_IN_FLIGHT = 8
"""Shipped batches that may await acknowledgement while the next one is shipped."""
ORIGIN_HEADER = "banditroute-origin"
"""Header of every record a local-mode client publishes (value ``local``): workers count them per client."""
ORIGIN_LOCAL: Headers = [(ORIGIN_HEADER, b"local")]
Item = tuple[str, bytes, bytes, float]
"""A queued record: topic, key, value and when it was queued (``time.perf_counter``)."""
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
        self._queue: list[Item] = []
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._acks: set[asyncio.Future[None]] = set()
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
        if (
            topic not in self._partitions
        ):  # shipping would fail on it for good, holding every decision behind it
            raise KeyError(f"topic {topic!r} was not given to start()")
        if self.pending >= self.max_pending:
            self.stats["refused_full"] += 1
            return False
        queue = self._queue
        queue.append((topic, key, value, time.perf_counter()))
        if len(queue) == 1:  # the shipper waits for a first record, then lingers for more
            self._idle.clear()
            self._wake.set()
        elif len(queue) >= self.batch:
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
            if not self._queue:  # nothing to ship: no timer either, until the next record or flush
                if self.pending == 0:
                    self._idle.set()
                await self._wake.wait()
            self._wake.clear()
            if len(self._queue) < self.batch:  # linger for a batch; a full batch or a flush cuts it short
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.linger_s)
                self._wake.clear()
            if not self._queue:
                continue
            while len(self._acks) >= MAX_IN_FLIGHT:  # bound the batches awaiting acknowledgement
                await asyncio.wait(self._acks, return_when=asyncio.FIRST_COMPLETED)
            items, self._queue = self._queue, []
            self._in_flight += len(items)
            try:
                futures = await self._submit(items)
            except asyncio.CancelledError:
                self._requeue(items)
                raise
            except Exception as exc:  # broker trouble: keep the records, retry them
                self._failed(items, exc)
                await asyncio.sleep(self.retry_s)
                continue
            task = asyncio.ensure_future(self._acknowledged(items, futures))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    async def _submit(self, items: list[Item]) -> list[asyncio.Future[Any]]:
        batches = PartitionBatches(self.producer)
        for (topic, key, value, _at), partition in zip(items, self._place(items), strict=True):
            if not batches.try_append(topic, partition, key, value, ORIGIN_LOCAL):
                await batches.add(topic, partition, key, value, ORIGIN_LOCAL)
        return await batches.submit()

    def _place(self, items: list[Item]) -> list[int]:
        """The partition of each record, as the default partitioner places its key (hashed together)."""
        topic = items[0][0]
        if all(item[0] == topic for item in items):
            return partitions_for([item[1] for item in items], self._partitions[topic])
        by_topic: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_topic.setdefault(item[0], []).append(i)
        placed = [0] * len(items)
        for topic, where in by_topic.items():
            keys = [items[i][1] for i in where]
            for i, partition in zip(where, partitions_for(keys, self._partitions[topic]), strict=True):
                placed[i] = partition
        return placed

    async def _acknowledged(self, items: list[Item], futures: list[asyncio.Future[Any]]) -> None:
        try:
            await asyncio.gather(*futures)
        except Exception as exc:
            self._failed(items, exc)
            return
        now = time.perf_counter()
        self.lags_ms.extend([(now - item[3]) * 1000.0 for item in items])
        self.stats["published"] += len(items)
        self._in_flight -= len(items)
        if self.pending == 0:
            self._idle.set()

    def _requeue(self, items: list[Item]) -> None:
        self._in_flight -= len(items)
        self._queue[:0] = items
        self._wake.set()  # the shipper may be waiting for a first record

    def _failed(self, items: list[Item], exc: BaseException) -> None:
        """Put the records back at the head of the queue (a decision stored twice is joined once)."""
        self.stats["send_failures"] += 1
        log.warning("publishing %d decisions failed (retrying): %r", len(items), exc)
        self._requeue(items)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Ship what is queued (bounded by ``timeout_s``), then stop; unshipped decisions are logged."""
        if self._task is None:
            return
        await self.flush(timeout_s)
        left = self.pending
        for task in (self._task, *self._acks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._task = None
        if left:
            log.warning("%d decisions not published at close (broker unreachable)", left)


def is_local_origin(headers: Any) -> bool:
    """Whether a record's headers mark it as published by a local-mode client."""
    return any(key == ORIGIN_HEADER and value == b"local" for key, value in headers or ())


__all__ = ["LAG_SAMPLES", "MAX_IN_FLIGHT", "ORIGIN_HEADER", "DecisionPublisher", "is_local_origin"]
