"""The join on Kafka: the feedback reader's batches, decisions handed over in memory by the decide loop, the
decisions reader, and the ownership of partitions the decide loop and the join share.

One worker owns partition p of ``requests``, ``decisions`` and ``feedback`` at once (faust's assignment of the
feedback topic decides which; the decide loop and the decisions reader follow it). Steady state:

* the decide loop hands the join each acknowledged decision with its offset (:class:`Handoff`); the join holds
  it as a pending entry in memory only. No copy of it is written anywhere else;
* the decisions reader reads ``decisions`` p in order, but not the worker's own decisions: it keeps its
  partitions paused and seeks past the record batches the decide loop handed over, reading only what lies
  between (and after the last one: see ``kafka/partition_reader.py``); own decisions it meets anyway (its
  header) are skipped unparsed; others (local-mode clients, another worker's before a rebalance) are joined
  the old way; tick records expire parked feedback;
* feedback joins against the pending entries; a resolution (joined, expired) is written to the changelogged
  ``request_to_pending`` table and acknowledged before any outcome is published;
* the reader commits, per partition, the oldest offset the join still needs (:meth:`JoinIO._join_floor`).

On every (re)assignment, and whenever the decide loop restarts, the join lets go of its in-memory entries, the
reader reads ``decisions`` again from its committed offset to the end (every unresolved decision comes back; the
resolved ones are in the table), and only then do the feedback reader and the decide loop take the partitions
again. Both readers are raw aiokafka batch loops (``kafka/partition_reader.py``) that commit in groups of their
own once a batch's join state and outcomes are acknowledged. See docs/guarantees.md for the failure cases.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Container
from datetime import UTC, datetime
from typing import Any

import orjson

from banditroute.agents.join import (
    TAG_DECISIONS,
    TAG_WORKER,
    FeedbackRecord,
    JoinLogic,
    JoinResult,
    source_partition,
)
from banditroute.codec import DeadLetterCounter, decode_record, encode, make_dead_letter, unknown_model_check
from banditroute.config import Registry
from banditroute.events import DeadLetter, DeadLetterReason, Feedback
from banditroute.kafka.decide_service import DecideService
from banditroute.kafka.decision_publisher import ORIGIN_HEADER, is_local_origin
from banditroute.kafka.fast_feedback import fast_feedback
from banditroute.kafka.fence import Fenced, Lease
from banditroute.kafka.handoff import DECIDER_HEADER, Handoff, skip_own
from banditroute.kafka.outbox import Outbox
from banditroute.kafka.partition_reader import PartitionReader, Skip
from banditroute.kafka.staged import StagedTable, flush_acknowledged
from banditroute.kafka.topics import partition_for, partitions_for
from banditroute.limits import Admission, ForeignKeys
from banditroute.messages import is_identifier
from banditroute.served import Served, served_by_router
from banditroute.services import WorkerApp
from banditroute.settings import Settings
from banditroute.web.top import OTHER, TopTaskTypes

log = logging.getLogger("banditroute.worker")

TICK_HEADER = "banditroute-tick"
CATCH_UP_POLL_S = 0.05
AHEAD_WAIT_S = 0.02
"""When the decisions reader has met the worker's own decisions before their handoff, it waits this long before
its next read, so the handoffs come first and it can seek past those records instead of parsing them."""
MAX_OWN_RANGES = 4096
"""Own record batches remembered per partition for the reader to seek past (older ones are just read)."""
OUTCOME_KEYS_KEPT = 4096
"""State keys whose encoded key and outcomes partition the join keeps (all of them are dropped past that)."""
LETTERED_KEPT = 4096
"""Sources of dead letters acknowledged by a join batch that failed, kept so the same letter made again is not
sent again (all of them are dropped past that: a letter then goes twice, as after a crash)."""

LetterKey = tuple[str, int, int]
"""Where a dead letter's record was read (topic, partition, offset): one record, one dead letter."""


def letter_key(letter: DeadLetter) -> LetterKey:
    return (letter.source_topic, letter.source_partition, letter.source_offset)


def acknowledged(future: asyncio.Future[Any]) -> bool:
    """Whether a send's acknowledgement came back without error."""
    return future.done() and not future.cancelled() and future.exception() is None


def header(headers: Any, name: str) -> bytes | None:
    """The value of header ``name`` of a record, or None."""
    for key, value in headers or ():
        if key == name:
            return bytes(value) if value is not None else b""
    return None


def tick_time(headers: Any) -> float | None:
    """The send time of a tick record, or None for an ordinary record."""
    value = header(headers, TICK_HEADER)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


