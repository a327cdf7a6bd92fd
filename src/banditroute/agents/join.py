"""Join feedback to its decision within a reward wait window; emit one joined outcome per decision.

The logic is written against a plain ``MutableMapping`` (the faust table in production, a dict in tests), so
it can be unit-tested without a broker. Every emitted outcome carries the ``(source, offset)`` of the input
record that produced it; the learner keeps a watermark per source and skips anything at or below it, which
makes the whole feedback path idempotent under redelivery (input arrives at least once; nothing is learned
twice).

Sources are numbered ``partition * 4 + tag`` with a tag per input topic (decisions, feedback), because offsets
of different topics are not comparable.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Collection, Iterable, MutableMapping
from dataclasses import dataclass, field
from itertools import compress, groupby
from operator import itemgetter
from typing import Any

import orjson

from banditroute.agents.deadlines import Deadlines
from banditroute.agents.pending import (
    EXPIRED,
    JOINED,
    PENDING,
    OffsetWindow,
    Pending,
    compact,
    contains_of,
    decision_id_for,
    disjoint_of,
    encode_fresh,
    encode_fresh_many,
    request_id_of,
)
from banditroute.core.join_policy import JoinPolicy
from banditroute.served import Served, served_by_router

TAG_DECISIONS = 0
TAG_FEEDBACK = 1
TAG_WORKER = 2
"""Decisions a worker's decide loop published (they carry its header), whether they reach the join in memory or
through the decisions reader: a source of their own, so joins at their offsets stay in order per source."""


def source_id(partition: int, tag: int) -> int:
    """Watermark key of one input partition of one topic."""
    return partition * 4 + tag


def source_partition(src: int) -> int:
    """The input partition of watermark key ``src`` (:func:`source_id`): the join's partition of the outcome."""
    return src // 4


@dataclass(frozen=True, slots=True)
class Rejection:
    """Feedback that is counted and dead-lettered, never learned; carries what the dead letter needs."""

    reason: str  # a DeadLetterReason value
    error: str
    raw: bytes
    partition: int
    offset: int


@dataclass(slots=True)
class JoinResult:
    """What one input record produced."""

    outcomes: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def merge(self, other: JoinResult) -> None:
        self.outcomes.extend(other.outcomes)
        self.rejections.extend(other.rejections)
        for k, v in other.counters.items():
            self.count(k, v)


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """One feedback event as the join sees it: the decoded fields plus where it came from."""

    fields: dict[str, Any]
    raw: bytes
    partition: int
    offset: int

    @property
    def src(self) -> int:
        return source_id(self.partition, TAG_FEEDBACK)


_FIRST = itemgetter(0)
_SECOND = itemgetter(1)
_THIRD = itemgetter(2)
_TASK_TYPE = itemgetter(3)
_CAPPED = itemgetter(10)

COMPACT_MIN = 1024
"""A partition's deadline heap is rebuilt without the entries given up once they are this many and half of it."""
KEEP_RETRY_S = 5.0
"""How long a resolved entry the join's commit has not passed yet waits before it is checked again."""


