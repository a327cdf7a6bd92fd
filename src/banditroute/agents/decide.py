"""Decide: one routing decision per request, from the freshest posterior this worker holds.

Deciding never waits on the feedback path: it reads states from a :class:`StateView` that the learner and the
state-topic reader keep current. :class:`DecideLogic` turns a validated request into the decision event (as a
JSON-ready dict, built directly rather than through pydantic on this hot path; a test validates it against
:class:`~banditroute.events.RoutingDecision`). :mod:`banditroute.kafka.decide_service` runs it on Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
from orjson import OPT_SERIALIZE_NUMPY, dumps

from banditroute import native
from banditroute.agents.pending import decision_id_for
from banditroute.config import Registry
from banditroute.core import Choice, Constraints, ModelSpec, TaskPolicy, TaskState, apply_rules, choose
from banditroute.core.block import Block
from banditroute.core.choose import hot_block
from banditroute.core.models import SampledUtilities
from banditroute.core.rules import Rule, RuleEffect
from banditroute.events import RoutingRequest
from banditroute.kafka.fast_request import FastRequest
from banditroute.limits import Admission, Verdict
from banditroute.messages import PlainRequest
from banditroute.routing import RoutingSnapshot, StateView, TaskRoute
from banditroute.served import Decided, Served, served_fields

POLICY_NAME = "thompson"
POLICY_VERSION = "1"

__all__ = ["POLICY_NAME", "POLICY_VERSION", "DecideLogic", "StateView", "request_constraints"]


NO_CONSTRAINTS = Constraints()
"""What a request without filters maps to: one shared object, so the core's plan cache hits by identity."""
Request = RoutingRequest | PlainRequest | FastRequest
"""What the decide logic reads: the request model, a local-mode client's plain request, or the decide loop's
common request (:mod:`banditroute.kafka.fast_request`)."""
MAX_RULE_EFFECTS = 1024
"""Distinct constraints of applied rules kept as one object each (for the core's caches)."""
MAX_PREPARED = 4096
"""Task types and tenants whose prepared answer (:meth:`DecideLogic._prepare`) is kept."""
_PLAIN_REQUESTS = (PlainRequest, FastRequest)
"""Requests without lists, limits or objective by construction (their constraints are no constraints)."""


def request_constraints(request: Request) -> Constraints:
    """The request's own filters as the core's :class:`Constraints`."""
    if type(request) in _PLAIN_REQUESTS:
        return NO_CONSTRAINTS
    limits = request.constraints
    if (
        request.candidates is None
        and not request.exclude
        and request.objective is None
        and limits.max_cost_usd is None
        and limits.max_latency_ms is None
        and not limits.capabilities
    ):
        return NO_CONSTRAINTS
    override: dict[str, Any] | None = None
    if request.objective is not None:
        override = {k: v for k, v in request.objective.model_dump().items() if v is not None}
        if "kind" in override:
            override["objective"] = override.pop("kind")
    return Constraints(
        allow=frozenset(request.candidates) if request.candidates is not None else None,
        deny=frozenset(request.exclude or ()),
        max_cost_usd=request.constraints.max_cost_usd,
        max_latency_ms=request.constraints.max_latency_ms,
        capabilities=frozenset(request.constraints.capabilities),
        objective_override=override or None,
    )


def _candidates(sampled: Mapping[str, float], means: Mapping[str, float]) -> list[dict[str, Any]]:
    """``reasons``' candidate scores: each eligible model's sampled and mean utility, as Python floats."""
    if type(sampled) is SampledUtilities:  # the block's row: Python floats already, as are the plan's means
        return [
            {"model": m, "sampled_utility": v, "mean_utility": means.get(m, v)} for m, v in sampled.pairs()
        ]
    return [
        {"model": m, "sampled_utility": float(v), "mean_utility": float(means.get(m, v))}
        for m, v in sampled.items()
    ]


def _iso(now_s: float) -> str:
    return datetime.fromtimestamp(now_s, UTC).isoformat().replace("+00:00", "Z")


_MILLIS = tuple(f".{milli:03d}Z" for milli in range(1000))


