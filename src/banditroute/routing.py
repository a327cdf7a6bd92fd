"""One immutable routing snapshot: everything a decision reads from configuration and catalog.

The :class:`~banditroute.config.Registry` builds a :class:`RoutingSnapshot` from ``config/`` and the catalog
events, and swaps it in with one assignment whenever either changes. A decision reads that reference once and
takes the models, rules, per-tenant keys, the task type's policy, shadow policy, join window and prior state
from the same object, so it can never mix two versions, and nothing on the decide thread writes to it.
Decision plans and pre-drawn blocks are derived per state version and cached per thread
(:class:`~banditroute.core.state.ThreadCache`): the decide thread's own, invisible to every other thread.

Learnt states are not part of it: each state key's newest :class:`~banditroute.core.TaskState` is itself
immutable and swapped whole in the :class:`StateView`; a decision reads it once and
aligns it with the snapshot's model list (:meth:`RoutingSnapshot.state_for`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from banditroute.core import ModelSpec, Rule, TaskPolicy, TaskState, new_state, sync_models
from banditroute.core.join_policy import JoinPolicy
from banditroute.core.plan import prepare_plans
from banditroute.core.pooling import DEFAULT_MAX_STRENGTH
from banditroute.core.state import shareable
from banditroute.limits import TENANT_SEPARATOR, Limits

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, eq=False)
class TaskRoute:
    """What one task type decides and learns with: its policy, its shadow candidate and its join window."""

    policy: TaskPolicy
    shadow: tuple[str, TaskPolicy] | None
    """The shadow candidate's name and the task's policy with the shadow's overrides (policy.yaml ``shadow``)."""
    join: JoinPolicy


@dataclass(frozen=True, eq=False)
class RoutingSnapshot:
    """One version of the routing inputs. Built whole, never modified; ``version`` increases with each one."""

    version: int
    models: tuple[ModelSpec, ...]
    model_names: frozenset[str]
    rules: tuple[Rule, ...]
    per_tenant: frozenset[str] | bool
    initial: TaskState
    """The prior state of a task type nobody has learnt about yet (the same for every task type)."""
    default: TaskRoute
    """The route of every task type without its own section in policy.yaml."""
    routes: Mapping[str, TaskRoute]
    """The task types configured in policy.yaml."""
    limits: Limits
    """Caps on client-named keys (policy.yaml ``limits``)."""
    config_version: str = "1"
    """The configuration's version, recorded in each decision's ``policy.version``."""
    pooled_prior_strength: float = DEFAULT_MAX_STRENGTH
    """The cap on what a prior pooled over task types is worth, in observations (0: no pooling)."""
    budget_split: str = "sampled"
    """How task types with the same budget divide it: ``sampled``, ``mean`` or ``off`` (policy.yaml)."""
    _aligned: weakref.WeakKeyDictionary[TaskState, TaskState] = field(
        default_factory=weakref.WeakKeyDictionary, init=False, repr=False
    )
    """Learnt state -> that state with this snapshot's models, while the learnt state lives (:meth:`aligned`)."""

    @classmethod
    def build(
        cls,
        version: int,
        models: tuple[ModelSpec, ...],
        default_policy: Mapping[str, Any],
        task_policies: Mapping[str, Mapping[str, Any]],
        default_join: JoinPolicy,
        task_joins: Mapping[str, JoinPolicy],
        rules: tuple[Rule, ...],
        per_tenant: frozenset[str] | bool,
        shadow: Mapping[str, Any] | None,
        limits: Limits | None = None,
        config_version: str = "1",
        pooled_prior_strength: float = DEFAULT_MAX_STRENGTH,
        budget_split: str = "sampled",
    ) -> RoutingSnapshot:
        """Resolve every configured task type now, so that reading a snapshot never computes or caches."""

        def route(mapping: Mapping[str, Any], join: JoinPolicy) -> TaskRoute:
            candidate = None
            if shadow is not None:
                overrides = {k: v for k, v in shadow.items() if k != "name"}
                candidate = (str(shadow["name"]), TaskPolicy.from_mapping({**mapping, **overrides}))
            return TaskRoute(TaskPolicy.from_mapping(mapping), candidate, join)

        return cls(
            version=version,
            models=models,
            model_names=frozenset(m.name for m in models),
            rules=rules,
            per_tenant=per_tenant,
            initial=shareable(new_state(models)),
            default=route(default_policy, default_join),
            routes={
                task_type: route(mapping, task_joins.get(task_type, default_join))
                for task_type, mapping in task_policies.items()
            },
            limits=limits or Limits(),
            config_version=config_version,
            pooled_prior_strength=pooled_prior_strength,
            budget_split=budget_split,
        )

    def route(self, task_type: str) -> TaskRoute:
        return self.routes.get(task_type, self.default)

    def is_per_tenant(self, task_type: str) -> bool:
        per = self.per_tenant
        return per is True or (isinstance(per, frozenset) and task_type in per)

    def state_key(self, tenant: str | None, task_type: str) -> str:
        """Key of the bandit state a request uses: the task type, or tenant|task type where configured."""
        per = self.per_tenant
        if tenant and (per is True or (isinstance(per, frozenset) and task_type in per)):
            return f"{tenant}{TENANT_SEPARATOR}{task_type}"
        return task_type

    def aligned(self, state: TaskState) -> TaskState:
        """``state`` with this snapshot's model list (new models get their priors; retired ones keep state).

        Built once per learnt state and snapshot, and then the same object, so the plans and blocks derived
        from it (cached on it) are kept from one decision to the next."""
        if self.model_names.issubset(state.names):
            return state
        known = self._aligned.get(state)
        if known is None:  # two threads may both build it: equal states, the last one kept
            known = self._aligned[state] = shareable(sync_models(state, self.models))
        return known

    def state_for(self, learnt: TaskState | None) -> TaskState:
        """The state to decide or learn with: the learnt one aligned to the models, or the prior."""
        return self.initial if learnt is None else self.aligned(learnt)


