"""Local mode of the client: decide in this process, from the same routing snapshot a worker uses.

A worker decides from a :class:`~banditroute.routing.RoutingSnapshot` (configuration + catalog) and a
:class:`~banditroute.routing.StateView` (learnt posteriors), both kept current by a
:class:`~banditroute.kafka.state_reader.StateReader` tailing the compacted ``state`` and ``catalog`` topics.
:class:`LocalRouter` builds exactly those three objects in the client and runs the worker's own
:class:`~banditroute.agents.decide.DecideLogic` on them, so rules, constraints, fallbacks, circuit state,
canary and shadow, pacing and propensities are the worker's. Each decision (and shadow decision) is queued
for the ``decisions`` (``shadow-decisions``) topic by a :class:`~banditroute.kafka.decision_publisher.DecisionPublisher`
and joined and learnt by the workers like their own; ``worker_id`` names the client.

What is local to the process: the sampler's random stream, the admission slots of ``limits`` (per process,
as per worker) and any per-model capacity a policy keeps in memory. Memory: only the states of the task types
this client routes (or is given in ``task_types``) are held; of every other state key only its place in the
state topic is kept (about 150 bytes), and its state is read from there the first time it is routed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from banditroute.agents.decide import DecideLogic, Request
from banditroute.config import Registry, RouterConfig, config_dir_of
from banditroute.core.block import Block
from banditroute.events import CandidateScore, DecisionReasons, PolicyRef, RoutingDecision, RoutingRequest
from banditroute.kafka.decision_publisher import DecisionPublisher
from banditroute.kafka.state_reader import StateReader, StateReadFailed
from banditroute.limits import SHARED_KEY
from banditroute.messages import _new, _set_dict, _set_extra, _set_fields_set, _set_private, trusted
from banditroute.routing import StateView, task_type_of
from banditroute.settings import Settings

log = logging.getLogger("banditroute.client")

NOT_LOADED = "not_loaded"
STALE = "stale"
OUTBOX_FULL = "outbox_full"
CLOSED = "closed"
RESTARTS_AFTER_S = 1.0
QUIET_FETCH_WAIT_MS = 250
"""How long the broker may hold the client's fetch of quiet state/catalog/config topics (a worker uses 20 ms):
new records are answered at once either way; 50 empty fetches a second cost an idle client ~3 % of a core."""


_REASONS_FIELDS = frozenset(DecisionReasons.model_fields)
_CANDIDATE_FIELDS = frozenset(CandidateScore.model_fields)
_DECISION_FIELDS = frozenset(RoutingDecision.model_fields)
MAX_SHARED_REASONS = 64
"""Distinct plain ``reasons`` kept as one model each (nothing filtered, no circuit open, no rule)."""


class DecisionModels:
    """The :class:`RoutingDecision` of a decision dict from :class:`DecideLogic`, equal to validating its JSON
    (``tests/client/test_local_decisions.py`` holds the two equal over many decisions) at a fraction of the
    cost: this process built the dict to the schema, so it is not validated again. The models are frozen, so
    the plain ``reasons`` of most decisions (only ``exploration`` and ``capped`` set) are one shared model
    each, as are the policy references."""

    __slots__ = ("_policies", "_reasons", "_stamp")

    def __init__(self) -> None:
        self._policies: dict[tuple[str, str], PolicyRef] = {}
        self._reasons: dict[tuple[bool, str | None], DecisionReasons] = {}
        self._stamp: tuple[str, datetime] = ("", datetime.now(UTC))

    def __call__(self, decision: dict[str, Any]) -> RoutingDecision:
        """The model of ``decision``, which it takes over (its dicts become the models' fields: encode first)."""
        values = decision
        values["reasons"] = self._reasons_model(decision["reasons"])
        policy = decision["policy"]
        ref = (policy["name"], policy["version"])
        model = self._policies.get(ref)
        if model is None:
            if len(self._policies) > 64:
                self._policies.clear()
            model = self._policies[ref] = trusted(PolicyRef, {"name": ref[0], "version": ref[1]})
        values["policy"] = model
        values["fallbacks"] = tuple(decision["fallbacks"])
        candidates = []
        for scores in decision["candidates"]:  # trusted(), inlined: most decisions have several candidates
            candidate = _new(CandidateScore)
            _set_dict(candidate, scores)
            _set_fields_set(candidate, set(_CANDIDATE_FIELDS))
            _set_extra(candidate, None)
            _set_private(candidate, None)
            candidates.append(candidate)
        values["candidates"] = tuple(candidates)
        text = decision["decided_at"]
        stamp = self._stamp
        if stamp[0] != text:  # the decide clock's text changes once per millisecond
            stamp = self._stamp = (text, datetime.fromisoformat(text))
        values["decided_at"] = stamp[1]
        if len(values) != len(_DECISION_FIELDS):
            return trusted(RoutingDecision, values)
        return trusted(RoutingDecision, values, set(_DECISION_FIELDS))

    def _reasons_model(self, reasons: dict[str, Any]) -> DecisionReasons:
        plain = not (
            reasons["filtered"] or reasons["circuit_open"] or reasons["rules"] or reasons["no_eligible"]
        )
        if plain:
            key = (reasons["exploration"], reasons["capped"])
            shared = self._reasons.get(key)
            if shared is not None:
                return shared
        model = trusted(
            DecisionReasons,
            {
                "filtered": reasons["filtered"],
                "circuit_open": tuple(reasons["circuit_open"]),
                "exploration": reasons["exploration"],
                "no_eligible": reasons["no_eligible"],
                "rules": tuple(reasons["rules"]),
                "capped": reasons["capped"],
            },
            set(_REASONS_FIELDS),
        )
        if plain:
            if len(self._reasons) >= MAX_SHARED_REASONS:
                self._reasons.clear()
            self._reasons[key] = model
        return model


_Row = tuple[Block, int, tuple[bytes, bytes, bytes, bytes], str]
"""A decision taken from a pre-drawn block row: (block, row, the text of its request shape, decided_at)."""
MAX_ROW_SHAPES = 256
"""Request shapes whose constant fields :class:`RowModels` keeps (a shape is the text of one task type, tenant,
state version, rules and config version; a learnt state moves it on)."""


class LocalDecideLogic(DecideLogic):
    """The worker's :class:`DecideLogic`, which also leaves what the returned model is made from: after
    :meth:`~DecideLogic.decide_encoded`, :attr:`row` for a decision written from a block row's text, else
    :attr:`made` (the decision dict whose JSON was returned). Reset both before each call."""

    keep_row = True
    made: dict[str, Any] | None = None

    def _decide_dict(self, *args: Any) -> dict[str, Any]:
        self.made = super()._decide_dict(*args)
        return self.made

    def rejection(self, *args: Any) -> dict[str, Any]:
        self.made = super().rejection(*args)
        return self.made


class RowModels:
    """The :class:`RoutingDecision` of a decision taken from a block row, without building its dict: the fields
    that its request shape fixes are read once per shape (by validating the first decision's JSON), the rest
    from the row (``tests/client/test_local_decisions.py`` holds it equal to validating the JSON)."""

    __slots__ = ("_shapes", "_block", "_stamp")

    def __init__(self) -> None:
        self._shapes: dict[tuple[bytes, ...], tuple[dict[str, Any], set[str], tuple[Any, Any]]] = {}
        self._block: tuple[Block | None, list[list[float]], tuple[tuple[str, float], ...]] = (None, [], ())
        self._stamp: tuple[str, datetime] = ("", datetime.now(UTC))

    def __call__(
        self, row: _Row, payload: bytes, request_id: str, decision_id: str, ms: float
    ) -> RoutingDecision:
        block, at, shape, iso = row
        known = self._shapes.get(shape)
        if known is None:
            known = self._learn(shape, payload)
        template, fields_set, reasons = known
        model, fallbacks, propensity, explored = block.rows[at]
        cached = self._block
        if cached[0] is not block:  # the block's draws as Python floats, in one go
            means = block.static[0]
            cached = self._block = (
                block,
                block.z.tolist(),
                tuple((n, means[n]) for n in block.names),
            )
        candidates = []
        for (name, mean), sampled in zip(cached[2], cached[1][at], strict=True):
            candidate = _new(CandidateScore)  # trusted(), inlined
            _set_dict(candidate, {"model": name, "sampled_utility": sampled, "mean_utility": mean})
            _set_fields_set(candidate, _CANDIDATE_SET)  # shared: a frozen model's set is only ever copied
            _set_extra(candidate, None)
            _set_private(candidate, None)
            candidates.append(candidate)
        stamp = self._stamp
        if stamp[0] != iso:  # the decide clock's text changes once per millisecond
            stamp = self._stamp = (iso, datetime.fromisoformat(iso))
        values = template.copy()
        values["decision_id"] = decision_id
        values["request_id"] = request_id
        values["model"] = model
        values["fallbacks"] = fallbacks
        values["propensity"] = propensity
        values["candidates"] = tuple(candidates)
        values["reasons"] = reasons[explored]
        values["decided_at"] = stamp[1]
        values["decision_ms"] = ms
        decision = _new(RoutingDecision)  # trusted(), inlined
        _set_dict(decision, values)
        _set_fields_set(decision, fields_set)  # shared per shape, as the candidates' set (frozen models)
        _set_extra(decision, None)
        _set_private(decision, None)
        return decision

    def _learn(
        self, shape: tuple[bytes, ...], payload: bytes
    ) -> tuple[dict[str, Any], set[str], tuple[Any, Any]]:
        """The fields ``shape`` fixes, from the validated JSON of a decision of that shape."""
        first = RoutingDecision.model_validate_json(payload)
        reasons = first.reasons
        other = reasons.model_copy(update={"exploration": not reasons.exploration})
        both = (other, reasons) if reasons.exploration else (reasons, other)
        if len(self._shapes) >= MAX_ROW_SHAPES:
            self._shapes.clear()
        known = self._shapes[shape] = (dict(first.__dict__), set(first.model_fields_set), both)
        return known


_CANDIDATE_SET = set(_CANDIDATE_FIELDS)


class LocalRouter:
    """The in-process decider of ``RouterClient(mode="local")``. Its coroutines run on the client's loop;
    :meth:`decide_now` may also be called from other threads (``SyncRouterClient``): one decision at a time is
    made under :attr:`lock`, which the publisher's shipper takes too, and the state reader only swaps whole
    objects in the view and the registry (as a worker's reader does for its decide thread)."""

    def __init__(
        self,
        settings: Settings,
        producer: Any,
        *,
        client_id: str,
        task_types: Iterable[str] = (),
        staleness_s: float = 30.0,
        seed: int | None = None,
        config: RouterConfig | None = None,
        max_pending: int = 100_000,
    ) -> None:
        self.settings = settings
        self.staleness_s = staleness_s
        self.registry = Registry(config or RouterConfig.load(config_dir_of(settings)[0]))
        self.view = StateView()
        self.kept: set[str] = {*task_types, SHARED_KEY}
        self.logic = LocalDecideLogic(
            self.registry, self.view, np.random.default_rng(seed), worker_id=client_id
        )
        self.reader = StateReader(
            self.view,
            self.registry,
            bootstrap=settings.kafka_bootstrap,
            state_topic=settings.topic("state"),
            catalog_topic=settings.topic("catalog"),
            security=settings.aiokafka_security(),
            keep=self.keeps,
            config_topic=settings.topic("config"),
            fetch_max_wait_ms=QUIET_FETCH_WAIT_MS,
        )
        self.lock = threading.Lock()
        self.publisher = DecisionPublisher(producer, max_pending=max_pending, lock=self.lock)
        self._closed = False
        self.decisions_topic = settings.topic("decisions")
        self.shadow_topic = settings.topic("shadow-decisions")
        self._follower: asyncio.Task[None] | None = None
        self.stats = {"local_decisions": 0, "states_read_back": 0, "reader_restarts": 0}
        self._model = DecisionModels()
        self._row_model = RowModels()

    # -- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start publishing and following the topics."""
        await self.publisher.start([self.decisions_topic, self.shadow_topic])
        self._follower = asyncio.create_task(self._follow(), name="banditroute-local-reader")

    async def wait_loaded(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the first full read of the topics (until then ``route()`` falls back,
        with the reason ``not_loaded``)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reader.caught_up.wait(), timeout_s)
        return self.reader.caught_up.is_set()

    async def _follow(self) -> None:
        """Run the reader; after an error (broker trouble) start it again: staleness shows the gap."""
        while True:
            try:
                await self.reader.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats["reader_restarts"] += 1
                log.warning("local mode: reading state/catalog failed, retrying: %r", exc)
                await asyncio.sleep(RESTARTS_AFTER_S)

    async def stop(self, timeout_s: float) -> None:
        """Publish what is queued (bounded), stop following and preparing plans; :meth:`decide_now` answers
        ``closed`` from now."""
        with self.lock:
            self._closed = True
        await self.publisher.stop(timeout_s)
        self.reader.stop()
        if self._follower is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._follower), timeout_s)
            except BaseException:
                self._follower.cancel()
                with contextlib.suppress(BaseException):
                    await self._follower
            self._follower = None
        # its plans' thread would otherwise idle on for 30 s; joined off the loop, which must not block
        await asyncio.to_thread(self.view.close, timeout_s)

    # -- deciding -----------------------------------------------------------------------------------------
    def keeps(self, key: str) -> bool:
        """Whether this client holds the state of ``key`` (its task type is routed here or was named)."""
        return task_type_of(key) in self.kept

    def unavailable(self) -> str | None:
        """Why the snapshot cannot be used now (``not_loaded``, ``stale``), or None."""
        reader = self.reader
        if not reader.caught_up.is_set():
            return NOT_LOADED
        if time.monotonic() - reader.polled_at > self.staleness_s:
            return STALE
        return None

    def age_s(self) -> float | None:
        """Seconds since the state and catalog topics were last read (None before the first read)."""
        polled = self.reader.polled_at
        return time.monotonic() - polled if polled else None

    async def route(self, request: RoutingRequest) -> RoutingDecision | str:
        """The decision (queued for publishing), or why none was made here (the caller falls back)."""
        decided = self.decide_now(request)
        if decided is not None:
            return decided
        key = self.registry.snapshot.state_key(request.tenant, request.task_type)
        await self._read_back(key)
        return self.decide_now(request, read_back=False) or NOT_LOADED

    def decide_now(self, request: Request, *, read_back: bool = True) -> RoutingDecision | str | None:
        """:meth:`route` without awaiting: the decision, why none was made here, or None when the state of
        the request's key must first be read back from the state topic (then await :meth:`route`)."""
        reader = self.reader
        if not (reader.caught_up.is_set() and time.monotonic() - reader.polled_at <= self.staleness_s):
            why = self.unavailable()
            if why is not None:
                return why
        publisher = self.publisher
        with self.lock:
            if self._closed:
                return CLOSED
            if publisher.pending >= publisher.max_pending:
                return OUTBOX_FULL
            task_type = request.task_type
            if task_type not in self.kept:
                self._keep(task_type)
            view = self.view
            if read_back and view.evicted:
                key = self.registry.snapshot.state_key(request.tenant, task_type)
                if key in view.evicted and view.get(key) is None:
                    return None
            logic = self.logic
            logic.row = logic.made = None
            decided, served = logic.decide_encoded(request)
            payload = decided[4]
            request_id = request.request_id
            key_bytes = request_id.encode()
            publisher.offer(self.decisions_topic, key_bytes, payload)
            row, made = logic.row, logic.made
            shadow = logic.shadow
            if shadow is not None:
                logic.shadow = None
                publisher.offer(self.shadow_topic, key_bytes, orjson.dumps(shadow))
            self.stats["local_decisions"] += 1
        # the models' caches are safe without the lock (single dict operations), and a block's rows never change
        if row is not None and served is not None:
            return self._row_model(row, payload, request_id, served[1], decided[3])
        assert made is not None
        return self._model(made)

    def _keep(self, task_type: str) -> None:
        """Hold ``task_type``'s states from now on, within the number of task types the limits allow."""
        limits = self.registry.snapshot.limits
        bound = (
            limits.max_task_types + len(limits.allowed_task_types) + len(self.registry.snapshot.routes) + 1
        )
        if len(self.kept) < bound:
            self.kept.add(task_type)

    async def _read_back(self, key: str) -> None:
        """Read the newest state of ``key`` from the state topic before its first local decision."""
        where = self.view.evicted.get(key)
        try:
            raw = await self.reader.fetch(key)
        except StateReadFailed as exc:  # decided with the prior this time; read back at the next route()
            log.warning("%s", exc)
            return
        if raw is not None and self.view.get(key) is None and where is not None:
            state = self.reader.decode(key, raw)
            if state is None:  # nothing good to read back (counted by the reader): decide with the prior
                self.view.evicted.pop(key, None)
                return
            self.view.offer(key, state, where)
            self.stats["states_read_back"] += 1

    async def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every decision made so far is on the topic."""
        return await self.publisher.flush(timeout_s)


__all__ = ["CLOSED", "NOT_LOADED", "OUTBOX_FULL", "STALE", "LocalRouter"]
