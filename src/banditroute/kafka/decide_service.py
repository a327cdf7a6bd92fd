"""Run the decide logic (:class:`~banditroute.agents.decide.DecideLogic`) on Kafka with a plain aiokafka
consumer group and producer.

Why not a faust agent: deciding is stateless per request (the state comes from the :class:`StateView`), and
faust's per-event consume path costs several times more than the raw client (see README, Benchmarks). A raw
``getmany`` batch loop inside the faust worker keeps the same at-least-once contract: offsets are committed
only after every decision of the batch is acknowledged by the broker.

Hot-path choices (measured with py-spy on the real broker, see the README, Benchmarks):

* decisions are appended to one record batch per output partition (``producer.create_batch`` /
  ``send_batch``) instead of one ``producer.send`` each: no per-message future, partitioner call or
  accumulator bookkeeping. A decision goes to the partition its request was read from when the request was
  keyed by its ``request_id`` (requests, decisions and feedback have the same partition count, and a client
  produces a request and its feedback with the same key and partitioner, so this co-partitions with the
  feedback whatever partitioner the client uses); otherwise to ``murmur2(request_id)``, as a Java or aiokafka
  client would place the feedback.
* acknowledgement and commit are pipelined: batch *k* is committed by a committer task, in order, once its
  sends are acknowledged, while batch *k+1* is decided. At most ``MAX_IN_FLIGHT`` batches wait in its queue; the
  committer takes every batch waiting at once and commits them with one request (``_commit_in_order``), so the
  loop does not wait on one commit round trip per batch (while it settles them, as many more may queue: at
  most 2 x ``MAX_IN_FLIGHT`` + 1 polls are uncommitted). With ``commit_interval_ms`` (the worker's
  ``decide_commit_interval_ms``, 50 ms) it holds acknowledged batches until that long after the first of them and
  commits them at once (a commit costs ~300 µs of CPU), so a crash re-decides up to one interval more; each batch
  is still handed to the join with the commit that covers it (docs/guarantees.md, "The decide loop's commit
  interval"), and the batches' decisions callbacks go home with it (one wake-up of the worker's loop per commit).
* while requests arrive faster than one per ``fetch_linger_ms`` (the worker's ``decide_fetch_linger_ms``, 5 ms),
  the consumer's fetches wait that long at the broker for more (:mod:`banditroute.kafka.fetch_linger`): a paced
  stream is decided in fewer, larger steps (at 1,000 requests/s about 170 instead of ~650 a second, half the
  CPU per request), for up to that much latency; a sparse or idle stream is fetched at once, as before.
* a long step ships what it has decided every ``SHIP_SLICE_S`` and lets the loop run (the sender, the
  committer, the fetcher), so the first decisions of a large poll do not wait for the last.
* the loop runs on its own thread with its own event loop (``own_thread``), so a decision never waits behind
  the faust agents' long coroutine steps in the worker's main loop (join batches, table flushes); Python's GIL
  switch interval bounds the wait instead. Everything the rest of the worker sees (``on_decisions``, the
  dead-letter counter) is handed to the main loop once per batch, so the worker's own state is still only
  touched from its loop. The decide thread only reads the registry and the state view (whole-object swaps).
* ``follow=True`` (the worker): no consumer group membership. The worker assigns the requests partitions whose
  feedback partitions faust gave it (:meth:`DecideService.assign`), so the decide loop and the join own the
  same partitions; offsets are still committed to ``group_id``. Every decision carries the header
  ``banditroute-decider`` (a token per assignment), and once a batch is acknowledged its joinable decisions
  go to ``on_pending`` with their offsets (:class:`Handoff`), on the worker's loop: the join takes them in
  memory and skips them when its reader meets them in the topic.
* a request of the common shape is validated without pydantic (:mod:`banditroute.kafka.fast_request`,
  accept-only, held to the pydantic contract by a test); any other goes through the full diagnostic decoder
  (:func:`banditroute.codec.decode_record`), so dead letters keep their reasons.
* a poll's common requests are decided in runs (``_run``: one loop per partition, up to each look at the clock,
  with the loop's lookups made once per run) and any other request one at a time (``_handle``), which does the
  same for a common one (``tests/kafka/test_decide_run.py``). With the C extension, a run's requests of the
  decide logic's kept hot answer (one task type and tenant, a block row at hand: :meth:`DecideLogic.lane_parts`)
  are decided by the same loop in C (``_native.lane``), and the Python loop takes every other record
  (``tests/kafka/test_native_lane.py`` holds the two to the same decisions).
* the consumers read a record batch at a time (:mod:`banditroute.kafka.raw_fetch`): a polled record is the
  record batch's own (``offset``, ``key``, ``value``), its topic and partition those it was polled under.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from banditroute import native
from banditroute.codec import (
    DeadLetterCounter,
    DecodeError,
    DuplicateIdCheck,
    decode_record,
    encode,
    make_dead_letter,
)
from banditroute.config import Registry
from banditroute.events import DeadLetter, DeadLetterReason, RoutingRequest
from banditroute.kafka.fast_request import FastRequest, fast_request, shaped_request
from banditroute.kafka.fetch_linger import FetchLinger
from banditroute.kafka.handoff import DECIDER_HEADER, Handoff, build_handoff, ignore_handoff
from banditroute.kafka.low_lane import LOW_LANE_BYTES, LOW_LANE_MAX, LowLane, Parked
from banditroute.kafka.native_batch import Builder as NativeBuilder
from banditroute.kafka.outbox import NO_HEADERS, Headers, PartitionBatches, record_writer
from banditroute.kafka.own_thread import OwnThreadLoop
from banditroute.kafka.raw_fetch import install as install_raw_fetch
from banditroute.kafka.raw_fetch import raw_records
from banditroute.kafka.replies import ReplySender
from banditroute.kafka.spill import LANE_WITH_SPILL, SPILL_CHUNK, SPILL_SHARE, task_type_of
from banditroute.kafka.stopping import stop_all
from banditroute.kafka.topics import partition_for
from banditroute.limits import Admission
from banditroute.served import Decided, Served

log = logging.getLogger("banditroute.decide")

install_raw_fetch()  # the decide loop's consumers read a record batch at a time (kafka/raw_fetch.py)

CONSUMER_TUNING: dict[str, Any] = {
    "fetch_max_wait_ms": 100,
    "max_partition_fetch_bytes": 4 * 1024 * 1024,
}
"""Consumer settings of the decide loop (shared with the bench relay so both measure the same client)."""
PRODUCER_TUNING: dict[str, Any] = {"linger_ms": 1, "max_batch_size": 512 * 1024}
"""Producer settings of the decide loop (idem). Large batches: one record batch per partition per poll."""
MAX_IN_FLIGHT = 4
"""Polled batches whose decisions may await acknowledgement while the next batch is decided."""
SHIP_SLICE_S = 0.010
"""A step still deciding after this long ships the decisions so far and yields to the loop once, then goes on
(issue #16: after any pause the next polls are large, and a 2,000-request step held every decision of it until
its end while the loop could not read acknowledgements or commit, so the steps after it waited too)."""
SLICE_CHECK_EVERY = 32
"""Requests decided between two looks at the clock in a step (a power of two)."""
LOW_SLICE_S = 0.010
"""Time a step gives to low-priority work (parked and spilled requests) beyond their shares, while reading
keeps up (the poll was not full, spilled nothing and decided no established request) and the producer is idle
(every decision sent so far acknowledged). A request of an established task type read meanwhile waits about
that long (more under CPU contention); the next slice comes once the slice's sends are acknowledged."""
LANE_SHARE = 10
"""Parked requests decided in every step, oldest first, whatever else waits: the lane's guaranteed share (its
requests also hold their partitions' commits back)."""
NATIVE_RECORDS = 256
"""Most requests one call of the C loop (``_native.lane``) decides: it holds the GIL while it runs (~1 µs a
request). A guard: a call is within one run of :meth:`DecideService._run`, at most ``SLICE_CHECK_EVERY`` records."""
NATIVE_WAIT = 8
"""Records the Python loop takes alone after the C loop took none (another task type or tenant than the hot
answer's in between: traffic of several task types does not pay for a call that takes nothing per record)."""
BUSY_POLL_MS = 5
"""While low-priority work waits but the producer still has decisions unacknowledged, the loop polls for
requests with this timeout instead of taking a step: a step then would queue a second record batch behind
the one in flight, and aiokafka blocks the loop (``send_batch``) until the first leaves, with the
established requests read meanwhile (issue #18: this wait was most of the normal workload's p99 under a
flood)."""