class PlanPreparer:
    """A thread that builds new state versions' plans (:func:`~banditroute.core.plan.prepare_plans`) for the
    decide thread, so neither the publishing thread (the worker's event loop) nor a decision waits for them.

    Started at the first version submitted, it ends after ``IDLE_S`` without one (started again at the next).
    A version superseded before its turn is skipped: its plans would not be asked for."""

    IDLE_S = 30.0

    def __init__(self, newest: Callable[[str], TaskState | None], clock: Callable[[], float]) -> None:
        self._newest = newest
        self._clock = clock
        self._queue: queue.Queue[tuple[str, TaskState, TaskState] | None] = queue.Queue()  # None: stop()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.built = 0
        """Plans built (taken by a decision or not)."""
        self.failed = 0
        """Versions whose plans could not be built (the decision then builds its own, and meets the error)."""

    def submit(self, key: str, state: TaskState, previous: TaskState) -> None:
        """Build ``state``'s plans for the shapes ``previous`` was decided with (``state`` published already)."""
        with self._lock:
            self._queue.put((key, state, previous))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="banditroute-plans", daemon=True)
                self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the thread is there (it ends after ``IDLE_S`` without work)."""
        return self._thread is not None

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Wait until every version submitted so far is prepared or skipped; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        return True

    def stop(self, timeout_s: float = 5.0) -> bool:
        """End the thread now rather than ``IDLE_S`` later, once the versions queued are done, and wait up to
        ``timeout_s`` for it; True when no thread is left. A later :meth:`submit` starts one again."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return True
            self._queue.put(None)
        thread.join(timeout_s)
        return not thread.is_alive()

    def _run(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=self.IDLE_S)
            except queue.Empty:
                job = None
            else:
                if job is None:
                    self._queue.task_done()
            if job is None:  # idle for IDLE_S, or stop(): end unless a version was submitted since
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            key, state, previous = job
            try:
                if self._newest(key) is state:
                    self.built += prepare_plans(state, previous, self._clock())
            except Exception as exc:  # never let one state stop the thread
                self.failed += 1
                log.warning("plans of a new state version not prepared: %s", exc)
            finally:
                self._queue.task_done()


EVICTED_INDEX_MAX = 100_000
"""Evicted states remembered by their place in the state topic (~150 bytes each); past this none is evicted."""