class _MillisecondClock:
    """ISO 8601 text of a time to the millisecond (``2026-12-01T13:20:00.123Z``), formatted once per second;
    each new millisecond only swaps the last five characters (formatting a datetime took 14-40 µs of CPU in
    the decide path's cold caches, once per millisecond)."""

    __slots__ = ("ms", "text", "_second", "_prefix", "json")

    def __init__(self) -> None:
        self.ms = -1
        """The millisecond (since the epoch) of the last :meth:`iso`."""
        self.text = ""
        """The text of the last :meth:`iso`."""
        self._second = -1
        self._prefix = ""
        self.json = b'""'
        """The JSON string of the last :meth:`iso` (its text in quotes: it needs no escaping)."""

    def iso(self, now_s: float) -> str:
        ms = int(now_s * 1000.0)
        if ms != self.ms:
            second, milli = divmod(ms, 1000)
            if second != self._second:
                self._second = second
                self._prefix = datetime.fromtimestamp(second, UTC).isoformat()[:-6]  # without "+00:00"
            self.ms = ms
            text = self.text = self._prefix + _MILLIS[milli]
            self.json = b'"' + text.encode() + b'"'
        return self.text


_Ready = tuple[
    RoutingSnapshot, str, TaskRoute, TaskState, Constraints, tuple[str, ...], str | None, str | None
]
"""A prepared request: (snapshot, state key, route, state, constraints, applied rules, pinned model, capped)."""
_Prepared = tuple[RoutingSnapshot, str, TaskState | None, list[tuple[dict[str, float], str]], _Ready]
"""A kept answer of :meth:`DecideLogic._prepare`: (snapshot, state key, learnt state (None: the prior), what
:meth:`Admission.check` stamps with the time, the answer)."""


_Hot = tuple[_Ready, Block, "_BlockText", tuple[bytes, bytes, bytes, bytes], str, str | None]
""":attr:`DecideLogic._hot`: (answer, block, block text, request shape text, task type, tenant)."""


def _summarised(decision: dict[str, Any]) -> tuple[Decided, Served | None]:
    """:meth:`DecideLogic.decide_encoded`'s answer for a decision built as a dict."""
    model = decision["model"]
    served = served_fields(decision) if model is not None and not decision["is_default_route"] else None
    summary = (
        decision["task_type"],
        model,
        decision["reasons"]["capped"],
        decision["decision_ms"],
        dumps(decision),
    )
    return summary, served


_MODEL = itemgetter(0)  # of a block row


class _BlockText:
    """The JSON text of a block's rows that does not depend on the request: each row's model, fallbacks,
    propensity (written once per distinct row) and candidates (written for the whole block at once); and, per
    request shape, the text around them (kept on the block: ``Block.memo``)."""

    __slots__ = ("model", "rows", "heads", "shapes", "static", "state_version", "policy_name")

    MAX_SHAPES = 64

    def __init__(self, block: Block) -> None:
        means, filtered, circuit_open, version, policy_name = block.static
        names = block.names
        self.static = (filtered, circuit_open)
        self.state_version = int(version)
        self.policy_name = policy_name or POLICY_NAME
        self.model = {name: b'"model":' + dumps(name) for name in {*names, *map(_MODEL, block.rows)}}
        self.heads: dict[tuple[Any, ...], bytes] = {}
        # each row's text: its head, by the row object (a block's rows of one kind are one tuple), then its
        # candidates (C loops but for the distinct rows)
        ids = list(map(id, block.rows))
        heads = {at: self.head(row) for at, row in dict(zip(ids, block.rows, strict=True)).items()}
        self.rows = _rows_text(list(map(heads.__getitem__, ids)), block.z, names, means)
        """Per row: ``"model":...,"fallbacks":...,"propensity":...,"candidates":[...]``."""
        self.shapes: dict[tuple[Any, ...], tuple[bytes, bytes, bytes, bytes]] = {}

    @staticmethod
    def of(block: Block) -> _BlockText | object:
        """The block's text, or :data:`_NO_TEXT` when its rows are not of the plain form (no eligible closed
        model, or a model without a mean): those decisions are built as dicts."""
        names = block.names
        means = block.static[0]
        if not names or any(name not in means for name in names):
            return _NO_TEXT
        return _BlockText(block)

    def head(self, row: tuple[Any, ...]) -> bytes:
        """A row's text from its model to its propensity (rows of equal values share it)."""
        head = self.heads.get(row)
        if head is not None:
            return head
        model, fallbacks, propensity, _explored = row
        head = self.heads[row] = (
            self.model[model] + b',"fallbacks":' + dumps(fallbacks) + b',"propensity":' + dumps(propensity)
        )
        return head

    def shape(
        self,
        task_type: str,
        tenant: str | None,
        key: str,
        applied: tuple[str, ...],
        capped: str | None,
        version: str,
        worker_id: str | None,
    ) -> tuple[bytes, bytes, bytes, bytes]:
        """The text around a row for one request shape, in :meth:`DecideLogic.decision_dict`'s field order:
        from the request id's closing quote up to ``"model":``, up to the exploration flag, up to ``decided_at``'s
        value, and after ``decision_ms``'s."""
        shape_key = (task_type, tenant, key, applied, capped, version, worker_id)
        shape = self.shapes.get(shape_key)
        if shape is None:
            if len(self.shapes) >= self.MAX_SHAPES:
                self.shapes.clear()
            filtered, circuit_open = self.static
            policy = {"name": self.policy_name, "version": version}
            shape = self.shapes[shape_key] = (
                b'","task_type":' + dumps(task_type) + b',"tenant":' + dumps(tenant) + b",",
                b',"policy":'
                + dumps(policy)
                + b',"state_version":'
                + dumps(self.state_version)
                + b',"reasons":{"filtered":'
                + dumps(dict(filtered) if filtered else {})
                + b',"circuit_open":'
                + dumps(list(circuit_open))
                + b',"exploration":',
                b',"no_eligible":null,"rules":'
                + dumps(list(applied))
                + b',"capped":'
                + dumps(capped)
                + b'},"decided_at":',
                b',"worker_id":'
                + dumps(worker_id)
                + b',"is_default_route":false,"shadow":false,"state_key":'
                + dumps(key)
                + b"}",
            )
        return shape