class JoinLogic:
    """Join decisions and feedback held in ``pending`` (request_id -> encoded :class:`Pending`).

    ``early`` holds feedback that arrived before its decision (the two topics are read independently). It is
    joined when the decision arrives, or dead-lettered as ``unknown_request`` once a tick in the decisions
    partition that was *sent after the feedback was parked* has been read: a decision is appended before its
    client can even send feedback, so a later tick in the same partition proves no decision is coming. A
    backstop (``early_max_s``) bounds memory if ticks ever stop.
    Deadlines are indexed in memory per partition, so each partition's ticks expire that partition's entries
    and every emitted outcome's watermark source stays consistent.
    """

    def __init__(
        self,
        pending: MutableMapping[str, bytes],
        early: MutableMapping[str, bytes],
        join_policy: Callable[[str], JoinPolicy],
        *,
        early_max_s: float = 600.0,
        clock_margin_s: float = 1.0,
        max_capped: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.pending = pending
        self.max_capped = max_capped
        """Capped decisions (``reasons.capped`` set: a task type past ``limits.max_task_types`` or a tenant past
        its cap) waiting for feedback at most, over the partitions held (None: no bound); see :meth:`_give_up`."""
        self._capped: dict[int, deque[str]] = {}
        """Per partition, capped decisions in the order they came (ids already resolved leave lazily)."""
        self._capped_waiting: set[str] = set()
        """Request ids of the capped decisions still waiting, over every partition: an exact count, so
        :meth:`_give_up` returns at once while it is within the bound."""
        self._given_up: dict[int, int] = {}  # per partition, deadline heap entries left by given-up decisions
        self.given_up = 0
        """Capped decisions given up since this join was made (also counted as ``capped_given_up``)."""
        self.early = early
        self.join_policy = join_policy
        self.early_max_s = early_max_s
        self.clock_margin_s = clock_margin_s
        self._deadlines: dict[int, Deadlines] = {}
        self._early_deadlines: dict[int, list[tuple[float, str]]] = {}
        self._hold = getattr(pending, "hold", None)  # a PendingStore keeps fresh entries in memory only
        self._hold_new: Callable[[list[str], Collection[str], list[bytes]], bool] | None = getattr(
            pending, "hold_new", None
        )
        self.failed_at = 0
        """Index of the decision the last :meth:`on_served` that raised failed on."""
        self.unresolved: dict[int, OffsetWindow] = {}
        """Per decisions partition, the offsets of decisions still pending (see :meth:`oldest_unresolved`)."""
        self.unacknowledged: dict[int, int] = {}
        """Per decisions partition, the oldest offset of a decision resolved since the join state was last
        acknowledged (:meth:`acknowledged`): its resolution is in memory only, so the commit must not pass it yet."""
        self.committed: dict[int, int] = {}
        """Per decisions partition, the offset the join last committed: a resolved entry at or after it stays
        until the commit passes it (a restart reads the decisions from there again and must find it)."""
        self.keep_uncommitted = False
        """Keep every resolved entry of a partition with no commit recorded yet (set by the worker)."""

    # -- decisions -------------------------------------------------------------------------------------
    def on_decision(
        self, decision: dict[str, Any], partition: int, offset: int, now_s: float, tag: int = TAG_DECISIONS
    ) -> JoinResult:
        """Record a published decision so its feedback can be joined (``tag``: its watermark source)."""
        result = JoinResult()
        served = served_by_router(decision)
        if served is not None:  # else nothing served by the router: nothing to learn
            self.on_served([(partition, offset, served)], now_s, tag, result)
        return result

    def on_served(
        self, decisions: Iterable[tuple[int, int, Served]], now_s: float, tag: int, result: JoinResult
    ) -> None:
        """Record decisions that serve a model, each as ``(partition, offset, served fields)`` (the decide
        loop's handoff); what they produce (redelivered joins, duplicates, joins of early feedback, capped
        decisions given up) goes to ``result``. A fresh decision (the usual case) is encoded straight from its
        fields. When it raises, :attr:`failed_at` is the index of the decision it failed on (the decisions
        before it are taken; a failure before the first decision is taken blames that one)."""
        if type(decisions) is list and self._served_fresh(decisions, now_s):
            return
        i = 0
        try:
            pending_get, early_pop, hold = self.pending.get, self.early.pop, self._hold
            in_pending, in_early = contains_of(self.pending), contains_of(self.early)
            deadlines: dict[str, tuple[int, float]] = {}  # per task type: one clock for the call
            # the partition of the previous decision, whose offset window and deadline heap are at hand (a
            # handoff holds runs of one partition)
            last = -1
            window: OffsetWindow | None = None
            heap = Deadlines()
            for i, (partition, offset, served) in enumerate(decisions):  # noqa: B007 - i: the except
                request_id = served[0]
                if in_pending(request_id) or in_early(request_id):  # the usual decision is in neither
                    held = pending_get(request_id)
                    parked = early_pop(request_id, None) if held is None else None
                    if held is not None or parked is not None:
                        self._decision_slow(served, partition, offset, now_s, tag, held, parked, result)
                        last = -1  # it may have made the partition's window or heap
                        continue
                task_type = served[3]
                deadline = deadlines.get(task_type)
                if deadline is None:
                    deadline_ms = round((now_s + self.join_policy(task_type).wait_s) * 1000)
                    deadline = deadlines[task_type] = (deadline_ms, deadline_ms / 1000.0)
                value = encode_fresh(served, deadline[0], offset)
                if partition != last or window is None:
                    last = partition
                    window = self.unresolved.get(partition)
                    if window is None:
                        window = self.unresolved[partition] = OffsetWindow()
                    known = self._deadlines.get(partition)
                    if known is None:
                        known = self._deadlines[partition] = Deadlines()
                    heap = known
                window.add(offset)
                if hold is not None:
                    hold(request_id, value)
                else:
                    self.pending[request_id] = value
                heap.push(deadline[1], request_id)
                if served[10]:  # capped
                    self._track_capped(partition, request_id, result)
        except Exception:
            self.failed_at = i
            raise

    def _served_fresh(self, decisions: list[tuple[int, int, Served]], now_s: float) -> bool:
        """:meth:`on_served` of a handoff whose decisions are all fresh (none held, none with feedback parked, no
        request twice), the usual one: the same entries, offsets, deadlines and capped queues, by a batch's
        steps (one comprehension step per decision to encode, the rest C-level iterators). False, with nothing
        changed, where a decision needs the per-decision path, or something fails before the entries are held
        (the per-decision path then fails on the same decision, with the decisions before it taken)."""
        hold_new = self._hold_new
        if hold_new is None or not decisions:
            return False
        try:
            served = list(map(_THIRD, decisions))
            request_ids = list(map(_FIRST, served))
            ids = set(request_ids)
            # none pending yet is checked by hold_new, which holds them (one look-up per decision)
            if len(ids) != len(request_ids) or not disjoint_of(self.early)(ids):
                return False
            capped = list(map(_CAPPED, served))
            capped_ids: list[str] = []
            capped_partitions: list[int] = []
            if any(capped):
                capped_ids = list(compress(request_ids, capped))
                capped_partitions = list(compress(map(_FIRST, decisions), capped))
                if not self._capped_untouched(capped_ids, capped_partitions):
                    return False
            policy = self.join_policy
            deadline_ms = {t: round((now_s + policy(t).wait_s) * 1000) for t in set(map(_TASK_TYPE, served))}
            values = encode_fresh_many(decisions, deadline_ms)
            if not hold_new(request_ids, ids, values):
                return False  # one was pending already: nothing changed
        except Exception:
            return False
        offsets = list(map(_SECOND, decisions))
        deadline_s = {t: ms / 1000.0 for t, ms in deadline_ms.items()}
        first = next(iter(deadline_s.values()))  # the usual handoff: one task type, one deadline
        deadlines = (
            None if len(deadline_s) == 1 else list(map(deadline_s.__getitem__, map(_TASK_TYPE, served)))
        )
        start, n = 0, len(offsets)
        for partition, run in groupby(map(_FIRST, decisions)):  # a handoff holds runs of one partition
            end = start + len(list(run))
            whole = not start and end == n
            self._hold_run(
                partition,
                offsets if whole else offsets[start:end],
                request_ids if whole else request_ids[start:end],
                first if deadlines is None else deadlines[start:end],
            )
            start = end
        if capped_ids:
            self._capped_waiting.update(capped_ids)
            held = set(capped_partitions)
            for partition in held:
                queue = self._capped.get(partition)
                if queue is None:
                    queue = self._capped[partition] = deque()
                queue.extend(
                    capped_ids
                    if len(held) == 1
                    else compress(capped_ids, map(partition.__eq__, capped_partitions))
                )
        return True

    def _capped_untouched(self, request_ids: list[str], partitions: list[int]) -> bool:
        """Whether :meth:`_track_capped` of these fresh capped decisions (``partitions``: each one's, in order)
        would only queue them: none given up (the bound holds after the last) and no queue rebuilt (were one, it
        would be at its partition's first, where the queue is longest against the decisions waiting)."""
        limit, waiting = self.max_capped(), self._capped_waiting
        if limit is not None and len(waiting) + len(request_ids) > limit:
            return False
        if not waiting.isdisjoint(request_ids):
            return False
        for partition in set(partitions):
            k = partitions.index(partition)
            queued = len(self._capped.get(partition, ()))
            if queued + 1 > 2 * (len(waiting) + k + 1) + COMPACT_MIN:
                return False
        return True

    def _hold_run(
        self, partition: int, offsets: list[int], request_ids: list[str], deadline_s: float | list[float]
    ) -> None:
        """A run of fresh decisions of one partition (held already): their offsets and deadlines (one for the
        run, or each decision's): one deadline index entry per deadline of the run."""
        window = self.unresolved.get(partition)
        if window is None:
            window = self.unresolved[partition] = OffsetWindow()
        window.add_many(offsets)
        heap = self._deadlines.get(partition)
        if heap is None:
            heap = self._deadlines[partition] = Deadlines()
        if not isinstance(deadline_s, list):
            heap.push_run(deadline_s, request_ids)
            return
        for due in dict.fromkeys(deadline_s):  # each distinct deadline, in the order first met
            heap.push_run(due, list(compress(request_ids, map(due.__eq__, deadline_s))))

    def _decision_slow(
        self,
        served: Served,
        partition: int,
        offset: int,
        now_s: float,
        tag: int,
        held: bytes | None,
        parked: bytes | None,
        result: JoinResult,
    ) -> None:
        """A decision whose request is already in the join (``held``) or whose feedback came first (``parked``)."""
        request_id = served[0]
        src = source_id(partition, tag)
        if held is not None:
            entry = Pending.decode(held, request_id)
            if entry.status == JOINED and request_id in self.early:
                self._drop_stale_parking(request_id, entry, result)
            if (entry.joined_src, entry.joined_off) == (src, offset) and entry.outcome:
                # This very decision record completed a join before a crash: publish that outcome again
                # (same position, so the learner skips it if it was learnt already).
                result.outcomes.append(entry.outcome)
                result.count("redelivered_join")
                return
            result.count("duplicate_decisions")  # re-decided after a crash: the first decision stands
            return
        assert parked is not None
        task_type, capped = served[3], served[10]
        # served[1:10] are Pending's first nine fields, in order (decision_id .. policy)
        entry = Pending(*served[1:10], deadline_s=now_s + self.join_policy(task_type).wait_s, dec_off=offset)
        p = orjson.loads(parked)
        fb = FeedbackRecord(p["fb"], bytes.fromhex(p["raw"]), p["p"], p["o"])
        self._join(request_id, entry, fb, src, offset, now_s, partition, result)
        if entry.status == PENDING:  # the parked feedback was rejected: the decision still waits
            self._store(request_id, entry, partition)
            if capped:
                self._track_capped(partition, request_id, result)

    def _drop_stale_parking(self, request_id: str, entry: Pending, result: JoinResult) -> None:
        """Remove feedback still parked for a request whose entry joined that very record: the removal was staged
        with the join, but the join table is written first (kafka/staged.py ``flush_acknowledged``), and the worker
        stopped, or the partition moved, in between. Left, a tick would dead-letter it as ``unknown_request``."""
        parked = orjson.loads(self.early[request_id])
        if (parked.get("p"), parked.get("o")) == (entry.fb_part, entry.fb_off):
            del self.early[request_id]
            result.count("stale_parking_removed")

    def _store(self, request_id: str, entry: Pending, partition: int, *, again: bool = False) -> None:
        """Write ``entry`` (``again``: a resolved entry resolved anew, a late join of an expired decision)."""
        entry.deadline_s = round(entry.deadline_s * 1000) / 1000.0  # as stored: the heap and the table agree
        value = entry.encode(request_id)
        if entry.status == PENDING and entry.dec_off >= 0:
            self.unresolved.setdefault(partition, OffsetWindow()).add(entry.dec_off)
            if self._hold is not None:
                self._hold(request_id, value)
            else:
                self.pending[request_id] = value
        else:
            self._resolved(entry, partition, again)
            self.pending[request_id] = value
        deadlines = self._deadlines.get(partition)
        if deadlines is None:
            deadlines = self._deadlines[partition] = Deadlines()
        deadlines.push(entry.deadline_s, request_id)

    def _resolved(self, entry: Pending, partition: int, again: bool = False) -> None:
        if entry.dec_off < 0:
            return
        window = self.unresolved.get(partition)
        if window is not None:
            window.remove(entry.dec_off)
        if again:
            # its first resolution (the expiry) holds the commit until acknowledged; once acknowledged the commit
            # may have passed the decision, and holding it now would move the commit back (a restart from there
            # would take every decision since whose resolution was deleted for one still pending)
            return
        oldest = self.unacknowledged.get(partition)
        if oldest is None or entry.dec_off < oldest:
            self.unacknowledged[partition] = entry.dec_off

    def oldest_unresolved(self, partition: int) -> int | None:
        """The offset of the oldest decision in ``partition`` still waiting for feedback (None: none waits)."""
        window = self.unresolved.get(partition)
        return None if window is None else window.oldest()

    def oldest_unacknowledged(self, partition: int) -> int | None:
        """The offset of the oldest decision in ``partition`` resolved in memory but not yet acknowledged."""
        return self.unacknowledged.get(partition)

    def acknowledged(self) -> None:
        """Every resolution so far is acknowledged (the caller's flush of the join table returned)."""
        self.unacknowledged = {}

    def forget_held(self) -> None:
        """Let go of every partition (before a rebalance): pending entries and their offsets; the decisions
        topic has them, and whoever owns the partitions next reads them from the committed offset."""
        held = getattr(self.pending, "held", None)
        if held is not None:
            held.clear()
        self._capped = {}
        self._capped_waiting = set()
        self.unresolved = {}
        # unacknowledged stays until a flush is acknowledged: a failed flush's writes are staged again in memory,
        # so the decisions read again find their resolution there (not pending) and nothing else holds the commit
        self.committed = {}

    # -- feedback --------------------------------------------------------------------------------------
    def on_feedback(self, fb: FeedbackRecord, now_s: float, result: JoinResult | None = None) -> JoinResult:
        """Join one feedback event; what it produces goes to ``result`` (a new one if not given), returned."""
        if result is None:
            result = JoinResult()
        request_id = fb.fields.get("request_id") or request_id_of(str(fb.fields.get("decision_id")))
        raw = self.pending.get(request_id)
        if raw is None:
            if request_id in self.early:
                parked = orjson.loads(self.early[request_id])
                # the parked record itself, read again (a reader restarted): it is waiting already
                if parked.get("p") == fb.partition and parked.get("o") == fb.offset:
                    return result
                self._reject(
                    result, fb, "duplicate_feedback", f"request {request_id!r} already has feedback waiting"
                )
                return result
            deadline = now_s  # parked at; see on_decisions_tick
            self.early[request_id] = compact(
                orjson.dumps(
                    {
                        "fb": fb.fields,
                        "raw": fb.raw.hex(),
                        "p": fb.partition,
                        "o": fb.offset,
                        "deadline": deadline,
                    }
                )
            )
            heapq.heappush(self._early_deadlines.setdefault(fb.partition, []), (deadline, request_id))
            result.count("parked_feedback")
            return result
        self._join(
            request_id, Pending.decode(raw, request_id), fb, fb.src, fb.offset, now_s, fb.partition, result
        )
        return result

    @staticmethod
    def _reject(result: JoinResult, fb: FeedbackRecord, reason: str, error: str) -> None:
        result.rejections.append(Rejection(reason, error, fb.raw, fb.partition, fb.offset))
        result.count(reason)

    def _join(
        self,
        request_id: str,
        entry: Pending,
        fb: FeedbackRecord,
        src: int,
        offset: int,
        now_s: float,
        partition: int,
        result: JoinResult,
    ) -> None:
        fields = fb.fields
        if fields.get("decision_id") not in (None, entry.decision_id):
            self._reject(
                result,
                fb,
                "unknown_request",
                f"decision_id {fields.get('decision_id')!r} does not match request {request_id!r}",
            )
            return
        if entry.status == JOINED:
            if (entry.fb_part, entry.fb_off) == (fb.partition, fb.offset) and entry.outcome:
                # The very feedback record that was joined, delivered again after a crash: publish the stored
                # outcome again at its original position; the learner skips it if it was learnt already.
                result.outcomes.append(entry.outcome)
                result.count("redelivered_feedback")
                return
            if (entry.fb_part, entry.fb_off) == (fb.partition, fb.offset):
                # the very late feedback record that was not learnt (learn_late off), read again: the same dead
                # letter as the first time (until review21: duplicate_feedback, "already joined")
                self._reject(
                    result,
                    fb,
                    "late_feedback",
                    f"feedback for {request_id!r} arrived after the "
                    f"{self.join_policy(entry.task_type).wait_s:g} s reward window",
                )
                return
            self._reject(
                result,
                fb,
                "duplicate_feedback",
                f"request {request_id!r} was already joined (idempotency key {entry.idempotency_key!r})",
            )
            return
        if fields.get("model") not in (entry.model, *entry.fallbacks):
            self._reject(
                result,
                fb,
                "model_mismatch",
                f"feedback names model {fields.get('model')!r} but the decision routed to {entry.model!r} "
                f"with fallbacks {list(entry.fallbacks)}",
            )
            return
        late = entry.status == EXPIRED
        policy = self.join_policy(entry.task_type)
        if late and entry.outcome is not None and entry.outcome.get("kind") == "timeout":
            # its default reward was learnt at the deadline: learning this one too would learn the decision
            # twice, so it is never learnt (whatever learn_late says); the entry stays as the expiry left it,
            # so its tick still publishes the default reward again if read again
            self._reject(
                result,
                fb,
                "late_feedback",
                f"feedback for {request_id!r} arrived after the {policy.wait_s:g} s reward window, "
                "whose default reward was learnt",
            )
            return
        entry.status = JOINED
        self._capped_waiting.discard(request_id)
        entry.joined_src, entry.joined_off = src, offset
        entry.fb_part, entry.fb_off = fb.partition, fb.offset
        entry.idempotency_key = fields.get("idempotency_key")
        entry.deadline_s = max(entry.deadline_s, now_s + policy.keep_joined_s)
        learn = not late or policy.learn_late
        outcome = self._outcome(request_id, entry, fields, src, offset, "late" if late else "feedback", now_s)
        entry.outcome = outcome if learn else None
        self._store(request_id, entry, partition, again=late)
        if late:
            if not policy.learn_late:
                self._reject(
                    result,
                    fb,
                    "late_feedback",
                    f"feedback for {request_id!r} arrived after the {policy.wait_s:g} s reward window",
                )
                return
        result.outcomes.append(outcome)
        result.count("late_feedback" if late else "joined")

    @staticmethod
    def _outcome(
        request_id: str, entry: Pending, fb: dict[str, Any], src: int, offset: int, kind: str, now_s: float
    ) -> dict[str, Any]:
        return {
            "kind": kind,
            "at_s": now_s,
            "task_key": entry.task_key,
            "task_type": entry.task_type,
            "tenant": entry.tenant,
            "request_id": request_id,
            "decision_id": entry.decision_id,
            "chosen": entry.model,
            "model": fb.get("model", entry.model),
            "quality": fb.get("quality"),
            "cost_usd": fb.get("cost_usd"),
            "tokens_in": fb.get("tokens_in"),
            "tokens_out": fb.get("tokens_out"),
            "latency_ms": fb.get("latency_ms"),
            "error": fb.get("error"),
            "propensity": entry.propensity,
            "state_version": entry.state_version,
            "policy": entry.policy,
            "src": src,
            "off": offset,
        }

    # -- the clock -------------------------------------------------------------------------------------
    def rebuild_index(self, partition_of: Callable[[str], int]) -> list[str]:
        """Rebuild the deadline index from the tables (after recovery or a rebalance). Returns the keys of the
        entries left out because they do not decode (records on the tables' changelogs that no join wrote: one
        must not stop the join); they stay in the tables, where nothing else looks them up but a decision or
        feedback naming such a key (the join fails on that one, and dead-letters it as ``internal_error``)."""
        bad: list[str] = []
        self._deadlines = {}
        for k, v in list(self.pending.items()):
            try:
                entry = Pending.decode(v, k)
            except Exception:  # anything written there by someone else: no index entry
                bad.append(k)
                continue
            partition = partition_of(k)
            heap = self._deadlines.get(partition)
            if heap is None:
                heap = self._deadlines[partition] = Deadlines()
            heap.push(entry.deadline_s, k)
            if entry.status == EXPIRED and entry.outcome is not None and entry.outcome["kind"] == "timeout":
                # due again at the tick that expired it, should that tick be read again (see on_tick)
                heap.push(entry.outcome["at_s"], k)
        self._early_deadlines = {}
        for k, v in list(self.early.items()):
            try:
                deadline = float(orjson.loads(v)["deadline"])
            except Exception:  # as above
                bad.append(k)
                continue
            heapq.heappush(self._early_deadlines.setdefault(partition_of(k), []), (deadline, k))
        return bad

    def on_tick(self, partition: int, offset: int, sent_at_s: float) -> JoinResult:  # noqa: C901
        """A tick sent at ``sent_at_s`` was read from feedback ``partition``: expire what is due there
        (timeouts, old joined entries and unclaimed early feedback).

        The clock is the tick's send time less ``clock_margin_s``, not the time it is read: feedback produced
        before that is ahead of the tick in the partition and has been read, so an entry due by then has
        really had its window. A join that reads feedback minutes behind (overload) thus never expires a
        decision whose feedback is still waiting in the backlog. A tick is a record in the feedback topic, so a
        default-reward outcome it produces has a watermark position in the feedback source like any other.
        """
        now_s = sent_at_s - self.clock_margin_s
        result = JoinResult()
        src = source_id(partition, TAG_FEEDBACK)
        self._give_up(partition, result)
        heap = self._deadlines.get(partition)
        if heap is None:
            heap = Deadlines()
        while (request_id := heap.pop_due(now_s)) is not None:
            raw = self.pending.get(request_id)
            if raw is None:
                continue
            entry = Pending.decode(raw, request_id)
            if (
                entry.status == EXPIRED
                and entry.outcome
                and (entry.joined_src, entry.joined_off) == (src, offset)
            ):
                # This very tick expired it before a restart (rebuild_index): publish its default reward again,
                # at its position, in order with the outcomes of the feedback read again before it
                result.outcomes.append(entry.outcome)
                result.count("redelivered_timeout")
                continue
            if entry.deadline_s > now_s:
                continue  # a later deadline was pushed for it
            if entry.status == PENDING:
                policy = self.join_policy(entry.task_type)
                result.count("reward_timeouts")
                if policy.on_timeout == "default_reward":
                    default = {"model": entry.model, "quality": policy.default_reward}
                    outcome = self._outcome(request_id, entry, default, src, offset, "timeout", now_s)
                    result.outcomes.append(outcome)
                    # kept with the expiry, and the tick's position: read again after a restart or a rebalance
                    # (the feedback reader commits past the tick only once the reward is acknowledged), the tick
                    # publishes it again; nothing else would (the decision read again finds it expired)
                    entry.outcome = outcome
                    entry.joined_src, entry.joined_off = src, offset
                entry.status = EXPIRED
                self._capped_waiting.discard(request_id)
                entry.deadline_s = now_s + policy.keep_joined_s
                self._store(request_id, entry, partition)
                continue
            kept_from = self.committed.get(partition, -1 if self.keep_uncommitted else None)
            if kept_from is not None and entry.dec_off >= kept_from:
                # a restart would read this decision again: keep its resolution until the commit passes it
                heap.push(now_s + KEEP_RETRY_S, request_id)
                continue
            del self.pending[request_id]
            result.count("expired_entries")
        result.merge(
            self._expire_early(partition, now_s - self.early_max_s, f"within {self.early_max_s:g} s")
        )
        return result

    def _track_capped(self, partition: int, request_id: str, result: JoinResult) -> None:
        """A capped decision now waits in ``partition``: queue it and give up what is past the bound."""
        queue = self._capped.get(partition)
        if queue is None:
            queue = self._capped[partition] = deque()
        waiting = self._capped_waiting
        queue.append(request_id)
        waiting.add(request_id)
        if len(queue) > 2 * len(waiting) + COMPACT_MIN:  # mostly ids resolved since: drop them
            self._capped[partition] = deque(r for r in queue if r in waiting)
        self._give_up(partition, result)

    def _give_up(self, partition: int, result: JoinResult) -> None:
        """Keep at most ``max_capped()`` capped decisions waiting, over every partition held: past it, the
        oldest ones of ``partition`` are given up (each partition gives up its own at its next capped decision
        or tick, so the bound holds within a tick). A given-up decision leaves memory at once (no outcome, not
        even a default reward; a tombstone in the table if its entry was flushed) and no longer holds back the
        join's commit; its feedback, if it ever comes, is dead-lettered as ``unknown_request``. Listed and
        established task types are never given up (a tenant past ``max_tenants_per_task_type`` is capped, and
        its decisions can be). The count is exact (a capped decision leaves it when it is joined, expires or
        is given up), so within the bound this returns at once, and nothing is given up early."""
        limit = self.max_capped()
        waiting = self._capped_waiting
        if limit is None or len(waiting) <= limit:
            return
        queue = self._capped.get(partition)
        if not queue:
            return
        pending, window = self.pending, self.unresolved.get(partition)
        given_up = 0
        while queue and len(waiting) > limit:
            request_id = queue.popleft()
            if request_id not in waiting:
                continue  # joined or expired since
            waiting.discard(request_id)
            raw = pending.get(request_id)
            if raw is None:
                continue
            entry = Pending.decode(raw, request_id)
            del pending[request_id]
            if window is not None and entry.dec_off >= 0:
                window.remove(entry.dec_off)
            given_up += 1
        if not queue:
            del self._capped[partition]
        if given_up:
            self.given_up += given_up
            result.count("capped_given_up", given_up)
            self._compact(partition, given_up)

    def _compact(self, partition: int, removed: int) -> None:
        """Drop a partition's deadline heap entries of decisions no longer held, once they are many."""
        stale = self._given_up[partition] = self._given_up.get(partition, 0) + removed
        heap = self._deadlines.get(partition)
        if heap is None or stale < COMPACT_MIN or stale * 2 < len(heap):
            return
        heap.keep(contains_of(self.pending))
        self._given_up[partition] = 0

    def on_decisions_tick(self, partition: int, sent_at_s: float) -> JoinResult:
        """A tick read from decisions ``partition``: feedback parked before it was sent has no decision."""
        return self._expire_early(partition, sent_at_s - self.clock_margin_s, "before a later tick")

    def _expire_early(self, partition: int, parked_before_s: float, how: str) -> JoinResult:
        result = JoinResult()
        heap = self._early_deadlines.get(partition, [])
        while heap and heap[0][0] < parked_before_s:
            _, request_id = heapq.heappop(heap)
            parked = self.early.pop(request_id, None)
            if parked is None:
                continue
            p = orjson.loads(parked)
            self._reject(
                result,
                FeedbackRecord(p["fb"], bytes.fromhex(p["raw"]), p["p"], p["o"]),
                "unknown_request",
                f"no decision for request {request_id!r} is waiting for feedback (checked {how}): none was "
                "published, or it was a capped decision given up (limits.max_capped_in_flight); feedback must "
                "name a request the router decided",
            )
        return result

    def sizes(self) -> dict[str, int]:
        """Sizes of the join's in-memory structures (for the memory probe)."""
        return {
            "held": len(getattr(self.pending, "held", ())),
            "deadlines": sum(map(len, self._deadlines.values())),
            "early_deadlines": sum(map(len, self._early_deadlines.values())),
            "capped_queued": sum(map(len, self._capped.values())),
            "capped_waiting": len(self._capped_waiting),
            "given_up": self.given_up,
        }

    def in_flight(self) -> int:
        """Entries held in the join table (pending, joined and expired ones kept for duplicate detection)."""
        return len(self.pending)


__all__ = [
    "TAG_DECISIONS",
    "TAG_FEEDBACK",
    "FeedbackRecord",
    "JoinLogic",
    "JoinPolicy",
    "JoinResult",
    "Pending",
    "Rejection",
    "decision_id_for",
    "request_id_of",
    "source_id",
    "source_partition",
]