class Refused(Exception):
    """A decision read from the topic that the join does not take: dead-lettered with ``reason`` and ``error``
    (``cap``: the cap on client-named keys that refused it, counted in ``foreign_capped``, or None)."""

    def __init__(self, reason: DeadLetterReason, error: str, cap: str | None = None) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.cap = cap


def local_counted(decision: dict[str, Any], models: Container[str]) -> tuple[str, str]:
    """The (client id, model) a local-mode client's decision is counted under (``local_decisions``: a counter,
    a ``banditroute_local_decisions_total`` series and a dashboard entry per pair): its own, but ``other`` for a
    client id that is no identifier (the events' rule for ``worker_id``) and for a model not in the catalog
    (``"None"``: no model). Any process that writes the decisions topic names both; until review21 each new
    model name was a new pair kept for good (a few thousand made-up names made as many Prometheus series), and a
    client id was kept whatever its length. Raises where the decision has no ``worker_id`` or ``model``."""
    client, model = str(decision["worker_id"]), decision["model"]
    return (
        client if is_identifier(client) else OTHER,
        model if type(model) is str and model in models else "None" if model is None else OTHER,
    )


class JoinIO:
    """The join's Kafka side, mixed into :class:`banditroute.app.Router` (which builds these attributes)."""

    settings: Settings
    app: WorkerApp
    registry: Registry
    join: JoinLogic
    pending_view: StagedTable
    early_view: StagedTable
    outbox: Outbox
    decider: DecideService
    decision_reader: PartitionReader
    feedback_reader: PartitionReader
    learn_reader: PartitionReader
    lease: Lease
    dead_letters: DeadLetterCounter
    counters: Counter[str]
    client_top: TopTaskTypes
    local_decisions: Counter[tuple[str, str]]
    foreign_capped: Counter[str]
    feedback: Any
    decisions: Any
    outcomes: Any
    deadletter: Any

    def _init_join(self) -> None:
        self.join.keep_uncommitted = (
            True  # until the reader's first commit, a restart may read anything again
        )
        self._join_lock = asyncio.Lock()  # one join batch at a time: feedback, decisions or handoffs
        self._handoffs: list[Handoff] = []
        self._handoff_failures: list[tuple[int, int, Served, Exception]] = []
        """Handed-over decisions the join failed on (partition, offset, fields, error): dead-lettered next."""
        self._received_seq = 0  # the newest handoff's DecideService.shipped
        self._handed: dict[int, int] = {}  # per partition: the offset after the last decision handed over
        self._ahead: dict[int, tuple[int, int]] = {}  # own decisions the reader met before their handoff
        self._deferred_ticks: dict[int, float] = {}
        # own record batches taken into the join, per partition (the decisions reader seeks past them)
        self._own: dict[int, deque[tuple[int, int]]] = {}
        self._only_own = False  # the decisions reader's last batch held only this assignment's own decisions
        self._synced: tuple[frozenset[int], int] | None = None
        self._releases = 0
        """Revocations so far (``_release``): an assignment read before the last one may be stale."""
        self._drainer: asyncio.Future[None] | None = None
        self._outcome_keys: dict[str, tuple[bytes, int]] = {}  # state key -> (JSON key, outcomes partition)
        self._unpublished: dict[tuple[int, int], dict[str, Any]] = {}
        """Outcomes of join batches that failed, by (src, off): published first by the next batch that holds
        their partition (:meth:`_finish_join`), unless the join lets go of its partitions first (:meth:`_forget`)."""
        self._letters: list[DeadLetter] = []
        """Dead letters of the join batch under way, sent, acknowledged, before its join state (:meth:`_finish_join`)."""
        self._held_letters: dict[LetterKey, DeadLetter] = {}
        """Dead letters of join batches that failed, not acknowledged: sent first by the next batch, whatever its
        partitions and the rebalances since (a letter goes at least once: a new owner may make it again, or may
        not, the parked feedback of a tick's ``unknown_request`` being gone from the changelog already)."""
        self._lettered: set[LetterKey] = set()
        """Sources of dead letters acknowledged by join batches that failed: the same letter made again (its record
        read again) is not sent again."""
        self.foreign_keys = ForeignKeys()
        """The state keys of decisions read from the topic, admitted against this worker's limits
        (:meth:`_foreign_served`)."""

    # -- ownership -------------------------------------------------------------------------------------
    async def _release(self) -> None:
        """Before partitions move: the decide loop hands over what it decided, the readers finish their batches
        (committed), then the join lets go."""
        self._synced = None
        self._releases += 1  # a _sync under way must not let go of what its assignment did not hold
        try:
            await self.decider.assign(())
            self._handed_all()
        except RuntimeError:
            pass  # not running: nothing to hand over
        await self.feedback_reader.assign(())
        await self.decision_reader.assign(())
        await self.learn_reader.assign(())
        async with self._join_lock:
            self._forget()

    def _let_go_outside(self, owned: frozenset[int]) -> None:
        """Drop what the join tables hold of partitions outside ``owned``: writes staged again after a failed
        flush (their new owner joins their decisions and feedback again and writes them itself) and the
        entries in memory (faust's memory store kept those written here until a restart: a leak, and entries a
        later assignment of the partition could act on after their new owner had resolved or deleted them)."""
        writes = entries = 0
        for view in (self.pending_view, self.early_view):
            staged, dropped = view.drop_outside(owned)
            writes += staged
            entries += len(dropped)
        if writes:
            self.counters["join_writes_dropped_after_rebalance"] += writes
            log.warning(
                "%d join-table writes staged again after a failed flush dropped: their partitions moved "
                "(their new owner joins their decisions and feedback again)",
                writes,
            )
        if entries:
            self.counters["join_entries_dropped_after_rebalance"] += entries
            log.info("%d join-table entries of partitions that moved dropped from memory", entries)

    def _drop_replaced_writes(self) -> None:
        """Let go of the join-table writes staged after a failed flush whose keys faust's recovery has since read
        newer records of (``StagedTable.drop_replaced``): a worker stalled past its session timeout, given its
        partitions back without seeing them move, holds in its tables what their interim owner wrote meanwhile,
        and its next flush wrote its own older writes over it (e.g. feedback parked again on the early-feedback
        changelog after its interim owner had joined it and removed it: recovered later, a tick dead-letters learnt
        feedback as ``unknown_request``). Called once the recovery is done (``_sync``), before any reader of the
        assignment reads: the inputs of the writes dropped are read again from the committed offsets, which never
        pass an unacknowledged write, and joined against what the tables now hold."""
        keys = [key for view in (self.pending_view, self.early_view) for key in view.drop_replaced()]
        if keys:
            self.counters["join_writes_replaced"] += len(keys)
            log.warning(
                "%d join-table writes staged again after a failed flush dropped: faust's recovery read newer "
                "records of them (e.g. %r) from the changelogs",
                len(keys),
                keys[0],
            )

    def _handed_all(self) -> None:
        """The decide loop has handed over everything (it holds no partition): a handoff a failed loop lost
        no longer counts as one that may still come (the decisions reader waits for those, ``_skip_own``)."""
        self._received_seq = max(self._received_seq, self.decider.shipped)

    def _forget(self) -> None:
        if self._unpublished:  # made again as the decisions are read again (new token: redelivered joins), a
            # default reward as its tick is (JoinLogic.on_tick); a partition that moved and came back holds its new
            # owner's resolutions then, and makes none
            self.counters["join_outcomes_let_go"] += len(self._unpublished)
            self._unpublished.clear()
        self._handoffs.clear()
        self._own.clear()
        self._handed.clear()
        self._ahead.clear()
        self._deferred_ticks.clear()
        self.join.forget_held()

    async def _sync(self, owned: frozenset[int], settling: Any) -> None:
        """Take ``owned`` (the feedback partitions assigned when called): let go of the join-table entries of the
        other partitions, read the decisions from the committed offsets up to date, then decide and join."""
        releases = self._releases
        try:
            await self.decider.assign(())
        except RuntimeError:
            return  # the decide loop is (re)starting: try again at the next check
        self._handed_all()
        await self.feedback_reader.assign(())
        # the batch in hand commits against the join's floor before the join lets go: a commit after it (no
        # floor) would pass the pending decisions that the reader is about to read again
        await self.decision_reader.assign(())
        runs = self.decider.runs
        async with self._join_lock:
            self._forget()
            self._drop_replaced_writes()  # faust's recovery is done: what it read over the staged writes stands
            # only while ``owned`` is still the assignment (no revocation since it was read): a partition
            # dropped here but kept through the rebalance is not recovered again, so its entries would be lost
            if not settling() and self._releases == releases:
                self._let_go_outside(owned)
        await self.decision_reader.assign(owned, unless=settling)
        while not self.decision_reader.caught_up.is_set():
            if settling():
                return
            await asyncio.sleep(CATCH_UP_POLL_S)
        async with self._join_lock:
            bad = self.join.rebuild_index(self._partition_of_request)  # the recovered and re-read entries
            if bad:
                self.counters["bad_join_records"] += len(bad)
                log.error(
                    "%d join table entries do not decode (not written by a join): left out, e.g. %r",
                    len(bad),
                    bad[0][:80],
                )
            self._handed.clear()
            self._ahead.clear()
            self._own.clear()
        if settling():
            return
        await self.decider.assign(owned)
        await self.feedback_reader.assign(owned, unless=settling)
        if self.feedback_reader.partitions != owned:
            return  # a rebalance overtook it: taken again once faust has settled
        self._synced = (owned, runs)
        self.counters["join_assignments"] += 1

    def _partition_of_request(self, request_id: str) -> int:
        """Where Kafka's default partitioner puts a record keyed by this request id (decisions, feedback)."""
        return partition_for(request_id.encode(), self.settings.partitions)

    def _partitions_of_requests(self, request_ids: list[str]) -> list[int]:
        """:meth:`_partition_of_request` of many request ids, hashed together."""
        return partitions_for([r.encode() for r in request_ids], self.settings.partitions)

    def _join_floor(self, partition: int) -> int | None:
        """The oldest decisions offset of ``partition`` the join still needs after a restart: its oldest
        unresolved decision, or one resolved in memory whose join state is not acknowledged yet (a flush that
        failed, e.g. cancelled by a graceful stop: the commit passed those before 2026-12-02, and their feedback,
        read again by the next owner, found no decision)."""
        floor = self.join.oldest_unresolved(partition)
        unacknowledged = self.join.oldest_unacknowledged(partition)
        if unacknowledged is not None and (floor is None or unacknowledged < floor):
            floor = unacknowledged
        ahead = self._ahead.get(partition)
        if ahead is not None and (floor is None or ahead[0] < floor):
            return ahead[0]
        return floor

    def _on_join_commit(self, offsets: dict[int, int]) -> None:
        self.join.committed.update(offsets)

    # -- handoffs --------------------------------------------------------------------------------------
    def _on_pending(self, handoff: Handoff) -> None:
        """An acknowledged batch of the decide loop (on the worker's loop): joined at the next chance."""
        self._handoffs.append(handoff)
        self._received_seq = max(self._received_seq, handoff.seq)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.ensure_future(self._drain_handoffs())
            self._drainer.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Future[None]) -> None:
        """Log and count a join of handed-over decisions that failed (its flush, or the lease): nobody awaits
        the task, so its error would otherwise surface only as asyncio's "never retrieved" at collection. What
        it did not publish is held back for the next flush (``_finish_join``)."""
        if task.cancelled() or task.exception() is None:
            return
        self.counters["handoff_join_failures"] += 1
        exc = task.exception()
        if isinstance(exc, Fenced):  # stalled past its lease (kafka/fence.py): as designed, no traceback
            log.warning("join of handed-over decisions failed (Fenced: %s); retried by the next flush", exc)
            return
        log.error("join of handed-over decisions failed; retried by the next flush", exc_info=exc)

    async def _drain_handoffs(self) -> None:
        async with self._join_lock:
            results: list[JoinResult] = []
            self._take_handoffs(results)
            await self._finish_join(results)

    def _take_handoffs(self, results: list[JoinResult]) -> None:
        if not self._handoffs:
            return
        handoffs, self._handoffs = self._handoffs, []
        token, owned, join = self.decider.token, self.decision_reader.partitions, self.join
        now = time.time()
        for handoff in handoffs:
            if handoff.token != token:
                continue  # decided under an earlier assignment: the reader reads those again
            result = JoinResult()
            decisions = handoff.decisions
            if not owned.issuperset(handoff.upto):  # the usual handoff is all in partitions the join holds
                decisions = [d for d in decisions if d[0] in owned]
            self._join_handed(decisions, now, result)
            if result.outcomes or result.rejections or result.counters:
                results.append(result)
            for partition, first, end in handoff.ranges:
                if partition in owned:
                    ranges = self._own.get(partition)
                    if ranges is None:
                        ranges = self._own[partition] = deque(maxlen=MAX_OWN_RANGES)
                    ranges.append((first, end))
            for partition, upto in handoff.upto.items():
                if upto > self._handed.get(partition, 0):
                    self._handed[partition] = upto
                ahead = self._ahead.get(partition)
                if ahead is not None and upto > ahead[1]:
                    del self._ahead[partition]
                    sent = self._deferred_ticks.pop(partition, None)
                    if sent is not None:
                        results.append(join.on_decisions_tick(partition, sent))

    def _join_handed(self, decisions: list[tuple[int, int, Served]], now: float, result: JoinResult) -> None:
        """``JoinLogic.on_served`` over a handoff's decisions. A decision it fails on is logged and kept for a
        dead letter (``_finish_join``), and the others go on after it, as :meth:`_join_run` does for decisions
        read from the topic: the reader passes over the worker's own decisions, so one the join did not take
        here is never joined (a failure used to lose every handoff taken with it, their feedback never learnt)."""
        for i, exc in self._served_past_failures(decisions, now, TAG_WORKER, lambda: result):
            partition, offset, served = decisions[i]
            log.error(
                "join failed on a decision handed over",
                exc_info=exc,
                extra={"topic": self.decisions.get_topic_name(), "partition": partition, "offset": offset},
            )
            self._handoff_failures.append((partition, offset, served, exc))

    def _served_past_failures(
        self,
        decisions: list[tuple[int, int, Served]],
        now: float,
        tag: int,
        result_for: Callable[[], JoinResult],
    ) -> list[tuple[int, Exception]]:
        """``JoinLogic.on_served`` over ``decisions`` (into ``result_for()`` per call), going on past a decision it
        fails on: never let one decision stop the join. Returns each failed decision's index and error, in order,
        for the caller to log and dead-letter with its input."""
        failures: list[tuple[int, Exception]] = []
        start, join = 0, self.join
        while start < len(decisions):
            try:
                join.on_served(decisions[start:] if start else decisions, now, tag, result_for())
                start = len(decisions)
            except Exception as exc:
                failed = start + join.failed_at
                failures.append((failed, exc))
                start = failed + 1
        return failures

    async def _skip_own(self, positions: dict[int, int]) -> Skip:
        """The decisions reader's ``skip``: per partition, the offset it may seek to because every record from
        its position up to there is one of this assignment's own decisions, already in the join and its join
        state acknowledged (so the reader may commit past them; unresolved ones still hold the floor); where the
        next own batch begins (the records before it are someone else's); and whether to read only a few
        records next (its last batch held nothing but own decisions)."""
        only_own = self._only_own
        if only_own and self._ahead:  # the reader is ahead of the handoffs: let them come first
            await asyncio.sleep(AHEAD_WAIT_S)
        async with self._join_lock:
            if self._handoffs:
                results: list[JoinResult] = []
                self._take_handoffs(results)
                await self._finish_join(results)
            # partitions where every batch the decide loop shipped so far is handed over (it counts first)
            received, shipped_to = self._received_seq, self.decider.shipped_to
            settled = frozenset(p for p in positions if shipped_to.get(p, 0) <= received)
            advice = Skip(few=only_own, settled=settled)
            for partition, at in positions.items():
                ranges = self._own.get(partition)
                if not ranges:
                    continue
                to = skip_own(ranges, at)
                if to > at:
                    advice.jumps[partition] = to
                    self.counters["own_decisions_skipped"] += to - at
                if ranges:
                    advice.next_own[partition] = ranges[0][0]
            return advice

    # -- batches ---------------------------------------------------------------------------------------
    async def _join_feedback_records(self, records: list[Any]) -> None:
        """One batch from the feedback reader (committed by it once this returns): join state is acknowledged
        before any outcome is published. The reader takes a partition only once the decisions are read up to
        date (``_sync``)."""
        async with self._join_lock:
            results: list[JoinResult] = []
            self._take_handoffs(results)
            for record in records:
                await self._join_record(record, results)
            await self._finish_join(results)

    async def _join_decisions(self, records: list[Any]) -> None:
        """One batch from the decision reader (committed by it once this returns). The worker's own decisions
        (handed over in memory) are passed over; the usual others, local-mode clients' decisions, are joined in
        runs (:meth:`_join_run`: one ``on_served`` for consecutive decisions, one clock for the batch, local
        decisions counted per client once); anything else (a tick, another worker's decision, a record that does
        not read as a decision) goes to :meth:`_join_record` on its own, in order, as it always did."""
        async with self._join_lock:
            results: list[JoinResult] = []
            self._take_handoffs(results)
            token, topic, loads, served_of, models, max_bytes = (
                self.decider.token,
                self.decisions.get_topic_name(),
                orjson.loads,
                self._foreign_served,
                self.registry.model_names,
                self.settings.max_payload_bytes,
            )
            now = time.time()  # a deadline is at most the batch's work early
            run: list[tuple[int, int, Served]] = []
            ran: list[Any] = []  # the run's records
            clients: Counter[tuple[str, str]] = Counter()  # local decisions per (client id, model)
            own = 0
            for record in records:
                origin: bytes | None = None
                local = tick = False
                # one pass over the headers for what header(), tick_time() and is_local_origin() read
                for key, value in record.headers or ():
                    if key == ORIGIN_HEADER:
                        local = local or value == b"local"
                    elif key == DECIDER_HEADER:
                        if origin is None:
                            origin = bytes(value) if value is not None else b""
                    elif key == TICK_HEADER:
                        tick = True
                if origin is not None and origin == token:  # handed over in memory
                    own += 1
                    if record.offset >= self._handed.get(record.partition, 0):
                        first = self._ahead.get(record.partition, (record.offset, 0))[0]
                        self._ahead[record.partition] = (first, record.offset)
                    continue
                if not tick and origin is None and record.topic == topic:
                    try:
                        if len(record.value) > max_bytes:
                            raise ValueError  # dead-lettered as too large by _join_record
                        decision = loads(record.value)
                        client = local_counted(decision, models) if local else None
                        served = served_of(decision, now)
                    except Exception:  # _join_record reads it again, and dead-letters it
                        pass
                    else:
                        if client is not None:
                            clients[client] += 1
                        if served is not None:
                            run.append((record.partition, record.offset, served))
                            ran.append(record)
                        continue
                await self._join_run(run, ran, now, results)  # the decisions before it come first
                await self._join_record(record, results, worker=origin is not None)
            await self._join_run(run, ran, now, results)
            for (client_id, model), n in clients.items():
                self.client_top.count(self.local_decisions, client_id, model, now, n)
            self._only_own = own == len(records)
            if own:
                self.counters["own_decisions_read"] += own
            await self._finish_join(results)

    def _foreign_served(self, decision: Any, now: float) -> Served | None:
        """What the join keeps of a decision read from the topic (None: it serves no model), with the state key it
        learns into admitted against this worker's limits (:class:`banditroute.limits.ForeignKeys`: its own key
        within the caps a request meets here, ``~shared`` or the task type's state past them, marked capped);
        raises :class:`Refused` where no request could have named its key, or a request of its task type would
        be rejected (``reject_unknown_task_types``), and anything else where the join fails on it (the callers
        dead-letter it, with its reason)."""
        if type(decision) is not dict:
            raise TypeError(f"a decision is a JSON object, not {type(decision).__name__}")
        served = served_by_router(decision)  # as JoinLogic.on_decision
        if served is None:  # nothing to learn from it: no state for it either
            return None
        snapshot, decide_logic = self.registry.snapshot, getattr(self, "decide_logic", None)
        decided: Admission | None = getattr(decide_logic, "admission", None)
        verdict = self.foreign_keys.check(
            snapshot.limits,
            snapshot.routes,
            snapshot.is_per_tenant,
            decided,
            decision.get("task_type"),
            decision.get("tenant"),
            decision.get("state_key"),
            now,
        )
        if verdict.reject is not None:
            raise Refused(
                DeadLetterReason.VALIDATION_ERROR, f"decision not joined: {verdict.reject}", verdict.capped
            )
        if verdict.capped is not None:
            self.foreign_capped[verdict.capped] += 1
        capped = served[10] or verdict.shared or verdict.capped is not None
        if verdict.key == served[2] and capped == served[10]:
            return served
        s = served
        return (s[0], s[1], verdict.key, s[3], s[4], s[5], s[6], s[7], s[8], s[9], capped)

    async def _join_run(
        self, run: list[tuple[int, int, Served]], ran: list[Any], now: float, results: list[JoinResult]
    ) -> None:
        """Join ``run`` (decisions of ``ran``, in order) with one ``JoinLogic.on_served``, then empty both. A
        decision it fails on is dead-lettered as :meth:`_join_record` would, and the run goes on after it."""
        made: list[JoinResult] = []

        def result_for() -> JoinResult:
            made.append(JoinResult())
            return made[-1]

        for i, exc in self._served_past_failures(run, now, TAG_DECISIONS, result_for):
            await self._join_failed(ran[i], exc)
        results.extend(r for r in made if r.outcomes or r.rejections or r.counters)
        run.clear()
        ran.clear()

    async def _finish_join(self, results: list[JoinResult]) -> None:
        """Dead letters acknowledged first, then join state, then outcomes. Should that fail, the outcomes are held
        back and published first by the next call that holds their partitions: a join completed by a handoff
        (feedback parked first, its parking acknowledged) or by a tick is not made again from a record read
        again (before 2026-12-02 such an outcome was never published: tests/kafka/test_join_flush_failed.py).
        So are the dead letters not acknowledged, sent by the next call whatever its partitions (before 2026-12-03
        a tick's ``unknown_request`` for parked feedback was lost, and a letter sent before the flush failed went
        again with its record read again: the same test file); those acknowledged are not sent again when made
        again.
        The decisions reader commits past a decision only once its join state and outcome are acknowledged."""
        # on failure staged again: the reader restarts in this process, with this memory. Only the partitions
        # the join holds: after a rebalance, writes staged again for partitions that moved stay out of the
        # changelog partitions their new owner writes (dropped by _sync; the owner reads their inputs again)
        views, held = (self.pending_view, self.early_view), self.decision_reader.partitions
        if self._unpublished:
            results = self._with_held_back(results, held)
        letters = self._batch_letters(results)
        acks: list[asyncio.Future[Any]] = []
        try:
            # a worker that lost its partitions without noticing (stalled) writes nothing as their owner: the
            # batch fails (Fenced) and stays staged, as after a failed send (kafka/fence.py: narrows, does not
            # close); its outcomes are held back, dropped with the staged writes if a rebalance moved them
            await self.lease.hold()
            # dead letters (rare) first, acknowledged on their own: a join write that undoes what a letter reports
            # (a tick's removal of the feedback it dead-letters as unknown_request) never lands without it; a crash
            # in between makes it again from its record read again (until review20 they went after the join
            # state, and a crash before their acknowledgement lost such a letter: the removal recovered, the tick
            # read again found nothing). A letter acknowledged by a batch that then fails is not sent again
            # (_hold_letters); an outcome refused after them leaves none in doubt
            if letters:
                topic, send = self.deadletter.get_topic_name(), self.outbox.send
                for letter in letters:
                    acks.append(await send(topic, letter.source_topic.encode(), encode(letter)))
                await self.outbox.drain()
            await flush_acknowledged(views, self.outbox.send_to, self.outbox.drain, held)
            await self.lease.hold()
            await self._publish(results)
            await self.outbox.drain()
            # only now may the commit pass the decisions resolved so far: with their outcomes acknowledged too (a
            # crash between the two used to lose an outcome completed by a handoff; read again, a resolved decision
            # re-publishes its stored outcome). A partition not held: the reader commits none of it, and takes it
            # again only through _sync, reading batches that flush first
            self.join.acknowledged()
        except BaseException:
            for result in results:  # the same outcome made again later (its feedback read again) goes once
                for outcome in result.outcomes:
                    self._unpublished.setdefault((outcome["src"], outcome["off"]), outcome)
            self._hold_letters(letters, acks)
            raise
        for letter in letters:
            self.dead_letters.record(letter.reason)

    def _batch_letters(self, results: list[JoinResult]) -> list[DeadLetter]:
        """The dead letters a batch sends: those held back, then the batch's own (its rejections, its handed-over
        decisions the join failed on, those made as its records were read), each record's once: one made again (its
        record read again, after a failure) goes only if none was acknowledged."""
        made, self._letters = self._letters, []
        rejections = [rej for result in results for rej in result.rejections]
        if rejections:
            now, topic = datetime.now(UTC), self.feedback.get_topic_name()
            for rej in rejections:
                made.append(
                    make_dead_letter(rej.raw, topic, rej.partition, rej.offset, rej.reason, rej.error, now)
                )
        failures, self._handoff_failures = self._handoff_failures, []
        for partition, offset, served, exc in failures:
            made.append(
                make_dead_letter(
                    orjson.dumps(served),  # what the join keeps of the decision (the record is not at hand)
                    self.decisions.get_topic_name(),
                    partition,
                    offset,
                    DeadLetterReason.INTERNAL_ERROR,
                    f"the join failed on this decision (handed over in memory; the payload is what the join "
                    f"keeps of it): {type(exc).__name__}: {exc}",
                    datetime.now(UTC),
                )
            )
        if not self._held_letters and not self._lettered:
            return made
        letters = list(self._held_letters.values())
        seen, lettered = set(self._held_letters), self._lettered
        self._held_letters = {}
        for letter in made:
            key = letter_key(letter)
            if key in seen:
                continue  # held back already: that one goes (the first reason given stands)
            if key in lettered:
                lettered.discard(key)  # acknowledged by a batch that failed
                continue
            seen.add(key)
            letters.append(letter)
        return letters

    def _hold_letters(self, letters: list[DeadLetter], acks: list[asyncio.Future[Any]]) -> None:
        """After a failed batch: its dead letters acknowledged are remembered (counted as sent), the others held
        back for the next batch."""
        for i, letter in enumerate(letters):
            key = letter_key(letter)
            if i < len(acks) and acknowledged(acks[i]):
                if len(self._lettered) >= LETTERED_KEPT:
                    self._lettered.clear()
                self._lettered.add(key)
                self.dead_letters.record(letter.reason)
            else:
                self._held_letters.setdefault(key, letter)

    def _with_held_back(self, results: list[JoinResult], held: frozenset[int]) -> list[JoinResult]:
        """The outcomes held back in partitions ``held`` (in watermark order per source), then ``results``, where
        the same outcomes made again are left out."""
        unpublished = self._unpublished
        back = sorted(k for k in unpublished if source_partition(k[0]) in held)
        if not back:
            return results
        first = JoinResult([unpublished.pop(k) for k in back])
        taken = set(back)
        for result in results:
            result.outcomes = [o for o in result.outcomes if (o["src"], o["off"]) not in taken]
        return [first, *results]

    async def _join_record(self, msg: Any, results: list[JoinResult], worker: bool = False) -> None:
        now = time.time()
        try:
            tick = tick_time(msg.headers)
            decisions = msg.topic == self.decisions.get_topic_name()
            if tick is not None:
                # a tick stamped in the future (a forged header) acts as one sent now
                sent_at = min(tick, now)
                if not decisions:
                    results.append(self.join.on_tick(msg.partition, msg.offset, sent_at))
                elif msg.partition in self._ahead:  # an own decision before it is not handed over yet
                    self._deferred_ticks[msg.partition] = sent_at
                else:
                    results.append(self.join.on_decisions_tick(msg.partition, sent_at))
            elif decisions:
                size, most = len(msg.value), self.settings.max_payload_bytes
                if (
                    size > most
                ):  # held for the wait window: bounded as a request is (before bounds22 it was not)
                    raise Refused(
                        DeadLetterReason.PAYLOAD_TOO_LARGE,
                        f"decision is {size} bytes; at most {most} are allowed (max_payload_bytes)",
                    )
                decision = orjson.loads(msg.value)
                if is_local_origin(msg.headers):  # a local-mode client's decision (worker_id = its client id)
                    self.client_top.count(
                        self.local_decisions, *local_counted(decision, self.registry.model_names), now
                    )
                served = self._foreign_served(decision, now)
                result = JoinResult()
                if served is not None:  # else nothing served by the router: nothing to learn
                    tag = TAG_WORKER if worker else TAG_DECISIONS
                    self.join.on_served([(msg.partition, msg.offset, served)], now, tag, result)
                results.append(result)
            else:
                await self._join_one_feedback(msg, now, results)
        except Refused as refused:
            if refused.cap is not None:
                self.foreign_capped[refused.cap] += 1
            await self._dead_letter(
                msg.value, msg.topic, msg.partition, msg.offset, refused.reason, refused.error
            )
        except Exception as exc:  # never let one record stop the join; the bug is kept with its input
            await self._join_failed(msg, exc)

    async def _join_failed(self, msg: Any, exc: Exception) -> None:
        log.error("join failed", exc_info=exc, extra={"topic": msg.topic, "offset": msg.offset})
        await self._dead_letter(
            msg.value,
            msg.topic,
            msg.partition,
            msg.offset,
            DeadLetterReason.INTERNAL_ERROR,
            f"the join failed on this record: {type(exc).__name__}: {exc}",
        )

    async def _join_one_feedback(self, msg: Any, now: float, results: list[JoinResult]) -> None:
        """Join one feedback record; what it produces is added to the last result (so in order: outcomes are
        published in the order they were produced, which each source's watermark needs) or a new one."""
        last = results[-1] if results else None
        fields = fast_feedback(msg.value, self.settings.max_payload_bytes, self.registry.model_names)
        if fields is not None:  # the common shape, checked without pydantic (kafka/fast_feedback.py)
            result = self.join.on_feedback(
                FeedbackRecord(fields, bytes(msg.value), msg.partition, msg.offset), now, last
            )
            if result is not last:
                results.append(result)
            return
        checked = decode_record(
            Feedback,
            msg.value,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            max_bytes=self.settings.max_payload_bytes,
            checks=(unknown_model_check(lambda: self.registry.model_names),),
        )
        if isinstance(checked, DeadLetter):
            self._letters.append(checked)  # sent with the batch's, before its join state
            return
        fields = checked.model_dump(mode="json", exclude_none=True)
        result = self.join.on_feedback(
            FeedbackRecord(fields, bytes(msg.value), msg.partition, msg.offset), now, last
        )
        if result is not last:
            results.append(result)

    async def _publish(self, results: list[JoinResult]) -> None:
        topic, send = self.outcomes.get_topic_name(), self.outbox.send_to
        keys, partitions = self._outcome_keys, self.settings.state_partitions
        counts: Counter[str] = Counter()
        for result in results:
            for outcome in result.outcomes:
                # the key is JSON, like the state table's, so an outcome and its state share a partition
                task_key = outcome["task_key"]
                known = keys.get(task_key)
                if known is None:
                    if len(keys) >= OUTCOME_KEYS_KEPT:
                        keys.clear()
                    key = orjson.dumps(task_key)
                    known = keys[task_key] = (key, partition_for(key, partitions))
                await send(topic, known[0], orjson.dumps(outcome), known[1])
            counts.update(result.counters)
        self.counters.update(counts)

    async def _dead_letter(
        self, raw: bytes | None, topic: str, partition: int, offset: int, reason: str, error: str
    ) -> None:
        """A dead letter of the batch under way: sent with the batch's, before its join state."""
        self._letters.append(
            make_dead_letter(raw, topic, partition, offset, reason, error, datetime.now(UTC))
        )
