"""The bench driver's paced sends: each tick's requests as one produce request, pipelined (issue #16).

``bench e2e`` sends requests at a fixed rate to the router and to the relay alike and times each request from
its send to the arrival of its decision. With one aiokafka ``send()`` per request the driver cost ~9 µs per
request (py-spy: the send, its partitioner and accumulator ~45 % of the driver): at 50-60k requests/s that is
0.9 of a core for one Python thread, so the driver itself fell behind and its lag, not the process under test,
set the latency (the relay's p50 at 55k/s: 0.3-0.9 s on the 2-core machine).

:class:`PacedSender` takes a tick's requests together: their partitions hashed in one go (the default
partitioner's murmur2, so each request lands where aiokafka would put it) and one record batch per partition,
written by the C batch writer where it is built (:mod:`banditroute.native`; aiokafka's own otherwise). While
fewer than :data:`MAX_IN_FLIGHT` produce requests await their answer, a tick's batches go out at once as one
request to the leader; otherwise they wait, still open, and go out together when the answer comes (aiokafka's
own producer does the same, with one batch per partition in flight). The loop never waits for the broker, and a
request's wait in the sender counts in its latency: the driver stamps it before handing it over. Retriable
errors (a leader moved, a topic just made) send the batch again after a metadata refresh; anything else, or
:data:`MAX_TRIES` tries, is raised by :meth:`PacedSender.flush` (or the next :meth:`PacedSender.send_many`).

Both sides of ``bench e2e`` get the same sender. With it the driver used 0.45-0.62 of a core at 28-59k/s
(0.84-0.97 before), and the relay's p99 there came down from 0.05-0.9 s to 31-85 ms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import TopicPartition

from banditroute import native
from banditroute.kafka.topics import partitions_for

MAX_IN_FLIGHT = 1
"""Produce requests awaiting their answer per sender; records queued meanwhile go out with the next answer."""
BATCH_BYTES = 512 * 1024
"""Bound of one record batch (under the broker's default ``max.message.bytes``, 1 MiB): records queued behind a
slow answer fill more batches of a partition, sent one per request and partition, oldest first."""
ACKS = 1
RETRY_S = 0.1
TIMEOUT_MS = 30_000

_Builder: Any = getattr(native.loaded(), "Builder", None) or DefaultRecordBatchBuilder


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
        self._open: dict[int, Any] = {}  # partition -> record batch taking this round's records
        self._counts: dict[int, int] = {}
        self._again: list[tuple[int, bytes, int]] = []  # (partition, batch, tries so far) to send again
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
            builder = builders.get(p)
            if builder is None:
                builder = builders[p] = _Builder(2, 0, 0, -1, -1, 0, BATCH_BYTES)
                counts[p] = 0
            if builder.append(counts[p], now_ms, key, value, []) is None:  # full: it waits as it is
                self._again.append((p, bytes(builder.build()), 0))
                builder = builders[p] = _Builder(2, 0, 0, -1, -1, 0, BATCH_BYTES)
                counts[p] = 0
                if builder.append(0, now_ms, key, value, []) is None:
                    raise SendFailed(f"a record of {len(value)} bytes does not fit a record batch")
            counts[p] += 1
        if len(self._in_flight) < self.max_in_flight:
            self._ship()

    def _ship(self) -> None:
        """One produce request per leader of everything queued (batches to send again first)."""
        if not self._open and not self._again:
            return
        rows = [*self._again, *((p, bytes(b.build()), 0) for p, b in self._open.items())]
        self._again, self._open, self._counts = [], {}, {}
        by_node: dict[int, dict[int, tuple[bytes, int]]] = {}
        for p, batch, tries in rows:
            leader = self._leaders.get(p)
            batches = by_node.setdefault(leader, {}) if leader is not None else None
            # no leader known yet (wait for the refresh a failure asked for), or a batch of that partition in
            # this request already (one per partition: a retried batch goes first, the newer one next round)
            if batches is None or p in batches:
                self._again.append((p, batch, tries))
                continue
            batches[p] = (batch, tries)
        for node, batches in by_node.items():
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
                self._again.append((p, batch, tries + 1))
                self.retried += 1
        if self._again and not self.failures:
            self.client.force_metadata_update()
            asyncio.ensure_future(self._refresh_then_ship())
        elif not self.failures:
            self._ship()

    async def _refresh_then_ship(self) -> None:
        await asyncio.sleep(RETRY_S)
        self._learn_leaders()
        if len(self._in_flight) < self.max_in_flight:
            self._ship()

    async def flush(self) -> None:
        """Write what is queued and wait for every answer; :class:`SendFailed` if any request failed for good."""
        deadline = time.monotonic() + TIMEOUT_MS / 1000.0
        while (self._open or self._again or self._in_flight) and not self.failures:
            if len(self._in_flight) < self.max_in_flight:
                self._ship()
            if self._in_flight:
                await asyncio.wait(set(self._in_flight))
            elif self._again:  # batches whose partition has no known leader
                if time.monotonic() > deadline:
                    self.failures.append(
                        f"{self.topic}: no leader for {sorted({p for p, _, _ in self._again})}"
                    )
                    break
                self.client.force_metadata_update()
                await asyncio.sleep(RETRY_S)
                self._learn_leaders()
        if self.failures:
            raise SendFailed(f"{len(self.failures)} produce requests failed; the first: {self.failures[0]}")


__all__ = ["MAX_IN_FLIGHT", "PacedSender", "SendFailed"]
