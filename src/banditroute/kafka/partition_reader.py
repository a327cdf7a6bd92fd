"""Feed a topic's records to the worker in batches with a raw aiokafka loop, following faust's partition assignment.

Why not faust agents: faust's per-event consume path (fetcher, conductor, stream iteration, ``take_events``)
cost ~165 us of CPU per decision when the join read decisions through it (py-spy, ``banditroute bench e2e``),
and again close to half of the worker's event-loop thread for every feedback record and every outcome record
when it joined and learnt (``banditroute bench route --feedback 1``). A :class:`PartitionReader` reads the
partitions it is given, in batches of up to ``max_records``, and hands each batch to its handler on the
worker's own event loop. The worker runs three: ``decisions`` and ``feedback`` for the join (the partitions of
the feedback partitions faust assigned to this worker: the two topics and the join table are co-partitioned),
``outcomes`` for the learner (the outcomes partitions faust assigned: co-partitioned with the state table).
faust still owns the assignment (its agents subscribe to ``feedback`` and ``outcomes``) and recovers the
tables, but never delivers those two topics' records (``kafka/faust_hold.py``).

The decisions reader can skip the worker's own decisions: they reach the join in memory (``DecideService``
hands them over once acknowledged, with the offsets of its record batches). In steady state (caught up) its
partitions stay paused, so those decisions are neither fetched nor parsed: it seeks past the ranges the join
holds (``skip``: only ranges the join holds already, its join state acknowledged) and reads exactly the records
between two of them (decisions that local-mode clients publish, the worker's tick records), in order. Records
past the last range the join holds are found by asking the broker for the end offsets every ``IDLE_S``; they are
read once ``skip`` says the partition is ``settled`` (the decide loop has handed over every batch it shipped to
it before the end offsets were asked), or after ``HOLD_S`` without (a handoff lost with a failed decide loop; an own
decision met then is skipped by its header). After a restart or a
rebalance it reads everything from the committed offset, unpaused, up to the end offsets of that moment:
``decisions`` is the join's durable record of what waits for feedback.

Contract:

* offsets are committed in a consumer group of the reader's own (manual assignment: no group membership), per
  partition the smaller of the read position and ``floor(partition)`` (the decisions reader's: the oldest
  decision the join still holds unresolved), only after the batch's handler has returned, i.e. after the join
  state or learnt state and the outcomes it produced are acknowledged by the broker. A restart reads from
  there; the join and the learner are idempotent over what is read twice;
* a partition with no offset committed in the reader's group starts at the offset committed for it in
  ``seed_group`` (faust's group, which read ``feedback`` and ``outcomes`` before these readers did), else at
  the earliest offset: nothing is skipped and at most what faust had read but not committed is read again;
* after every assignment the loop reads up to the end offsets of that moment before ``caught_up`` is set;
* partitions follow faust: on revocation the loop finishes its batch and lets go of everything before faust
  moves the partitions; once faust has settled again (rebalance done, tables recovered; the worker polls for
  it) it takes the partitions faust assigned, so it never writes into a table partition being recovered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from banditroute.kafka.admin import admin_client

log = logging.getLogger("banditroute.partition_reader")

Handler = Callable[[list[Any]], Awaitable[None]]


@dataclass(slots=True)
class Skip:
    """What ``skip`` tells the reader, given its read position per partition."""

    jumps: dict[int, int] = field(default_factory=dict)
    """Per partition, where the join has every record up to already (only partitions it can skip; whatever it
    returns must be held by the join durably enough to commit past it)."""
    next_own: dict[int, int] = field(default_factory=dict)
    """Per partition, the first offset of the next record batch the join holds beyond the jump: the records
    before it are someone else's (they must be read), and the log reaches at least that far."""
    few: bool = False
    """Read only ``AHEAD_READ`` records next (the records that follow are most likely more of the join's)."""
    settled: frozenset[int] = frozenset()
    """Partitions where every record batch of the join's that may be in the log (as of before this call) is
    among those it holds: records past the last of them are someone else's."""


