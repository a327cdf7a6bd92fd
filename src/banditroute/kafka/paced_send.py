"""The bench driver's paced sends: a tick's requests as one record batch per partition, never waited for (issue #16).

``bench e2e`` sends requests at a fixed rate to the router and to the relay alike and times each request from
its send to the arrival of its decision. With one aiokafka ``send()`` per request the driver cost ~9 µs per
request (py-spy: the send, its partitioner and accumulator ~45 % of the driver): at 50-60k requests/s that is
0.9 of a core for one Python thread, so the driver itself fell behind and its lag, not the process under test,
set the latency (the relay's p50 at 55k/s: 0.3-0.9 s on the 2-core machine).

:class:`PacedSender` takes a tick's requests together: their partitions hashed in one go (the default
partitioner's murmur2, so each request lands where aiokafka would put it) and one record batch per partition,
written by the C batch writer where it is built (:mod:`banditroute.kafka.native_batch`; aiokafka's own
otherwise). While fewer than :data:`MAX_IN_FLIGHT` produce requests await their answer, a tick's batches go out at once as one
request to the leader; otherwise they wait, still open, and go out together when the answer comes (aiokafka's
own producer does the same, with one batch per partition in flight). The loop never waits for the broker, and a
request's wait in the sender counts in its latency: the driver stamps it with the time it was due. A
partition's batches leave one per request, oldest first. Retriable errors (a leader moved, a topic just made)
send the batch again, before anything newer of its partition, after :data:`RETRY_S` and a metadata refresh;
anything else, or :data:`MAX_TRIES` tries, is raised by :meth:`PacedSender.flush` (or the next
:meth:`PacedSender.send_many`).

Both sides of ``bench e2e`` get the same sender. With it the driver used 0.45-0.62 of a core at 28-59k/s
(0.84-0.97 before), and the relay's p99 there came down from 0.05-0.9 s to 31-85 ms.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import Any

from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import TopicPartition

from banditroute.kafka import native_batch
from banditroute.kafka.topics import partitions_for

MAX_IN_FLIGHT = 1
"""Produce requests awaiting their answer per sender; records queued meanwhile go out with the next answer."""
BATCH_BYTES = 512 * 1024
"""Bound of one record batch (under the broker's default ``max.message.bytes``, 1 MiB): records queued behind a
slow answer fill more batches of a partition, sent one per request and partition, oldest first."""
MAX_RECORD_BYTES = BATCH_BYTES - 1024
"""Largest key and value of one record (an empty batch takes any record: the bound is checked here)."""
ACKS = 1
RETRY_S = 0.1
TIMEOUT_MS = 30_000

_Builder: Any = native_batch.Builder or DefaultRecordBatchBuilder


def _new_batch() -> Any:
    """An empty record batch (magic 2, uncompressed, no producer id) of at most :data:`BATCH_BYTES`."""
    return _Builder(2, 0, 0, -1, -1, 0, BATCH_BYTES)


class SendFailed(RuntimeError):
    """A produce request of the paced sender failed for good (the level's figures would miss its requests)."""


RETRIABLE = frozenset({3, 5, 6, 7, 19, 20})
"""Produce error codes answered by sending the batch again after a metadata refresh: unknown topic or
partition, leader not available, not leader, request timed out, not enough replicas (before or after append;
a batch stored twice only repeats bench requests, which every side answers and the driver counts once)."""
MAX_TRIES = 5


class PacedSender:
    """Requests for one topic, sent through a started aiokafka producer's client (:meth:`start` first)."""

    def __init__(self, producer: Any, topic: str, *, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.client = producer.client
        self.topic = topic
        self.max_in_flight = max_in_flight
        self.partitions = 0
        self._leaders: dict[int, int] = {}
        self._open: dict[int, Any] = {}  # partition -> record batch taking records now
        self._counts: dict[int, int] = {}
        # (partition, batch, tries so far) of batches closed and waiting, oldest first
        self._sealed: deque[tuple[int, bytes, int]] = deque()
        self._retry: list[tuple[int, bytes, int]] = []  # failed with a retriable error: after the refresh
        self._refresh: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Future[Any]] = set()
        self.failures: list[str] = []
        self.requests = 0
        """Produce requests written so far."""
        self.retried = 0
        """Record batches sent again after a retriable error."""

    async def start(self) -> None:
        """Learn the topic's partitions and their leaders (the topic exists: the bench created it)."""
        await self.client._wait_on_metadata(self.topic)
        self.partitions = len(self._learn_leaders())

    def _learn_leaders(self) -> list[int]:
        cluster = self.client.cluster
        parts = sorted(cluster.partitions_for_topic(self.topic) or ())
        if not parts:
            raise SendFailed(f"topic {self.topic!r} has no partitions in the broker's metadata")
        for p in parts:
            leader = cluster.leader_for_partition(TopicPartition(self.topic, p))
            if leader is not None and leader >= 0:
                self._leaders[p] = leader
        if not self._leaders:
            raise SendFailed(f"no partition of {self.topic!r} has a leader")
        return parts

    def send_many(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """Queue records (keyed; each to its key's partition): written at once when fewer than
        :attr:`max_in_flight` produce requests await their answer, else with the next answer."""
        if self.failures:
            raise SendFailed(self.failures[0])
        if not keys:
            return
        placed = partitions_for(keys, self.partitions)
        now_ms = int(time.time() * 1000.0)
        builders, counts = self._open, self._counts
        for key, value, p in zip(keys, values, placed, strict=True):
            if len(key) + len(value) > MAX_RECORD_BYTES:
                raise SendFailed(f"a record of {len(key) + len(value)} bytes does not fit a record batch")
            builder = builders.get(p)
            if builder is None:
                builder = builders[p] = _new_batch()
                counts[p] = 0
            elif builder.append(counts[p], now_ms, key, value, []) is not None:
                counts[p] += 1
                continue
            else:  # full: it waits, sealed, behind the partition's older batches
                self._sealed.append((p, bytes(builder.build()), 0))
                builder = builders[p] = _new_batch()
            builder.append(0, now_ms, key, value, [])  # an empty batch takes any record
            counts[p] = 1
        if len(self._in_flight) < self.max_in_flight:
            self._ship()

    def _ship(self) -> None:
        """One produce request per leader: each partition's oldest waiting batch, or its open one when none
        waits (a partition's batches go out one per request, oldest first)."""
        by_node: dict[int, dict[int, tuple[bytes, int]]] = {}
        later: deque[tuple[int, bytes, int]] = deque()
        for p, batch, tries in self._sealed:
            leader = self._leaders.get(p)
            taken = by_node.setdefault(leader, {}) if leader is not None else None
            if taken is None or p in taken:  # no leader known yet, or this request has the partition's batch
                later.append((p, batch, tries))
            else:
                taken[p] = (batch, tries)
        self._sealed = later
        for p in list(self._open):
            leader = self._leaders.get(p)
            if leader is None or p in by_node.get(leader, ()):
                continue  # it keeps taking records and goes out with a later request
            by_node.setdefault(leader, {})[p] = (bytes(self._open.pop(p).build()), 0)
            del self._counts[p]
        for node, batches in by_node.items():  # each holds a batch: a node is added with its first
            request = ProduceRequest(
                transactional_id=None,
                required_acks=ACKS,
                timeout=TIMEOUT_MS,
                topics=[(self.topic, [(p, batch) for p, (batch, _) in batches.items()])],
            )
            future = asyncio.ensure_future(self.client.send(node, request))
            self._in_flight.add(future)
            future.add_done_callback(partial(self._answered, batches))
            self.requests += 1

    def _answered(self, batches: dict[int, tuple[bytes, int]], future: asyncio.Future[Any]) -> None:
        self._in_flight.discard(future)
        if future.cancelled():
            self.failures.append(f"a produce request to {self.topic} was cancelled ({len(batches)} batches)")
            return
        error = future.exception()
        if error is not None:
            errors = dict.fromkeys(batches, repr(error))
        else:
            errors = {}
            for _topic, partitions in future.result().topics:
                for row in partitions:  # (partition, error_code, offset, ...)
                    if row[1]:
                        errors[row[0]] = f"produce error code {row[1]}"
                        if row[1] not in RETRIABLE:
                            errors[row[0]] += " (not retriable)"
        for p, why in errors.items():
            batch, tries = batches[p]
            if tries + 1 >= MAX_TRIES or why.endswith("(not retriable)"):
                self.failures.append(f"{self.topic}[{p}]: {why}")
            else:
                self._retry.append((p, batch, tries + 1))
                self.retried += 1
        if self.failures:
            return
        if self._retry and self._refresh is None:
            self._refresh = asyncio.ensure_future(self._refresh_then_retry())
        if len(self._in_flight) < self.max_in_flight:
            self._ship()

    async def _refresh_then_retry(self) -> None:
        """After :data:`RETRY_S` and a metadata refresh, the failed batches go first, before any other."""
        try:
            await asyncio.sleep(RETRY_S)
            await self.client.force_metadata_update()
            self._learn_leaders()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported by flush and the next send_many
            self.failures.append(f"{self.topic}: metadata refresh failed: {exc!r}")
            return
        finally:
            self._refresh = None
        retry, self._retry = self._retry, []
        self._sealed.extendleft(reversed(retry))
        if len(self._in_flight) < self.max_in_flight:
            self._ship()

    def _waiting(self) -> bool:
        return bool(self._open or self._sealed or self._retry or self._in_flight or self._refresh)

    async def flush(self) -> None:
        """Write what is queued and wait for every answer; :class:`SendFailed` if any request failed for good."""
        deadline = time.monotonic() + TIMEOUT_MS / 1000.0
        while self._waiting() and not self.failures:
            if time.monotonic() > deadline:
                self.failures.append(f"{self.topic}: records still unsent after {TIMEOUT_MS} ms")
                break
            if len(self._in_flight) < max(1, self.max_in_flight):
                self._ship()
            pending: set[asyncio.Future[Any]] = set(self._in_flight)
            if self._refresh is not None:
                pending.add(self._refresh)
            if pending:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            else:  # batches of a partition with no known leader: ask again
                self._retry.extend(self._sealed)
                self._sealed.clear()
                self._refresh = asyncio.ensure_future(self._refresh_then_retry())
        if self.failures:
            raise SendFailed(f"{len(self.failures)} produce requests failed; the first: {self.failures[0]}")


__all__ = ["MAX_IN_FLIGHT", "PacedSender", "SendFailed"]