_NO_TEXT = object()
"""``Block.memo`` of a block whose decisions are built as dicts."""


def _rows_text(heads: list[bytes], z: Any, names: tuple[str, ...], means: Mapping[str, float]) -> list[bytes]:
    """Each row's text: its head, then ``,"candidates":[...]`` of its draws in ``z`` (one column per name). The
    draws are written in one ``dumps`` and split into values; a row is one join of its head, its values and the
    text between them (the same for every row), taken by ``zip`` from the columns (C loops: no text split
    into rows afterwards, no copy of a row to put its head in front)."""
    k = len(names)
    text = dumps(np.ascontiguousarray(z).ravel(), option=OPT_SERIALIZE_NUMPY)[1:-1]
    before = [b'{"model":' + dumps(name) + b',"sampled_utility":' for name in names]
    after = [b',"mean_utility":' + dumps(means[name]) + b"}" for name in names]
    if _NATIVE_ROWS is not None and k:  # the same joins in C, without a bytes object per value
        mids = [after[j] + b"," + before[j + 1] for j in range(k - 1)]
        return _NATIVE_ROWS(heads, text, b',"candidates":[' + before[0], mids, after[k - 1] + b"]")
    values = text.split(b",")
    size = len(heads)
    columns: list[Iterable[bytes]] = [heads, repeat(b',"candidates":[' + before[0], size)]
    for j in range(k):
        columns.append(values[j::k])
        columns.append(repeat(after[j] + (b"," + before[j + 1] if j + 1 < k else b"]"), size))
    return list(map(b"".join, zip(*columns, strict=True)))


_NATIVE_ROWS: Callable[..., list[bytes]] | None = getattr(native.loaded(), "rows_text", None)
""":func:`_rows_text`'s joins in C (``_native.rows_text``), when the extension is there."""
_PLAIN_STEPS = frozenset({"decide_encoded", "_prepare", "_encode_row"})
"""The steps of :meth:`DecideLogic.decide_encoded` that the C lane stands in for (:meth:`DecideLogic.lane_parts`):
replaced on an instance or a subclass, the lane is off."""


