"""Publish a local-mode client's decisions to the ``decisions`` topic asynchronously, in batches.

``route()`` in local mode hands the encoded decision to :meth:`DecisionPublisher.offer` and returns; one task
ships what was offered ``linger_s`` after its first record (sooner when ``batch`` records wait; no timer runs
while nothing waits) as one record batch per partition, keyed by ``request_id`` and placed by the default
partitioner, exactly where a worker puts the same decision (so it co-partitions with the feedback).

Little is held per decision: :meth:`offer` copies the value into one reused staging buffer, and every
:data:`PACK_AT` records (or when the shipper runs) the staged records are placed (their keys hashed together)
and appended to their partition's record batch (:class:`~banditroute.kafka.record_batch.RecordBatchWriter`:
written in one pass, hardware CRC-32C). From then on a decision is only its bytes inside that batch, which is
kept, as built, until the broker acknowledges it. (Holding thousands of separate encoded decisions
until their acknowledgement cost every ``route()`` microseconds: freshly allocated memory that the allocator
had just given back to the system.) A batch whose send fails is sent again as built (a decision stored twice
repeats its ``decision_id``, which the join already treats as one). Decisions still held when the process
dies are lost: their feedback then joins no decision (the join's unknown-request path), as for a worker
killed before publishing.

Threads: :meth:`offer` may be called from any thread holding :attr:`DecisionPublisher.lock` (the loop's own
thread may call it without); the shipper takes the lock for its swaps and counts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from array import array
from typing import Any

from banditroute.kafka.outbox import Headers
from banditroute.kafka.record_batch import RecordBatchWriter, encode_headers
from banditroute.kafka.topics import partitions_for

log = logging.getLogger("banditroute.client")

MAX_IN_FLIGHT = 8
"""Shipments (one or more record batches each) that may await acknowledgement while the next one is shipped."""
ORIGIN_HEADER = "banditroute-origin"
"""Header of every record a local-mode client publishes (value ``local``): workers count them per client."""
ORIGIN_LOCAL: Headers = [(ORIGIN_HEADER, b"local")]
_ORIGIN_BYTES = encode_headers(ORIGIN_LOCAL)  # the same headers of every record, written once
LAG_SAMPLES = 200_000
"""How many publish lags (route() returning -> acknowledged) are kept for ``banditroute bench route``."""
PACK_AT = 256
"""Staged records placed and appended to their record batches together (their keys are hashed in one go)."""
STAGE_BYTES = 256 * 1024
"""Size of the reused buffer the values of staged records are copied into (a fuller one is packed first)."""


class _Stage:
    """Records of one topic offered since the last packing: their keys, where each value ends in ``buffer``
    (the values side by side) and when each was offered (``time.perf_counter``)."""

    __slots__ = ("buffer", "used", "keys", "ends", "times")

    def __init__(self) -> None:
        self.buffer = bytearray(STAGE_BYTES)
        self.used = 0
        self.keys: list[bytes] = []
        self.ends: list[int] = []
        self.times: list[float] = []


class _Batch:
    """One record batch for a topic partition, and when each of its records was offered."""

    __slots__ = ("topic", "partition", "builder", "times")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.builder = RecordBatchWriter(_ORIGIN_BYTES)
        self.times = array("d")

    @property
    def count(self) -> int:
        return len(self.times)


class DecisionPublisher:
    """Decisions, bounded in number, shipped by one background task (start with :meth:`start`)."""

    def __init__(
        self,
        producer: Any,
        *,
        max_pending: int = 100_000,
        linger_s: float = 0.005,
        batch: int = 5_000,
        retry_s: float = 0.5,
        lock: threading.Lock | None = None,
    ) -> None:
        self.producer = producer
        self.max_pending = max_pending
        self.linger_s = linger_s
        self.batch = batch
        self.retry_s = retry_s
        self.lock = lock or threading.Lock()
        """Held by whoever offers from another thread than the loop's, and by the shipper while it swaps."""
        self._pending = 0  # offered and not yet acknowledged
        self._unshipped = 0  # offered and not yet handed to the producer (staged, in open batches, to retry)
        self._stages: dict[str, _Stage] = {}
        self._open: dict[tuple[str, int], _Batch] = {}
        self._ready: list[_Batch] = []  # full batches and batches to send again, in order
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._task: asyncio.Task[None] | None = None
        self._acks: set[asyncio.Future[None]] = set()
        self._partitions: dict[str, int] = {}
        self.lags_ms: collections.deque[float] = collections.deque(maxlen=LAG_SAMPLES)
        self.stats = {"published": 0, "send_failures": 0, "refused_full": 0}

    @property
    def pending(self) -> int:
        """Decisions offered and not yet acknowledged."""
        return self._pending

    async def start(self, topics: list[str]) -> None:
        """Learn the partition counts of ``topics`` and start shipping."""
        for topic in topics:
            parts = await self.producer.partitions_for(topic)
            self._partitions[topic] = len(parts)
            self._stages[topic] = _Stage()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task = asyncio.create_task(self._run(), name="banditroute-decision-publisher")

    def offer(self, topic: str, key: bytes, value: bytes) -> bool:
        """Queue one record (no await); False when ``max_pending`` records already wait (nothing queued).
        From a thread other than the loop's, hold :attr:`lock`."""
        stage = self._stages.get(topic)
        if stage is None:  # shipping would fail on it for good, holding every decision behind it
            raise KeyError(f"topic {topic!r} was not given to start()")
        if self._pending >= self.max_pending:
            self.stats["refused_full"] += 1
            return False
        used = stage.used
        end = used + len(value)
        if end > STAGE_BYTES:
            self._pack(topic, stage)
            if len(value) > STAGE_BYTES:
                raise ValueError(f"a record of {len(value)} bytes does not fit a record batch")
            used, end = 0, len(value)
        stage.buffer[used:end] = value
        stage.used = end
        keys = stage.keys
        keys.append(key)
        stage.ends.append(end)
        stage.times.append(time.perf_counter())
        self._pending += 1
        unshipped = self._unshipped = self._unshipped + 1
        if len(keys) >= PACK_AT:
            self._pack(topic, stage)
        if unshipped == 1 or unshipped == self.batch:
            self._wake_shipper()  # it waits for a first record, then lingers for more
        return True

    def _wake_shipper(self) -> None:
        if threading.get_ident() == self._loop_thread or self._loop is None:
            self._idle.clear()
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: stop() has given up already
                self._loop.call_soon_threadsafe(self._woken)

    def _woken(self) -> None:
        self._idle.clear()
        self._wake.set()

    def _pack(self, topic: str, stage: _Stage) -> None:
        """Append the staged records to their partitions' record batches (full batches wait in ``_ready``): the
        records of each partition together, in the order they were offered."""
        keys = stage.keys
        if not keys:
            return
        placed = partitions_for(keys, self._partitions[topic])
        view = memoryview(stage.buffer)
        now_ms = int(time.time() * 1000.0)  # the records' timestamp (aiokafka's: the time of appending)
        ends = stage.ends
        starts = [0, *ends[:-1]]
        times = stage.times
        order = sorted(range(len(placed)), key=placed.__getitem__)  # stable: offered order within a partition
        first = 0
        for partition in sorted(set(placed)):
            last = first + placed.count(partition)
            where = order[first:last]
            first = last
            part_keys = [keys[i] for i in where]
            part_values = [view[starts[i] : ends[i]] for i in where]
            part_times = [times[i] for i in where]
            batch = self._open.get((topic, partition))
            if batch is None:
                batch = self._open[(topic, partition)] = _Batch(topic, partition)
            done = batch.builder.add_many(part_keys, part_values, now_ms)
            batch.times.extend(part_times[:done] if done < len(where) else part_times)
            while done < len(where):  # the batch is full: it waits in _ready, the rest go to a new one
                batch.builder.seal()
                self._ready.append(batch)
                batch = self._open[(topic, partition)] = _Batch(topic, partition)
                added = batch.builder.add_many(part_keys[done:], part_values[done:], now_ms)
                if not added:  # a staged record always fits an empty batch
                    raise ValueError(
                        f"a record of {len(part_values[done])} bytes does not fit a record batch"
                    )
                batch.times.extend(part_times[done : done + added])
                done += added
            batch.builder.seal()  # the records' bytes leave the staging buffer, which is reused from here
        view.release()
        stage.used = 0
        keys.clear()
        ends.clear()
        times.clear()

    def _take(self) -> list[_Batch]:
        """Every record not yet handed to the producer, as record batches (under the lock)."""
        with self.lock:
            for topic, stage in self._stages.items():
                self._pack(topic, stage)
            batches = [*self._ready, *self._open.values()]
            self._ready = []
            self._open = {}
            self._unshipped = 0
        return batches

    def _give_back(self, batches: list[_Batch]) -> None:
        """Batches to send again, before anything newer."""
        if not batches:
            return
        with self.lock:
            self._ready[:0] = batches
            self._unshipped += sum(b.count for b in batches)
        self._woken()  # the shipper may be waiting for a first record

    async def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything offered so far is acknowledged; False if that did not happen in time."""
        if self._pending == 0:
            return True
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        while True:
            if not self._unshipped:  # nothing to ship: no timer either, until the next record or flush
                if self._pending == 0:
                    self._idle.set()
                await self._wake.wait()
            self._wake.clear()
            if self._unshipped < self.batch:  # linger for a batch; a full batch or a flush cuts it short
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.linger_s)
                self._wake.clear()
            if not self._unshipped:
                continue
            while len(self._acks) >= MAX_IN_FLIGHT:  # bound the batches awaiting acknowledgement
                await asyncio.wait(self._acks, return_when=asyncio.FIRST_COMPLETED)
            batches = self._take()
            futures: list[asyncio.Future[Any]] = []
            try:
                for batch in batches:
                    futures.append(
                        await self.producer.send_batch(batch.builder, batch.topic, partition=batch.partition)
                    )
            except asyncio.CancelledError:
                self._give_back(batches[len(futures) :])
                raise
            except Exception as exc:  # broker trouble: keep the records, retry them
                self._failed(batches[len(futures) :], exc)
                await asyncio.sleep(self.retry_s)
            finally:
                if futures:
                    task = asyncio.ensure_future(self._acknowledged(batches[: len(futures)], futures))
                    self._acks.add(task)
                    task.add_done_callback(self._acks.discard)

    async def _acknowledged(self, batches: list[_Batch], futures: list[asyncio.Future[Any]]) -> None:
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [b for b, r in zip(batches, results, strict=True) if isinstance(r, BaseException)]
        if failed:
            errors = [r for r in results if isinstance(r, BaseException)]
            self._failed(failed, errors[0])
        now = time.perf_counter()
        done = 0
        for batch, result in zip(batches, results, strict=True):
            if not isinstance(result, BaseException):
                done += batch.count
                self.lags_ms.extend([(now - at) * 1000.0 for at in batch.times])
        if done:
            with self.lock:
                self._pending -= done
            self.stats["published"] += done
        if self._pending == 0:
            self._idle.set()

    def _failed(self, batches: list[_Batch], exc: BaseException) -> None:
        """Send the batches again (a decision stored twice is joined once)."""
        self.stats["send_failures"] += 1
        log.warning("publishing %d decisions failed (retrying): %r", sum(b.count for b in batches), exc)
        self._give_back(batches)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Ship what is queued (bounded by ``timeout_s``), then stop; unshipped decisions are logged."""
        if self._task is None:
            return
        await self.flush(timeout_s)
        left = self._pending
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        for task in list(self._acks):  # the shipper, cancelled while sending, may have added one
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