Request = RoutingRequest | FastRequest
"""A validated request: the model, or the common shape read without it (:mod:`~banditroute.kafka.fast_request`)."""


class Decider(Protocol):
    """What the loop needs of the decide logic (:class:`banditroute.agents.decide.DecideLogic`)."""

    registry: Registry
    admission: Admission
    """Read by the loop's run for :meth:`is_established_type`'s first answer (its held task types)."""
    shadow: dict[str, Any] | None
    """The last decision's shadow decision, if any (:meth:`take_shadow`; the loop's run takes it itself)."""

    def decide_encoded(self, request: Request) -> tuple[Decided, Served | None]: ...

    def is_established_type(self, task_type: str) -> bool: ...

    def take_shadow(self) -> dict[str, Any] | None: ...

    def lane_parts(self) -> tuple[Any, ...] | None:
        """The kept hot answer as the C loop reads it, or None (:meth:`DecideLogic.lane_parts`)."""


class DecideService(OwnThreadLoop):
    """The request → decision loop."""

    thread_name = "banditroute-decide"

    def __init__(
        self,
        logic: Decider,
        *,
        bootstrap: str,
        requests_topic: str,
        decisions_topic: str,
        deadletter_topic: str,
        shadow_topic: str | None = None,
        group_id: str,
        security: dict[str, Any],
        max_payload_bytes: int,
        dead_letters: DeadLetterCounter,
        on_decisions: Callable[[list[Decided]], None] = lambda _batch: None,
        max_batch: int = 2000,
        linger_ms: int = 1,
        session_timeout_s: float = 10.0,
        own_thread: bool = True,
        follow: bool = False,
        on_pending: Callable[[Handoff], None] = ignore_handoff,
        priority_lane: bool = False,
        reply_refused: Callable[[str], bool] = lambda topic: False,
        spill_topic: str | None = None,
        commit_interval_ms: int = 0,
        fetch_linger_ms: float = 0.0,
        compression: str | None = None,
    ) -> None:
        if priority_lane and not follow:
            raise ValueError(
                "the priority lane needs follow mode (assignments drain it; a group rebalance would not)"
            )
        if spill_topic is not None and not priority_lane:
            raise ValueError("the spill topic is the priority lane's overflow: it needs priority_lane")
        self.logic = logic
        self.bootstrap = bootstrap
        self.requests_topic = requests_topic
        self.decisions_topic = decisions_topic
        self.deadletter_topic = deadletter_topic
        self.shadow_topic = shadow_topic
        self.group_id = group_id
        self.security = security
        self.max_payload_bytes = max_payload_bytes
        self.dead_letters = dead_letters
        self.on_decisions = on_decisions
        """Called on the caller's loop with each polled batch's decisions, in order (:data:`Decided`)."""
        self.max_batch = max_batch
        self.linger_ms = linger_ms
        self.session_timeout_s = session_timeout_s
        self.commit_interval_s = commit_interval_ms / 1000
        """Least time between two commits of the acknowledged steps (0: a commit per committer round)."""
        self.commits = 0
        """Commits of the requests' offsets so far (every run)."""
        self.fetch_linger_ms = fetch_linger_ms
        """Longest wait at the broker for more requests while a stream is dense (0: aiokafka's fetches)."""
        self.compression = compression
        """The producer's ``compression_type`` (decisions, replies, dead letters; None: uncompressed)."""
        self.linger: FetchLinger | None = None
        """The current run's fetch linger (:mod:`~banditroute.kafka.fetch_linger`; None before a run starts)."""
        super().__init__(own_thread)
        self.duplicates = DuplicateIdCheck("request_id", capacity=100_000)
        self.native_lane: Callable[..., tuple[int, int, Any]] | None = getattr(native.loaded(), "lane", None)
        """:meth:`_run`'s loop in C for the kept hot answer's requests (``_native.lane``), or None: every request
        through the Python loop (no extension, ``BANDITROUTE_NATIVE=0``, or a test's reference)."""
        self.native_decided = 0
        """Requests the C loop decided so far (every run; a part of :attr:`decided`)."""
        self._replies: ReplySender | None = None
        self._replies_skipped_before = 0
        self.decided = 0
        self._decision_partitions = 0
        self._batch_decisions: list[Decided] = []
        self._batch_letters: list[str] = []
        self.assigned: frozenset[int] | None = None
        """Requests partitions this loop decides for, once it has joined its group or been assigned them (None
        before; None again whenever a new run starts in ``follow`` mode)."""
        self.follow = follow
        self.on_pending = on_pending
        self.token = b""
        """The current assignment's token (``follow`` mode), stamped on its decisions."""
        self.runs = 0
        self.shipped = 0
        """Steps that shipped decisions so far (``follow``), counted before their first record batch goes to the
        producer; each step's handoff carries the count then (``seq``)."""
        self.shipped_to: dict[int, int] = {}
        """Per decisions partition, ``shipped`` of the last step that shipped to it: until the join has received
        that handoff, records past the last batch it holds may be this worker's own (``JoinIO._skip_own``)."""
        self._announced = False
        self._consumer: AIOKafkaConsumer | None = None
        self._spill_consumer: AIOKafkaConsumer | None = None
        """The spill topic's partitions, on a consumer of their own (same group): aiokafka sends no fetch to a
        broker while any partition's unread records from it are younger than 100 ms (its prefetch backoff, not
        a setting), and the spilled records, taken 10 a step under a flood, held back every fetch of the
        requests partitions (issue #18)."""
        self._busy: asyncio.Lock | None = None  # held while a batch is polled and decided (decide loop)
        self._barrier: Callable[[], Any] | None = None
        self._joinable: dict[int, list[Served | None]] = {}
        self._batch_bytes: dict[tuple[str, int], int] = {}
        """The size of the last record batch shipped to each (topic, partition) (``PartitionBatches.sizes``): the
        loop's own output topics only (decisions, replies, dead letters), so bounded by their partitions."""
        self._headers: list[tuple[str, bytes]] = []
        self.priority_lane = priority_lane
        self.reply_refused = reply_refused
        self.lane = LowLane()
        """Requests of new or capped task types waiting while established ones are decided (``priority_lane``)."""
        self._read_upto: dict[int, int] = {}  # requests partition -> offset after the last record read
        self.spill_topic = spill_topic
        """Where requests of new task types go while the lane is full (:mod:`banditroute.kafka.spill`)."""
        self.spilled_total = 0
        self._spill_usable = False
        self._spill_waiting = True  # the last look at the spill topic found requests (or none was taken yet)
        # the requests partitions assigned, and the spill topic's (follow mode)
        self._main: list[TopicPartition] = []
        self._spilled: list[TopicPartition] = []
        self._drain: Callable[[], Any] | None = None
        self._unacked: list[asyncio.Future[Any]] = []  # the sends of the steps submitted last
        self._broken: BaseException | None = None
        """Set when draining the lane for an assignment failed: requests taken from the lane may be undecided,
        so the loop must restart from the committed offsets rather than commit past them."""

    async def assign(self, partitions: Iterable[int]) -> None:
        """``follow`` mode: decide for exactly these requests partitions from now on. Returns once every
        decision of the partitions held before is acknowledged, committed and handed over (``on_pending`` was
        called for it on the caller's loop first). Raises RuntimeError while no run is up (retry later)."""
        wanted = frozenset(partitions)
        loop = self._loop
        if loop is None or self._consumer is None:
            raise RuntimeError("the decide loop is not running")
        if loop is self._running_loop():
            await self._apply(wanted)
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._apply(wanted), loop))

    async def _apply(self, wanted: frozenset[int]) -> None:
        consumer, busy, barrier, drain = self._consumer, self._busy, self._barrier, self._drain
        if consumer is None or busy is None or barrier is None or drain is None:
            raise RuntimeError("the decide loop is not running")
        async with busy:
            # parked requests are decided by the owner that read them, never re-read by the next
            try:
                await drain()
            except BaseException as exc:
                self._broken = exc
                raise
            await barrier()
            self._main = [TopicPartition(self.requests_topic, p) for p in sorted(wanted)]
            spill = self.spill_topic if self._spill_usable else None
            self._spilled = [TopicPartition(spill, p) for p in sorted(wanted)] if spill else []
            consumer.assign(self._main)
            if self._spill_consumer is not None:
                self._spill_consumer.assign(self._spilled)
            self._read_upto = {}
            self._spill_waiting = True
            self.token = uuid.uuid4().hex[:16].encode()
            self._headers = [(DECIDER_HEADER, self.token)]
            self.assigned = wanted
        log.info("decide loop assigned", extra={"topic": self.requests_topic, "partitions": sorted(wanted)})

    def _deliver(self, decisions: list[Decided], letters: list[str]) -> None:
        """Run on the caller's loop: the decisions callback and dead-letter counts of one batch."""
        if decisions:
            self.on_decisions(decisions)
        for reason in letters:
            self.dead_letters.record(reason)

    def _flush_callbacks(self) -> None:
        if not self._batch_decisions and not self._batch_letters:
            return
        decisions, letters = self._batch_decisions, self._batch_letters
        self._batch_decisions, self._batch_letters = [], []
        # no wake-up of the caller's loop per step: they go with the next commit's handoff (``post_home``)
        self.call_home_later(self._deliver, decisions, letters)

    async def _run_loop(self) -> None:
        # a (re)start re-reads from the committed offsets: those requests must be decided, not called duplicates
        self.duplicates = DuplicateIdCheck("request_id", capacity=100_000)
        self._batch_decisions = []
        self._batch_letters = []
        self.lane.clear()  # a restart re-reads from the committed offsets, which are at or before every parked one
        self._broken = None
        self._read_upto = {}
        self._main, self._spilled = [], []
        self._unacked = []
        self.runs += 1
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_batch,
            session_timeout_ms=int(self.session_timeout_s * 1000),
            heartbeat_interval_ms=int(max(1.0, self.session_timeout_s / 4) * 1000),
            value_deserializer=raw_records,
            **CONSUMER_TUNING,
            **self.security,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            **{**PRODUCER_TUNING, "linger_ms": self.linger_ms},
            compression_type=self.compression,
            **self.security,
        )
        spill_consumer = (
            AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                value_deserializer=raw_records,
                **CONSUMER_TUNING,
                **self.security,
            )
            if self.spill_topic is not None and self.follow
            else None
        )
        if self.follow:
            self.assigned = None
        else:
            consumer.subscribe([self.requests_topic], listener=_Assignment(self))
        started: list[Any] = []
        try:  # a start or a lookup that fails stops the clients already started (the run is tried again)
            for client in (producer, consumer, spill_consumer):
                if client is not None:
                    await client.start()
                    started.append(client)
            self._decision_partitions = len(await producer.partitions_for(self.decisions_topic))
            self._spill_usable = await self._check_spill(producer)
        except BaseException:
            for client in reversed(started):
                with contextlib.suppress(Exception):
                    await client.stop()
            raise
        self._spill_consumer = spill_consumer
        linger = self.linger = FetchLinger(consumer, self.fetch_linger_ms)
        replies = self._replies = ReplySender(
            producer, refused=self.reply_refused, batch_bytes=PRODUCER_TUNING["max_batch_size"]
        )
        pending: asyncio.Queue[Any] = asyncio.Queue(MAX_IN_FLIGHT)
        committer = asyncio.create_task(self._commit_in_order(consumer, pending))
        busy = asyncio.Lock()

        async def barrier() -> None:
            """Wait until every batch polled so far is acknowledged, committed and handed over."""
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            await self._enqueue(pending, committer, done)
            await asyncio.wait({done, committer}, return_when=asyncio.FIRST_COMPLETED)
            if not done.done():
                committer.result()
                raise RuntimeError("decide committer stopped")

        async def drain() -> None:
            """Decide every parked request (the caller holds ``busy``)."""
            while self.lane:
                await self._step({}, producer, pending, committer, draining=True)

        self._consumer, self._busy, self._barrier, self._drain = consumer, busy, barrier, drain
        log.info("decide loop started", extra={"topic": self.requests_topic, "group": self.group_id})
        failed = True  # until the loop ends well: then a client's failing stop is the run's error
        try:
            while not self._stopping.is_set():
                if committer.done():
                    committer.result()  # a failed send or commit: raise, nothing after it is committed
                    raise RuntimeError("decide committer stopped")
                if self.follow and not self.assigned:
                    await asyncio.sleep(0.05)  # nothing to decide for until the worker assigns partitions
                    continue
                async with busy:
                    self._check_broken()
                    lane = self.lane
                    waiting = bool(lane) or (bool(self._spilled) and self._spill_waiting)
                    # low-priority work only once the last step's sends are acknowledged; until then, poll
                    # for established requests (their step ships at once, behind at most the send in flight)
                    low_now = waiting and self._producer_idle()
                    if lane.full and not self._spilled:
                        batch = {}  # read no further until parked requests are decided
                        if not low_now:
                            await asyncio.sleep(BUSY_POLL_MS / 1000)
                    elif waiting:
                        batch = await consumer.getmany(
                            *self._main, timeout_ms=0 if low_now else BUSY_POLL_MS, max_records=self.max_batch
                        )
                    else:
                        batch = await consumer.getmany(
                            *self._main, timeout_ms=linger.poll_timeout_ms(200), max_records=self.max_batch
                        )
                        linger.polled(bool(batch), time.monotonic())
                    if batch or (self._producer_idle() if waiting else bool(self._spilled)):
                        await self._step(batch, producer, pending, committer)
                if waiting:
                    # low-priority work goes on in slices: let the fetcher, the sender and the committer run
                    await asyncio.sleep(0)
            async with busy:
                # a graceful stop leaves nothing parked to re-read (and re-decide what followed it)
                self._check_broken()
                await drain()
            await self._enqueue(pending, committer, None)
            await committer
            failed = False
        finally:
            self._consumer = self._spill_consumer = self._busy = self._barrier = self._drain = None
            if not committer.done():
                committer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await committer
            self.post_home()  # decisions callbacks of steps no commit covered (a failed run)
            try:
                await replies.close()
                await producer.flush()
            except BaseException:
                failed = True
                raise
            finally:
                self._replies_skipped_before += replies.stats["skipped"]
                self._replies = None
                # each client stopped even when one before it raises; the run's own error goes first
                await stop_all((consumer, spill_consumer, producer), log, raise_first=not failed)

    async def _check_spill(self, producer: AIOKafkaProducer) -> bool:
        """Whether the spill topic can take this run's overflow: it must have the requests topic's partitions
        (a spilled request keeps its partition, so its owner decides it). Without it, the lane's bound stops
        reading as before."""
        if self.spill_topic is None:
            return False
        try:  # one metadata request for all topics: a missing one is None here (partitions_for would raise
            # after the request timeout, and the loop would fail at every start, e.g. after an upgrade)
            cluster = await producer.client.fetch_all_metadata()
            spill = cluster.partitions_for_topic(self.spill_topic)
            main = cluster.partitions_for_topic(self.requests_topic)
        except Exception as exc:  # broker trouble: run without the spill this time
            log.warning("looking up the spill topic failed: %r", exc)
            spill, main = None, set()
        if not spill or spill != main:
            log.warning(
                "spill topic unusable: reading stops while the priority lane is full",
                extra={
                    "topic": self.spill_topic,
                    "partitions": len(spill or ()),
                    "requests": len(main or ()),
                },
            )
            self.lane.max_requests, self.lane.max_bytes = LOW_LANE_MAX, LOW_LANE_BYTES  # as without one
            return False
        self.lane.max_requests, self.lane.max_bytes = LANE_WITH_SPILL
        return True

    async def _decide_spilled(
        self,
        out: PartitionBatches,
        producer: AIOKafkaProducer,
        limit: int,
        offsets: dict[TopicPartition, int],
    ) -> int:
        """Decide up to ``limit`` spilled requests already fetched (no wait); returns how many were taken."""
        consumer = self._spill_consumer
        if consumer is None or not self._spilled:
            return 0
        low: dict[TopicPartition, list[Any]] = await consumer.getmany(
            *self._spilled, timeout_ms=0, max_records=limit
        )
        taken = 0
        for tp, records in low.items():
            for record in records:
                unfinished = self._handle(out, producer, tp, record, park=False)
                if unfinished is not None:
                    await unfinished
            offsets[tp] = records[-1].offset + 1
            taken += len(records)
        self._spill_waiting = taken > 0
        return taken

    def _producer_idle(self) -> bool:
        """Whether every send of the steps submitted so far is acknowledged (or failed: the committer raises)."""
        if self._unacked:
            self._unacked = [f for f in self._unacked if not f.done()]
        return not self._unacked

    def _check_broken(self) -> None:
        if self._broken is not None:
            raise RuntimeError(
                "deciding the priority lane's requests failed during an assignment: restarting from the "
                "committed offsets"
            ) from self._broken

    async def _step(
        self,
        batch: dict[TopicPartition, list[Any]],
        producer: AIOKafkaProducer,
        pending: asyncio.Queue[Any],
        committer: asyncio.Task[None],
        draining: bool = False,
    ) -> None:
        """Decide one polled batch (parking or spilling what waits), then low-priority work: the lane's and the
        spill topic's guaranteed shares (``LANE_SHARE``, ``SPILL_SHARE``), and while reading keeps up, the
        producer is idle and the poll decided no established request (``draining``: always), more parked, then
        spilled, requests for ``LOW_SLICE_S``; hand the lot to the committer.

        A partition's commit stops at its oldest parked request, so a crash re-decides from there (never skips);
        the requests decided after it are then decided again, as after any crash between publish and commit.
        """
        out = PartitionBatches(producer, self._announce if self.follow else None, self._batch_bytes)
        self._announced = False
        self._joinable = {}
        spilled = self.spilled_total
        touched: set[int] = set()
        read = 0
        decided = self.decided
        ship_at = time.perf_counter() + SHIP_SLICE_S
        for tp, records in batch.items():
            n = len(records)
            i = 0  # records handled
            while i < n:
                # common requests in one run (_run) up to the next clock look; any other one through _handle
                end = min(n, i - i % SLICE_CHECK_EVERY + SLICE_CHECK_EVERY)
                i, unfinished = self._run(out, producer, tp, records, i, end)
                if unfinished is None and i < end:
                    unfinished = self._handle(out, producer, tp, records[i])
                    i += 1
                if unfinished is not None:
                    await unfinished
                if not i % SLICE_CHECK_EVERY and time.perf_counter() > ship_at:
                    await out.submit()  # the same step: its commit and handoff still wait for all of it
                    await asyncio.sleep(0)
                    ship_at = time.perf_counter() + SHIP_SLICE_S
            self._read_upto[tp.partition] = records[-1].offset + 1
            touched.add(tp.partition)
            read += len(records)
        established = self.decided > decided
        offsets: dict[TopicPartition, int] = {}
        lane = self.lane
        # the guaranteed shares: the lane's oldest requests and the spill topic's, whatever else waits
        for _ in range(min(LANE_SHARE, len(lane))):
            parked = lane.take()
            touched.add(parked.partition)
            unfinished = self._decide(out, producer, parked, parked, parked.request)
            if unfinished is not None:
                await unfinished
        low = await self._decide_spilled(out, producer, SPILL_SHARE, offsets)
        # more only while reading keeps up: a full poll means more is waiting, and a spill a flood of new task
        # types (deciding them now would slow the reading of the established requests behind them)
        # and only when the producer is idle and this poll decided nothing established: those decisions ship
        # now, and the slice's would queue a record batch behind the send in flight
        keeps_up = read < self.max_batch and self.spilled_total == spilled
        if draining or (keeps_up and not established and self._producer_idle()):
            deadline = time.perf_counter() + LOW_SLICE_S
            while lane and time.perf_counter() < deadline:
                parked = lane.take()
                touched.add(parked.partition)
                unfinished = self._decide(out, producer, parked, parked, parked.request)
                if unfinished is not None:
                    await unfinished
            while not lane and low and time.perf_counter() < deadline:
                low = await self._decide_spilled(out, producer, SPILL_CHUNK, offsets)
        for partition in touched:
            oldest = lane.oldest(partition)
            upto = self._read_upto[partition] if oldest is None else oldest
            offsets[TopicPartition(self.requests_topic, partition)] = upto
        if not offsets and not out.builders and not out.futures:
            return  # nothing read, parked, spilled or decided
        futures = await out.submit()
        self._producer_idle()  # drop the acknowledged sends first: only those in flight are kept
        self._unacked.extend(futures)
        handoff = (
            (self.token, self.decisions_topic, out.shipped, self._joinable, self.shipped)
            if self.follow
            else None
        )
        self._flush_callbacks()  # before the step is queued: the commit that covers it delivers them
        await self._enqueue(pending, committer, (futures, offsets, handoff))

    def _announce(self, topic: str, partition: int) -> None:
        """Before a batch of this step goes to the producer (``follow``): count the step, note the partition."""
        if topic != self.decisions_topic:
            return
        if not self._announced:
            self._announced = True
            self.shipped += 1
        self.shipped_to[partition] = self.shipped

    @staticmethod
    async def _enqueue(queue: asyncio.Queue[Any], committer: asyncio.Task[None], item: Any) -> None:
        """Put ``item`` for the committer; if the committer fails while the queue is full, raise its error."""
        if not queue.full():
            queue.put_nowait(item)
            return
        put = asyncio.ensure_future(queue.put(item))
        await asyncio.wait({put, committer}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            committer.result()
            raise RuntimeError("decide committer stopped")

    async def _commit_in_order(self, consumer: AIOKafkaConsumer, pending: asyncio.Queue[Any]) -> None:
        """Per step, in order: wait for its sends' acknowledgements, then commit its offsets and hand it over.
        Acknowledged steps are held until ``commit_interval_s`` after the first of them was taken (0: commit each
        round), then share one commit (the last step's offset of each partition: a step's offsets never go
        back), so the commit round trip is paid once per interval, not once per step. A barrier, the end (None)
        and a failed send commit what is acknowledged at once."""
        interval = self.commit_interval_s
        loop = asyncio.get_running_loop()
        offsets: dict[TopicPartition, int] = {}  # acknowledged, not committed yet
        handoffs: list[Any] = []
        due = 0.0  # when the steps held must be committed (loop time)
        while True:
            if handoffs and interval > 0:
                try:
                    async with asyncio.timeout_at(due):
                        item = await pending.get()  # a cancelled get loses no item (asyncio.Queue)
                except TimeoutError:
                    await self._commit_held(consumer, offsets, handoffs)
                    continue
            else:
                item = await pending.get()
            items = [item]
            while _is_step(items[-1]) and not pending.empty():
                items.append(pending.get_nowait())
            steps = items if _is_step(items[-1]) else items[:-1]
            if steps:
                if not handoffs:
                    due = loop.time() + interval
                try:
                    await self._settle(offsets, handoffs, steps)
                except Exception:
                    await self._commit_held(consumer, offsets, handoffs)  # the steps acknowledged before it
                    raise
            last = items[-1]
            if handoffs and (not _is_step(last) or interval <= 0 or loop.time() >= due):
                await self._commit_held(consumer, offsets, handoffs)
            if last is None:
                return
            if isinstance(last, asyncio.Future):  # a barrier: everything before it is done
                if not last.done():
                    last.set_result(None)

    @staticmethod
    async def _settle(offsets: dict[TopicPartition, int], handoffs: list[Any], steps: list[Any]) -> None:
        """Wait for each step's acknowledgements in order; add the acknowledged ones to ``offsets`` and
        ``handoffs`` (a step that failed, and every one after it, is not added)."""
        for futures, step_offsets, handoff in steps:
            if futures:
                await asyncio.gather(*futures)
            offsets.update(step_offsets)
            handoffs.append(handoff)

    async def _commit_held(
        self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int], handoffs: list[Any]
    ) -> None:
        """Commit and hand over the acknowledged steps held (``offsets``, ``handoffs``: emptied)."""
        held, steps = dict(offsets), list(handoffs)
        offsets.clear()
        handoffs.clear()
        self.commits += 1
        await self._commit_and_hand_over(consumer, held, steps)
        self.post_home()  # the steps' decisions callbacks (``_flush_callbacks``), when no handoff took them

    async def _commit_and_hand_over(
        self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int], handoffs: list[Any]
    ) -> None:
        spill = self._spill_consumer
        if spill is not None and any(tp.topic == self.spill_topic for tp in offsets):
            spilled = {tp: o for tp, o in offsets.items() if tp.topic == self.spill_topic}
            main = {tp: o for tp, o in offsets.items() if tp.topic != self.spill_topic}
            await asyncio.gather(spill.commit(spilled), *([consumer.commit(main)] if main else []))
        elif offsets:  # steps that found nothing to do commit nothing
            await consumer.commit(offsets)
        built = [build_handoff(*handoff) for handoff in handoffs if handoff is not None]
        if built:  # one wake-up of the caller's loop per commit, whatever the steps it covers
            self.call_home(self._hand_over, built)

    def _hand_over(self, handoffs: list[Handoff]) -> None:
        """Run on the caller's loop: each step's handoff, in order (one that raises is reported, as by
        ``call_home``, and the others still go)."""
        on_pending = self.on_pending
        for handoff in handoffs:
            try:
                on_pending(handoff)
            except Exception:
                log.exception("handing decisions over to the join failed")

    def _decode(self, tp: TopicPartition, record: Any) -> Request | DeadLetter:
        """The common request shape without pydantic (:mod:`~banditroute.kafka.fast_request`, which only
        accepts what the contract accepts); everything else through the codec's decoder: the same rules
        (schema_version required on the wire, NaN, sizes) as every other consumer, and its dead letters."""
        fast = fast_request(record.value, self.max_payload_bytes)
        if fast is not None:
            # no candidates on the fast path: no model to check, only the request id
            problem = self.duplicates.check(fast.request_id)
            if problem is None:
                return fast
            return make_dead_letter(
                record.value,
                tp.topic,
                tp.partition,
                record.offset,
                problem.reason,
                problem.error,
                datetime.now(UTC),
                event_type="RoutingRequest",
            )
        return decode_record(
            RoutingRequest,
            record.value,
            topic=tp.topic,
            partition=tp.partition,
            offset=record.offset,
            max_bytes=self.max_payload_bytes,
            checks=(self._check_event,),
        )

    def _check_event(self, event: Any) -> DecodeError | None:
        """The semantic checks of a decoded request, as a codec check (returns a DecodeError or None)."""
        if event.candidates:
            known = self.logic.registry.model_names
            for name in event.candidates:
                if name not in known:
                    return DecodeError(
                        DeadLetterReason.UNKNOWN_MODEL, f"model {name!r} is not in the catalog"
                    )
        return self.duplicates(event)

    @property
    def replies_skipped(self) -> int:
        """Replies not delivered (reply topic missing, deleted or below the batches' size), over every run of the loop."""
        current = self._replies.stats["skipped"] if self._replies is not None else 0
        return self._replies_skipped_before + current

    def _run(
        self,
        out: PartitionBatches,
        producer: AIOKafkaProducer,
        tp: TopicPartition,
        records: list[Any],
        i: int,
        end: int,
    ) -> tuple[int, Awaitable[None] | None]:
        """Decide ``records[i:end]`` while each is the common request (what :meth:`_handle` then :meth:`_decide`
        do for it, in one loop: no spill or park, a request of the common shape (``shaped_request``) that is
        no duplicate, of an established task type, decided without error, co-partitioned and appended to its
        partition's open record batch). Returns the index of the first record not taken (``end`` if all were),
        and what must still be awaited to finish the last one taken (a full record batch, a shadow decision, a
        reply: see :meth:`_finish`), else None. A record it stops at is untouched: :meth:`_handle` takes it."""
        if self._spilled and self.lane.full:
            return i, None  # each request's task type decides whether it is spilled: _handle
        logic = self.logic
        decide = logic.decide_encoded
        established = logic.is_established_type if self.priority_lane else None
        admission = logic.admission
        check = self.duplicates.check
        max_bytes = self.max_payload_bytes
        partition = tp.partition
        own = partition < self._decision_partitions
        topic = self.decisions_topic
        headers = self._headers if self.follow else NO_HEADERS
        follow = self.follow
        joinable: list[Served | None] | None = (
            None  # the partition's, and its record batch: once one is decided
        )
        builder = writer = None
        decisions = self._batch_decisions
        shadows = self.shadow_topic is not None
        fused = self.native_lane if own else None
        ids = self.duplicates.table
        wait = 0
        while i < end:
            if fused is not None and ids is not None:
                if wait:
                    wait -= 1
                elif (parts := logic.lane_parts()) is not None and (
                    established is None or parts[8][0] in admission.task_types or established(parts[8][0])
                ):
                    if builder is None:
                        builder = out.builder(topic, partition)
                        writer = record_writer(builder)
                    if type(writer) is not NativeBuilder:
                        fused = None  # aiokafka's writer or wrapper appends: the Python loop
                    else:
                        held = joinable
                        if follow and held is None:
                            held = self._joinable.get(partition)
                            if held is None:
                                held = []
                        io = (ids, writer, builder, headers, held, decisions, max_bytes, NATIVE_RECORDS)
                        try:
                            i, taken, full = fused(records, i, end, parts, io)
                        finally:  # the join's entries of what it appended, even if it raised after them
                            if held is not joinable and held:
                                joinable = self._joinable[partition] = held
                        self.decided += taken
                        self.native_decided += taken
                        if full is not None:  # the last one taken did not fit its record batch
                            builder.close()
                            key, decided = full
                            return i, self._finish(
                                out, partition, key, decided[4], headers, False, None, None, decided
                            )
                        if not taken:
                            wait = NATIVE_WAIT
                        if i >= end:
                            break
            record = records[i]
            raw = record.value
            if not raw or len(raw) > max_bytes:
                break
            request = shaped_request(raw)
            if request is None:
                break
            if (
                established is not None
                and request.task_type not in admission.task_types  # is_established_type's first answer
                and not established(request.task_type)
            ):
                break
            if check(request.request_id) is not None:
                break  # a duplicate: _handle checks it again (no side effect) and writes its dead letter
            i += 1
            try:
                decided, served = decide(request)
            except Exception as exc:
                return i, self._failed(out, producer, tp, record, request, exc)
            payload = decided[4]
            key = request.rid
            if not own or record.key != key:  # another partition's
                return i, self._place(out, tp, record, request, decided, served)
            if builder is None:
                builder = out.builder(topic, partition)
                writer = record_writer(builder)
            if writer is not None:  # BatchBuilder.append without its wrapper (outbox.record_writer)
                offset = builder._relative_offset
                appended = writer.append(offset, None, key, payload, headers) is not None
                if appended:
                    builder._relative_offset = offset + 1
                else:
                    builder.close()
            else:
                appended = builder.append(timestamp=None, key=key, value=payload, headers=headers) is not None
            if follow:
                if joinable is None:
                    joinable = self._joinable.get(partition)
                    if joinable is None:
                        joinable = self._joinable[partition] = []
                joinable.append(served)
            shadow = logic.shadow  # take_shadow(), inlined
            if shadow is not None:
                logic.shadow = None
            if not appended or (shadow is not None and shadows) or request.reply_to:
                return i, self._finish(
                    out, partition, key, payload, headers, appended, shadow, request.reply_to, decided
                )
            self.decided += 1
            decisions.append(decided)
        return i, None

    def _handle(
        self,
        out: PartitionBatches,
        producer: AIOKafkaProducer,
        tp: TopicPartition,
        record: Any,
        park: bool = True,
    ) -> Awaitable[None] | None:
        """Decide one request record read from ``tp`` (its ``offset``, ``key`` and ``value`` are read: a record
        of a record batch, :mod:`~banditroute.kafka.raw_fetch`), or park it in the lane (``park`` and a new task
        type), or spill it (the lane full and a spill topic): copied unvalidated, so that reading on costs
        little. Returns what must still be awaited to finish it (None for the common request: decided and
        appended without waiting)."""
        if park and self._spilled and self.lane.full:
            task_type = task_type_of(record.value, self.max_payload_bytes)
            if task_type is not None and not self.logic.is_established_type(task_type):
                self.spilled_total += 1
                return out.add(self._spilled[0].topic, tp.partition, record.key, record.value)
        result = self._decode(tp, record)
        if isinstance(result, DeadLetter):
            return self._dead_letter(out, producer, tp.topic, result)
        if park and self.priority_lane and not self.logic.is_established_type(result.task_type):
            self.lane.park(Parked(tp.topic, tp.partition, record.offset, record.key, record.value, result))
            return None
        return self._decide(out, producer, tp, record, result)

    async def _dead_letter(
        self, out: PartitionBatches, producer: AIOKafkaProducer, topic: str, letter: DeadLetter
    ) -> None:
        """Send the dead letter of a record read from ``topic`` (keyed by that topic's name)."""
        self._batch_letters.append(letter.reason)
        out.futures.append(
            await producer.send(self.deadletter_topic, key=topic.encode(), value=encode(letter))
        )

    def _decide(
        self,
        out: PartitionBatches,
        producer: AIOKafkaProducer,
        where: TopicPartition | Parked,
        record: Any,
        result: Request,
    ) -> Awaitable[None] | None:
        """Decide one request read as ``record`` from ``where`` (its topic and partition; a :class:`Parked`
        request is both) and add its decision (or its dead letter) to ``out``; returns what must still be
        awaited (None: nothing, the common case: the decision is in its partition's record batch, with no shadow
        decision and no reply)."""
        try:
            decided, served = self.logic.decide_encoded(result)
        except Exception as exc:
            return self._failed(out, producer, where, record, result, exc)
        return self._place(out, where, record, result, decided, served)

    def _failed(
        self,
        out: PartitionBatches,
        producer: AIOKafkaProducer,
        where: TopicPartition | Parked,
        record: Any,
        result: Request,
        exc: Exception,
    ) -> Awaitable[None]:
        """The dead letter of a request whose decision raised ``exc``: the worker must never die on one
        request; the bug is kept with its input."""
        log.exception("decision failed", extra={"request_id": result.request_id}, exc_info=exc)
        letter = make_dead_letter(
            record.value,
            where.topic,
            where.partition,
            record.offset,
            DeadLetterReason.INTERNAL_ERROR,
            f"the router could not decide this request: {type(exc).__name__}: {exc}",
            datetime.now(UTC),
            event_type="RoutingRequest",
        )
        return self._dead_letter(out, producer, where.topic, letter)

    def _place(
        self,
        out: PartitionBatches,
        where: TopicPartition | Parked,
        record: Any,
        result: Request,
        decided: Decided,
        served: Served | None,
    ) -> Awaitable[None] | None:
        """Add a decision made for ``record`` to ``out`` (see :meth:`_decide`)."""
        payload = decided[4]
        key = result.request_id.encode()
        partitions = self._decision_partitions
        if record.key == key and where.partition < partitions:
            partition = where.partition
        else:
            partition = partition_for(key, partitions)
        headers = self._headers if self.follow else NO_HEADERS
        appended = out.try_append(self.decisions_topic, partition, key, payload, headers)
        if self.follow:
            joinable = self._joinable.get(partition)
            if joinable is None:
                joinable = self._joinable[partition] = []
            joinable.append(served)
        shadow = self.logic.take_shadow()
        if not appended or (shadow is not None and self.shadow_topic) or result.reply_to:
            return self._finish(
                out, partition, key, payload, headers, appended, shadow, result.reply_to, decided
            )
        self.decided += 1
        self._batch_decisions.append(decided)
        return None

    async def _finish(
        self,
        out: PartitionBatches,
        partition: int,
        key: bytes,
        payload: bytes,
        headers: Headers,
        appended: bool,
        shadow: dict[str, Any] | None,
        reply_to: str | None,
        decided: Decided,
    ) -> None:
        """The rest of :meth:`_decide` when it must wait: a full record batch shipped, a shadow decision, a
        reply."""
        if not appended:  # batch full: ship it
            await out.add(self.decisions_topic, partition, key, payload, headers)
        if shadow is not None and self.shadow_topic:
            await out.add(self.shadow_topic, partition, key, orjson.dumps(shadow))
        if reply_to and self._replies is not None:
            # best effort: the decision is already on its way to the decisions topic; a client whose reply
            # topic is gone times out and falls back to its default route
            await self._replies.send(reply_to, key, payload)
        self.decided += 1
        self._batch_decisions.append(decided)


def _is_step(item: Any) -> bool:
    """A committer queue item that is a step's (futures, offsets, handoff), not a barrier or the end (None)."""
    return item is not None and not isinstance(item, asyncio.Future)


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Keeps ``DecideService.assigned`` equal to the decide consumer's partitions."""

    def __init__(self, service: DecideService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.service.assigned = frozenset()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.service.assigned = frozenset(tp.partition for tp in assigned)