Skipper = Callable[[dict[int, int]], Awaitable[Skip]]
AHEAD_READ = 32
"""Records read at most in one batch while ``skip`` asks for a few only: records are parsed only when read, and
a seek drops the rest of what was fetched unparsed."""
QUIET_FETCH_WAIT_MS = 250
"""How long the broker may hold a fetch of a quiet topic (feedback, outcomes; the worker's state reader too):
new records are answered at once either way, and an assignment change drops the fetch in flight; at 50 ms the
idle readers' empty fetches cost the worker ~4 % of a core (idle: 8.4-9.3 -> 4.6-4.8 %)."""
IDLE_S = 0.1
"""Steady state with a ``skip``: how often the reader asks ``skip`` again and the broker for the end offsets of
its (paused) partitions while there is nothing to read."""
GAP_FETCH_BYTES = 64 * 1024
"""Bytes asked per fetch while reading between the join's batches (steady state; a catch-up reads 4 MB)."""
GAP_READ_WAIT_MS = 500
"""How long a read between the join's batches waits for its fetch (see ``PartitionReader._read_paused``)."""
STEADY_COMMIT_S = 0.1
"""Steady state with a ``skip``: the reader commits at most this often (a commit is a round trip to the group
coordinator; reading the gaps between the join's batches once committed after every gap). A restart reads at
most this much more again; the join is idempotent over it."""
HOLD_S = 1.0
"""Records past the last batch the join holds, while ``skip`` says it is not ``settled``, are read once they
have been there this long (a handoff lost with a failed decide loop)."""