class DecideLogic:
    """Request in, decision dict out."""

    keep_row = False
    """Whether :meth:`decide_encoded` leaves :attr:`row` (a subclass's switch; local mode reads it)."""
    row: tuple[Block, int, tuple[bytes, bytes, bytes, bytes], str] | None = None
    """With :attr:`keep_row`: the last decision written from a block row (block, row, the text of its request
    shape, ``decided_at``), else left alone."""

    def __init__(
        self,
        registry: Registry,
        states: StateView,
        rng: np.random.Generator,
        worker_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.states = states
        self.rng = rng
        # the shadow draws from its own stream, so configuring a shadow does not change live decisions
        self.shadow_rng = np.random.default_rng(rng.integers(2**63))
        self.shadow: dict[str, Any] | None = None
        self.worker_id = worker_id
        self.clock = clock
        self._clock = _MillisecondClock()
        self._iso = self._clock.iso
        self._policy_refs: dict[str, dict[str, str]] = {}
        self.admission = Admission()
        """Which task types and tenants get state of their own (policy.yaml ``limits``); decide thread only."""
        self._next_evict = 0.0
        self._rule_effects: dict[Constraints, Constraints] = {}
        self._plain_rules: tuple[
            Sequence[Rule], dict[tuple[str | None, str], tuple[RuleEffect, tuple[str, ...]]]
        ]
        self._plain_rules = ((), {})
        self._prepared: dict[tuple[str, str | None], _Prepared] = {}
        self._lane: tuple[_Hot, float, tuple[Any, ...]] | None = None
        """:meth:`lane_parts`' last answer, for the hot answer and eviction time it was made for."""
        self._hot: _Hot | None = None
        """The last prepared answer that took a block row, its block, the block's text, the request shape's
        text and the request's task type and tenant: the next request of that answer takes the block's next row
        without asking the core's caches (:func:`hot_block`'s checks, on the same objects), while the block has
        rows and its plan holds."""

    def decide(self, request: Request) -> dict[str, Any]:
        """One decision, read from one routing snapshot and one learnt state (both immutable)."""
        t0 = time.perf_counter()
        now_s = self.clock()
        ready = self._prepare(request, now_s)
        if isinstance(ready, Verdict):
            return self.rejection(request, ready, now_s, t0)
        return self._decide_dict(request, ready, None, now_s, t0)

    def decide_encoded(self, request: Request) -> tuple[Decided, Served | None]:
        """:meth:`decide`'s decision as the JSON text of its event (equal in content to ``orjson.dumps`` of
        the dict :meth:`decide` would return for the same snapshot, state and draws) with its summary, and
        what the join keeps of it (None when it serves no model). A decision drawn from a pre-drawn block row
        (the common case: no pin, no shadow) is written from text kept per block and per request shape
        instead of building the dict."""
        t0 = time.perf_counter()
        now_s = self.clock()
        ready = self._prepare(request, now_s)
        if isinstance(ready, Verdict):
            return _summarised(self.rejection(request, ready, now_s, t0))
        snapshot, key, route, state, constraints, applied, pin, capped = ready
        hot = self._hot
        if hot is not None and hot[0] is ready:  # a kept answer, whose block is at hand
            block = hot[1]
            if block.pos < block.size and block.since_s <= now_s < block.until_s and block.rng is self.rng:
                return self._encode_row(request, key, block, hot[2], hot[3], capped, now_s, t0)
        choice: Choice | None = None
        if pin is None and route.shadow is None:
            source = hot_block(state, snapshot.models, route.policy, constraints, self.rng, now_s)
            if isinstance(source, Block):
                text = source.memo
                if text is None:
                    text = source.memo = _BlockText.of(source)
                if isinstance(text, _BlockText):
                    shape = text.shape(
                        request.task_type,
                        request.tenant,
                        key,
                        applied,
                        capped,
                        snapshot.config_version,
                        self.worker_id,
                    )
                    self._hot = (ready, source, text, shape, request.task_type, request.tenant)
                    return self._encode_row(request, key, source, text, shape, capped, now_s, t0)
                choice = source.take()
            else:
                choice = source.fixed
        return _summarised(self._decide_dict(request, ready, choice, now_s, t0))

    def lane_parts(self) -> tuple[Any, ...] | None:
        """The kept hot answer as ``_native.lane`` reads it (the decide loop's common requests decided in C,
        :meth:`~banditroute.kafka.decide_service.DecideService._run`), or None when the next request of its
        task type and tenant might be answered otherwise than by :meth:`decide_encoded` from its block's next
        row: no hot answer, its kept answer no longer what :meth:`_prepare` returns (another snapshot, another
        learnt state), a block without rows or another rng, another clock than ``time.time`` (the lane reads
        the system clock), :attr:`keep_row`, a shadow decision not yet taken, or the decide steps replaced
        (:meth:`decide_encoded`, :meth:`_prepare`, :meth:`_encode_row`). The lane checks the rest per request
        (the eviction time, the block's rows and time window, the clock's second)."""
        hot = self._hot
        if (
            hot is None
            or self.clock is not time.time
            or self.keep_row
            or self.shadow is not None
            or not _PLAIN_STEPS.isdisjoint(self.__dict__)
            or (
                type(self) not in _PLAIN_CLASSES
                and any(getattr(type(self), name) is not getattr(DecideLogic, name) for name in _PLAIN_STEPS)
            )
        ):
            return None
        ready, block, text, shape, task_type, tenant = hot
        known = self._prepared.get((task_type, tenant))
        if (
            known is None
            or known[4] is not ready
            or ready[0] is not self.registry.snapshot
            or self.states.lookup(known[1]) is not known[2]
            or block.rng is not self.rng
            or block.pos >= block.size
        ):
            self._lane = None  # nothing kept alive for a hot answer that is gone
            return None
        kept = self._lane
        if kept is not None and kept[0] is hot and kept[1] == self._next_evict:
            return kept[2]  # the same hot answer (the decide loop asks once per slice of its run)
        capped = ready[7]
        parts = (
            task_type.encode(),
            None if tenant is None else tenant.encode(),
            block,
            text.rows,
            shape,
            self._clock,
            self._next_evict,
            (ready[1], task_type, tenant, text.state_version, text.policy_name, capped is not None),
            (task_type, capped),
            known[3],
        )
        self._lane = (hot, self._next_evict, parts)
        return parts

    def _prepare(self, request: Request, now_s: float) -> Verdict | _Ready:
        """Admission, state, constraints and rules of a request: a rejecting :class:`Verdict`, or what to
        choose with. For a request without metadata or filters of its own (the common one) the answer is kept
        per task type and tenant while the snapshot, the learnt state and the admission slots stay as they
        were (the slots change only at an eviction, which forgets every kept answer); a kept answer is used
        after stamping the request's task type (and tenant) as :meth:`Admission.check` would."""
        snapshot = self.registry.snapshot
        task_type = request.task_type
        if now_s >= self._next_evict:
            self._evict(now_s)
        plain = not request.metadata and type(request) in _PLAIN_REQUESTS
        if plain:
            known = self._prepared.get((task_type, request.tenant))
            if known is not None and known[0] is snapshot and self.states.lookup(known[1]) is known[2]:
                for times, name in known[3]:
                    times[name] = now_s
                return known[4]
        admission = self.admission
        limits = snapshot.limits
        per_tenant = snapshot.is_per_tenant(task_type)
        verdict = admission.check(limits, snapshot.routes, task_type, request.tenant, per_tenant, now_s)
        if verdict.reject is not None:
            return verdict
        key = verdict.key
        route = snapshot.default if verdict.shared else snapshot.route(task_type)
        learnt = self.states.get(key)
        wanted = learnt is None and key in self.states.evicted
        if wanted:
            self.states.want(key)  # read back from the state topic; this decision uses the prior
        state = snapshot.state_for(learnt)
        constraints = request_constraints(request)
        rules = snapshot.rules
        applied: tuple[str, ...] = ()
        pin = None
        if rules:
            if request.metadata:
                effect, applied = apply_rules(rules, request.tenant, task_type, request.metadata)
            else:
                effect, applied = self._rules_without_metadata(rules, request.tenant, task_type)
            if applied:
                constraints = self._with_rules(constraints, effect.constraints)
                pin = effect.pin
        ready = snapshot, key, route, state, constraints, applied, pin, verdict.capped
        if plain and not wanted:
            stamps = admission.stamps(limits, snapshot.routes, task_type, request.tenant, per_tenant, verdict)
            if stamps is not None:
                if len(self._prepared) >= MAX_PREPARED:
                    self._prepared.clear()
                self._prepared[(task_type, request.tenant)] = (snapshot, key, learnt, stamps, ready)
        return ready

    def _decide_dict(
        self, request: Request, ready: _Ready, choice: Choice | None, now_s: float, t0: float
    ) -> dict[str, Any]:
        """The decision dict (and the shadow's) of a prepared request; ``choice`` if already taken."""
        snapshot, key, route, state, constraints, applied, pin, capped = ready
        models = snapshot.models
        if choice is None:
            choice = choose(state, models, route.policy, constraints, self.rng, now_s, pinned=pin)
        decision = self.decision_dict(request, key, choice, applied, now_s, t0, capped)
        if route.shadow is not None:
            self.shadow = self._shadow_decision(
                request, key, state, models, constraints, pin, applied, now_s, route.shadow
            )
        return decision

    def _encode_row(
        self,
        request: Request,
        key: str,
        block: Block,
        text: _BlockText,
        shape: tuple[bytes, bytes, bytes, bytes],
        capped: str | None,
        now_s: float,
        t0: float,
    ) -> tuple[Decided, Served | None]:
        """Take the block's next row and write its decision event (see :meth:`decide_encoded`)."""
        i = block.pos
        block.pos = i + 1
        row = block.rows[i]
        model, fallbacks, propensity, explored = row
        request_id = request.request_id
        decision_id = "d:" + request_id  # decision_id_for, inlined
        # an identifier needs no escaping in JSON: its text is its UTF-8 bytes
        rid = request.rid if type(request) is FastRequest else request_id.encode()
        clock = self._clock
        iso = (
            clock.text if int(now_s * 1000.0) == clock.ms else clock.iso(now_s)
        )  # _iso, its common case inlined
        ms = (time.perf_counter() - t0) * 1000.0
        payload = b"".join(
            (
                b'{"schema_version":1,"decision_id":"d:',  # decision_id_for: "d:" and the request id
                rid,
                b'","request_id":"',
                rid,
                shape[0],
                text.rows[i],
                shape[1],
                b"true" if explored else b"false",
                shape[2],
                clock.json,
                b',"decision_ms":',
                dumps(ms),
                shape[3],
            )
        )
        if self.keep_row:
            self.row = (block, i, shape, iso)
        served: Served = (
            request_id,
            decision_id,
            key,
            request.task_type,
            request.tenant,
            model,
            fallbacks,
            propensity,
            text.state_version,
            text.policy_name,
            capped is not None,
        )
        return (request.task_type, model, capped, ms, payload), served

    def _rules_without_metadata(
        self, rules: Sequence[Rule], tenant: str | None, task_type: str
    ) -> tuple[RuleEffect, tuple[str, ...]]:
        """:func:`apply_rules` for a request without metadata, remembered per tenant and task type for the
        snapshot's rules (the common request asks the same question every time)."""
        cache = self._plain_rules
        if cache[0] is not rules:
            cache = self._plain_rules = (rules, {})
        answers = cache[1]
        answer = answers.get((tenant, task_type))
        if answer is None:
            if len(answers) >= MAX_RULE_EFFECTS:
                answers.clear()
            answer = answers[(tenant, task_type)] = apply_rules(rules, tenant, task_type, None)
        return answer

    def _with_rules(self, constraints: Constraints, effect: Constraints) -> Constraints:
        """``constraints`` merged with the applied rules' ``effect``. For a request without filters of its own
        (the result is ``effect``) equal results are one object, so the core's caches hit by identity."""
        if constraints is not NO_CONSTRAINTS:
            return constraints.merged(effect)
        interned = self._rule_effects.get(effect)
        if interned is None:
            if len(self._rule_effects) >= MAX_RULE_EFFECTS:
                self._rule_effects.clear()
            interned = self._rule_effects[effect] = effect
        return interned

    def _shadow_decision(
        self,
        request: Request,
        key: str,
        state: TaskState,
        models: Sequence[ModelSpec],
        constraints: Constraints,
        pin: str | None,
        applied: tuple[str, ...],
        now_s: float,
        shadow: tuple[str, TaskPolicy],
    ) -> dict[str, Any]:
        """What the shadow candidate would have chosen for the same request and state; it serves nothing."""
        t0 = time.perf_counter()
        name, policy = shadow
        choice = choose(state, models, policy, constraints, self.shadow_rng, now_s, pinned=pin)
        decision = self.decision_dict(request, key, choice, applied, now_s, t0)
        decision["decision_id"] = f"s:{request.request_id}"
        decision["policy"] = {"name": name, "version": self.registry.snapshot.config_version}
        decision["shadow"] = True
        return decision

    def _evict(self, now_s: float) -> None:
        """Give back the slots of task types and tenants idle for ``limits.idle_evict_s`` (checked every 10 s
        at most); their states leave memory through the worker's idle sweep (``Router._evict_idle``)."""
        self._next_evict = now_s + 10.0
        self._prepared.clear()  # the slots may change: kept answers are made again
        idle_s = self.registry.snapshot.limits.idle_evict_s
        if idle_s is not None:
            self.admission.evict_idle(idle_s, now_s)

    def rejection(self, request: Request, verdict: Verdict, now_s: float, t0: float) -> dict[str, Any]:
        """A decision without a model: a cap rejected the request (``reasons.no_eligible`` says which)."""
        return {
            "schema_version": 1,
            "decision_id": decision_id_for(request.request_id),
            "request_id": request.request_id,
            "task_type": request.task_type,
            "tenant": request.tenant,
            "model": None,
            "fallbacks": [],
            "propensity": 1.0,
            "candidates": [],
            "policy": self._policy_ref(POLICY_NAME),
            "state_version": 0,
            "reasons": {
                "filtered": {},
                "circuit_open": [],
                "exploration": False,
                "no_eligible": verdict.reject,
                "rules": [],
                "capped": verdict.capped,
            },
            "decided_at": self._iso(now_s),
            "decision_ms": (time.perf_counter() - t0) * 1000.0,
            "worker_id": self.worker_id,
            "is_default_route": False,
            "shadow": False,
            "state_key": None,
        }

    def _policy_ref(self, name: str) -> dict[str, str]:
        """``{name, version}``: the policy and the configuration version it decided with (one dict each)."""
        version = self.registry.snapshot.config_version
        ref = self._policy_refs.get(name)
        if ref is None or ref["version"] != version:
            ref = self._policy_refs[name] = {"name": name, "version": version}
        return ref

    def is_established(self, request: Request) -> bool:
        """Whether the request's task type is listed or already holds state here (:meth:`Admission.established`)."""
        return self.is_established_type(request.task_type)

    def is_established_type(self, task_type: str) -> bool:
        """:meth:`is_established` for a task type name (the decide loop's spill reads only the name)."""
        if task_type in self.admission.task_types:  # the usual request's: held here (no call further)
            return True
        snapshot = self.registry.snapshot
        return self.admission.established(snapshot.limits, snapshot.routes, task_type)

    def take_shadow(self) -> dict[str, Any] | None:
        """The shadow decision of the last :meth:`decide` call, if a shadow policy is configured."""
        shadow, self.shadow = self.shadow, None
        return shadow

    def decision_dict(
        self,
        request: Request,
        key: str,
        choice: Choice,
        rules: tuple[str, ...],
        now_s: float,
        t0: float,
        capped: str | None = None,
    ) -> dict[str, Any]:
        means = choice.means
        model = choice.model
        filtered = choice.filtered
        no_eligible = choice.no_eligible
        if no_eligible is not None and model is not None:
            # nothing was eligible and the policy relaxed to the cheapest model: a served decision, whose
            # no_eligible must be null (events.RoutingDecision); the relaxation is named among the rules
            rules, no_eligible = (*rules, no_eligible), None
        policy_ref = self._policy_ref(choice.policy_name or POLICY_NAME)
        return {
            "schema_version": 1,
            "decision_id": decision_id_for(request.request_id),
            "request_id": request.request_id,
            "task_type": request.task_type,
            "tenant": request.tenant,
            "model": model,
            "fallbacks": list(choice.fallbacks),
            "propensity": float(choice.propensity) if model is not None else 1.0,
            "candidates": _candidates(choice.sampled, means),
            "policy": policy_ref,
            "state_version": int(choice.state_version),
            "reasons": {
                "filtered": dict(filtered) if filtered else {},
                "circuit_open": list(choice.circuit_open),
                "exploration": bool(choice.explored),
                "no_eligible": no_eligible,
                "rules": list(rules),
                "capped": capped,
            },
            "decided_at": self._iso(now_s),
            "decision_ms": (time.perf_counter() - t0) * 1000.0,
            "worker_id": self.worker_id,
            "is_default_route": False,
            "shadow": False,
            "state_key": key,
        }


_PLAIN_CLASSES = frozenset({DecideLogic})
"""Classes known to keep :data:`_PLAIN_STEPS` as :class:`DecideLogic` has them (no look-up per call)."""