class StateView:
    """The newest known state per state key, fed by the local learner and by the state topic.

    A state replaces the held one only if its version is higher, so an old snapshot read late never rolls a
    newer posterior back. ``where`` is the state topic position (partition, offset) of each held state, so an
    idle state can be evicted (:meth:`evict`) and read back from the topic when it is wanted again
    (:meth:`want`, served by the :class:`~banditroute.kafka.state_reader.StateReader`).
    """

    def __init__(self, prepare: bool = True, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        """The time a state is offered at (its ``updated_at``) and its plans are prepared for."""
        self._states: dict[str, TaskState] = {}
        # the dict's get, not this view's: a preparer holding the view would make the two a reference cycle,
        # and a dropped view (its states, plans, blocks) cyclic garbage once the preparer's idle thread ends
        self.preparer = PlanPreparer(self._states.get, clock) if prepare else None
        """Builds each new version's plans for the request shapes its predecessor was decided with, on a thread
        of its own, for the decide thread to take (:func:`~banditroute.core.plan.prepare_plans`)."""
        self.lookup: Callable[[str], TaskState | None] = self._states.get
        """:meth:`get` as the dict's own method (no Python call: the decide thread's check per request)."""
        self.updated_at: dict[str, float] = {}
        self.where: dict[str, tuple[int, int]] = {}
        self.evicted: dict[str, tuple[int, int]] = {}
        self.wanted: deque[str] = deque(maxlen=10_000)

    def get(self, key: str) -> TaskState | None:
        return self._states.get(key)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Stop the plans' thread (:meth:`PlanPreparer.stop`) rather than leave it idle for ``IDLE_S``; True
        when none is left running."""
        return self.preparer is None or self.preparer.stop(timeout_s)

    def offer(self, key: str, state: TaskState, where: tuple[int, int] | None = None) -> bool:
        held = self._states.get(key)
        if held is not None and held.version >= state.version:
            if where is not None and held.version == state.version:
                self.where[key] = where  # the learner's own state, now read back from the topic
            return False
        self._states[key] = shareable(state)  # the decide thread reads it (and takes plans from its handoff)
        self.updated_at[key] = self.clock()
        if where is not None:
            self.where[key] = where
        else:
            self.where.pop(key, None)
        self.evicted.pop(key, None)
        preparer = self.preparer
        if preparer is not None and held is not None:
            old = held.handoff
            if old is not None and old.shapes:  # a decision asked for a plan of the version it replaces
                preparer.submit(key, state, held)
        return True

    def evict(self, key: str) -> bool:
        """Drop ``key`` from memory, remembering where it is in the state topic; False (kept) when its place
        is not known yet or the index of evicted states is full."""
        where = self.where.get(key)
        if where is None or key not in self._states or len(self.evicted) >= EVICTED_INDEX_MAX:
            return False
        del self._states[key]
        self.updated_at.pop(key, None)
        del self.where[key]
        self.evicted[key] = where
        return True

    def remember(self, key: str, where: tuple[int, int]) -> bool:
        """Remember only where ``key``'s newest state is in the state topic, without holding it (a client in
        local mode holding only the task types it routes); False when the index of evicted states is full."""
        if key not in self.evicted and len(self.evicted) >= EVICTED_INDEX_MAX:
            return False
        self.evicted[key] = where
        return True

    def want(self, key: str) -> None:
        """Ask for an evicted state to be read back (called from the decide thread; deque appends are atomic)."""
        if key in self.evicted:
            self.wanted.append(key)

    def drop(self, key: str) -> None:
        """Forget ``key`` entirely (a tombstone on the state topic)."""
        self._states.pop(key, None)
        self.updated_at.pop(key, None)
        self.where.pop(key, None)
        self.evicted.pop(key, None)

    def keys(self) -> list[str]:
        return list(self._states)

    def items(self) -> list[tuple[str, TaskState]]:
        return list(self._states.items())


def task_type_of(key: str) -> str:
    """The task type of a state key (``tenant|task_type`` or ``task_type``)."""
    return key.split(TENANT_SEPARATOR, 1)[-1]


__all__ = ["TENANT_SEPARATOR", "RoutingSnapshot", "StateView", "TaskRoute", "task_type_of"]