class PartitionReader:
    """Reads ``topic`` for the partitions it is given; ``handle(records)`` processes one batch in order."""

    def __init__(
        self,
        handle: Handler,
        *,
        bootstrap: str,
        topic: str,
        group_id: str,
        security: dict[str, Any],
        max_records: int = 5000,
        floor: Callable[[int], int | None] = lambda _p: None,
        on_commit: Callable[[dict[int, int]], None] = lambda _c: None,
        skip: Skipper | None = None,
        seed_group: str | None = None,
        fence: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.handle = handle
        self.bootstrap = bootstrap
        self.topic = topic
        self.group_id = group_id
        self.security = security
        self.max_records = max_records
        self.partitions: frozenset[int] = frozenset()
        self.batches = 0
        self.records = 0
        self.floor = floor
        self.on_commit = on_commit
        self.skip = skip
        self.seed_group = seed_group
        self.fence = fence
        """Awaited before every commit: raises if this worker may no longer own its partitions (``kafka/fence.py``)."""
        self.skipped = 0
        """Records not read for the join because ``skip`` said it had them already."""
        self.caught_up = asyncio.Event()
        """Set once the reader has read up to the end offsets its partitions had when they were assigned."""
        self._targets: dict[TopicPartition, int] | None = None
        self._positions: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        self._ends: dict[int, int] = {}  # the end offsets of the partitions, as last asked (steady state)
        self._next_check = 0.0
        self._next_commit = 0.0
        self._waiting: dict[int, tuple[int, float]] = {}  # partition -> (position, since): records past it
        self._consumer: AIOKafkaConsumer | None = None
        self._busy = asyncio.Lock()  # held while a batch is read, handled and committed
        self._changed = asyncio.Event()
        self._stopping = False

    async def assign(self, partitions: Iterable[int], *, unless: Callable[[], bool] | None = None) -> None:
        """Read exactly these partitions from now on, from their committed offsets (after the batch in hand
        is handled and, except in steady state with a ``skip``, where commits come at most every
        ``STEADY_COMMIT_S``, committed); ``caught_up`` is set once the reader has reached their end offsets.

        ``unless`` is checked once the batch in hand is done: if it returns true, nothing changes (a
        reconciliation that a rebalance overtook).
        """
        wanted = frozenset(partitions)
        async with self._busy:
            if unless is not None and unless():
                return
            self.partitions = wanted
            self.caught_up.clear()
            self._targets = None
            self._positions = {}
            self._committed = {}
            self._ends = {}
            self._waiting = {}
            if self._consumer is not None:
                self._consumer.assign([TopicPartition(self.topic, p) for p in sorted(wanted)])
        self._changed.set()
        log.info("reader assigned", extra={"topic": self.topic, "partitions": sorted(wanted)})

    def positions(self) -> dict[int, int]:
        """Per partition, the offset of the next record to read (a copy)."""
        return dict(self._positions)

    def stop(self) -> None:
        self._stopping = True
        self._changed.set()

    async def run(self) -> None:
        self._stopping = False
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_records,
            fetch_max_wait_ms=QUIET_FETCH_WAIT_MS,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **self.security,
        )
        await consumer.start()
        try:
            async with self._busy:
                self._consumer = consumer
                self._targets = None  # a restarted loop seeds and catches up again
                self._ends, self._waiting = {}, {}
                if self.partitions:
                    consumer.assign([TopicPartition(self.topic, p) for p in sorted(self.partitions)])
            while not self._stopping:
                if not self.partitions:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                async with self._busy:
                    if not self.partitions:
                        continue
                    steady = idle = False
                    if self._targets is None:
                        tps = [TopicPartition(self.topic, p) for p in sorted(self.partitions)]
                        if self.seed_group is not None:
                            await self._seed(consumer, tps, self.seed_group)
                        self._targets = await consumer.end_offsets(tps)
                    steady = self.skip is not None and bool(self._positions) and self.caught_up.is_set()
                    if steady:
                        idle = not await self._read_others(consumer)
                    else:
                        batch = await consumer.getmany(timeout_ms=100, max_records=self.max_records)
                        await self._take(batch)
                    if not steady or time.monotonic() >= self._next_commit:
                        await self._commit(consumer)
                    if not self.caught_up.is_set():
                        await self._check_caught_up(consumer)
                if steady and idle:
                    await asyncio.sleep(IDLE_S)  # without the lock: assign() and stop() go first
        finally:
            async with self._busy:
                self._consumer = None
                self.caught_up.clear()
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _seed(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], group: str) -> None:
        """Start each partition with no offset committed in this reader's group where ``group`` committed."""
        unseeded = [tp for tp in tps if await consumer.committed(tp) is None]
        if not unseeded:
            return
        async with admin_client(self.bootstrap, self.security) as admin:
            offsets = await admin.list_consumer_group_offsets(group, partitions=unseeded)
        for tp in unseeded:
            meta = offsets.get(tp)
            if meta is not None and meta.offset >= 0:
                consumer.seek(tp, meta.offset)
                log.info(
                    "reader seeded from %s", group, extra={"topic": self.topic, "partition": tp.partition}
                )

    async def _take(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Hand one fetched batch to the handler, then move the read positions past it."""
        records = [r for tp in sorted(batch, key=lambda t: t.partition) for r in batch[tp]]
        if not records:
            return
        await self.handle(records)
        for tp, rs in batch.items():
            if rs:
                self._positions[tp.partition] = rs[-1].offset + 1
        self.batches += 1
        self.records += len(records)

    async def _read_others(self, consumer: AIOKafkaConsumer) -> bool:
        """Steady state with a ``skip`` (the decisions reader, caught up): its partitions stay paused, so the
        worker's own decisions, which reach the join in memory, are neither fetched nor parsed. The reader seeks
        past what the join holds and reads only the records between (someone else's: a local-mode client's
        decision, a tick), exactly those. Records past the last batch the join holds (the broker's end offsets,
        asked every ``IDLE_S``) are read once ``skip`` says the partition is settled (see ``Skip.settled``).
        Returns whether anything was read."""
        assert self.skip is not None
        tps = {p: TopicPartition(self.topic, p) for p in sorted(self.partitions)}
        now = time.monotonic()
        if now >= self._next_check:  # before skip(): its ``settled`` must cover these end offsets
            self._next_check = now + IDLE_S
            ends = await consumer.end_offsets(list(tps.values()))
            self._ends = {tp.partition: end for tp, end in ends.items()}
        advice = await self.skip(dict(self._positions))
        for partition, to in advice.jumps.items():
            at = self._positions.get(partition)
            if at is not None and to > at and partition in tps:
                consumer.seek(tps[partition], to)
                self._positions[partition] = to
                self.skipped += to - at
        consumer.pause(*tps.values())
        limits: dict[TopicPartition, int] = {}
        for partition, tp in tps.items():
            at = self._positions.get(partition)
            if at is None:
                continue
            count = self._unexplained(partition, at, advice, now)
            if count:
                limits[tp] = min(count, AHEAD_READ if advice.few else self.max_records, self.max_records)
        if not limits:
            return False
        read = await self._read_paused(consumer, limits)
        for partition, tp in tps.items():
            position = self._positions.get(partition)
            if position is not None:
                consumer.seek(tp, position)  # drops what a fetch brought beyond (see _read_paused)
        return read

    def _unexplained(self, partition: int, at: int, advice: Skip, now: float) -> int:
        """How many records to read now from ``at``: up to the next batch the join holds (someone else's), or
        what lies past the last one (by the end offsets) once the partition is ``settled`` or it has stayed there
        ``HOLD_S``."""
        next_own = advice.next_own.get(partition)
        if next_own is not None and next_own > at:
            self._waiting.pop(partition, None)
            return next_own - at
        end = self._ends.get(partition, at)
        if end <= at:
            self._waiting.pop(partition, None)
            return 0
        if partition in advice.settled:
            self._waiting.pop(partition, None)
            return end - at
        since = self._waiting.get(partition)
        if since is None or since[0] != at:
            self._waiting[partition] = (at, now)
            return 0
        return end - at if now - since[1] >= HOLD_S else 0

    async def _read_paused(self, consumer: AIOKafkaConsumer, limits: dict[TopicPartition, int]) -> bool:
        """Read at most ``limits[tp]`` records of each of these paused partitions, with one fetch and one call
        of the handler. The fetch asks for ``GAP_FETCH_BYTES`` per partition only, so that reading a tick does
        not fetch the megabytes of own decisions behind it (the broker still returns a whole first batch); what
        it brings beyond a partition's limit is dropped by the caller (a seek to the read position), because
        aiokafka sends no fetch at all while a paused partition's unread records are younger than its prefetch
        backoff (100 ms); a response that comes after the read gave up is kept as such records too, so the
        read waits ``GAP_READ_WAIT_MS``, longer than that backoff (the records are known to be there). One
        partition read after another, each with its own join batch and a 100 ms wait, made ~5 reads a second
        on a loaded machine, and the join fell seconds behind local-mode decisions
        (tests/kafka/test_join_under_load.py)."""
        fetcher: Any = getattr(consumer, "_fetcher", None)
        wide = getattr(fetcher, "_max_partition_fetch_bytes", None)
        if isinstance(wide, int):  # aiokafka keeps it there; a later version without it fetches as configured
            fetcher._max_partition_fetch_bytes = min(wide, GAP_FETCH_BYTES)
        consumer.resume(*limits)
        try:
            fetched = await consumer.getmany(*limits, timeout_ms=GAP_READ_WAIT_MS)
        finally:
            consumer.pause(*limits)
            if isinstance(wide, int):
                fetcher._max_partition_fetch_bytes = wide
        batch = {tp: records[: limits[tp]] for tp, records in fetched.items() if tp in limits}
        await self._take(batch)
        return any(batch.values())

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit, per partition, the oldest decision the join still needs (or the read position)."""
        offsets: dict[int, int] = {}
        for partition, position in self._positions.items():
            floor = self.floor(partition)
            offsets[partition] = position if floor is None else min(position, floor)
        self._next_commit = time.monotonic() + STEADY_COMMIT_S
        if offsets and offsets != self._committed:
            if self.fence is not None:
                await self.fence()
            await consumer.commit({TopicPartition(self.topic, p): o for p, o in offsets.items()})
            self._committed = offsets
            self.on_commit(offsets)

    async def _check_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        targets = self._targets or {}
        for tp, end in targets.items():
            position = await consumer.position(tp)
            self._positions.setdefault(tp.partition, position)
            if position < end:
                return
        self.caught_up.set()
