"""One budget divided over the task types that share it, for the learner of a worker.

In budget mode (``objective: budget``) the evaluation suite and the replay hold one budget over all traffic:
the task types with the same ``budget_mean_cost_usd`` share it, divided as the budget oracle's linear program
divides it on a Beta draw of the posteriors, weighted by each task type's traffic
(:func:`banditroute.core.budget.split_offsets`). Each task type then paces to its own share plus the group's
slack (``TaskState.budget_offset_usd``, encoded with the state, so every worker's decisions read it). A worker
holds every task type's newest state, so its learner can divide the budget the same way, within the limits
that keep the isolation the worker promises (docs/guarantees.md):

* a tenant's keys (``tenant|task_type``) share a budget only with that tenant's other keys, keys without a
  tenant only with each other: one tenant's spending never moves another tenant's pacing;
* ``~shared`` (the state of every task type past ``limits.max_task_types``) neither gives nor takes: a flood
  of junk task types does not move the split of the task types that have state of their own;
* a key with nobody to share with paces to its own budget (offset 0), as with ``budget_split: off``;
* only models the catalog can serve now count: a retired, disabled or shadow model, or one gone from the
  catalog, keeps its row in the state but buys nothing in the split.

The shares are recomputed from those states at most every ``interval_s`` (a greedy pass per group: the budget
oracle's linear program solved exactly) and on a change of configuration, less often when a computation takes
more than :data:`MAX_CPU_SHARE` of that time. A learnt key's offset is its share from the last computation plus
its group's other keys' slack as the worker holds it then (:class:`~banditroute.core.budget.BudgetShares`;
groups of more than :data:`LIVE_GROUP_MAX` keys: from the last computation): a task type paced below the
budget gains slack with every call, and slack frozen for a second made the group under-spend. A key that was not known at the last computation (new, or evicted) keeps its offset until
the next one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import numpy as np

from banditroute.agents.prior_pool import tenant_of
from banditroute.core import TaskState
from banditroute.core.budget import BudgetShares, budget_shares
from banditroute.core.state import replace_state
from banditroute.limits import SHARED_KEY
from banditroute.routing import RoutingSnapshot, task_type_of

RECOMPUTE_S = 1.0
"""How old the split may get before the next learnt batch recomputes it."""
LIVE_GROUP_MAX = 100
"""Groups of at most this many keys read the other keys' slack when a key is learnt; larger ones (each learnt
key would cost a pass over its group) take it from the last computation."""
MAX_CPU_SHARE = 0.05
"""The most of the learner's time the split may take: after a computation that took ``d`` seconds the next one
waits at least ``d / MAX_CPU_SHARE`` (thousands of state keys in budget mode: ~0.14 ms of CPU each)."""


class BudgetSplit:
    """Each known state key's budget offset, recomputed at most every ``interval_s``.

    ``rng`` draws the posteriors the ``sampled`` split is solved on (seeded from ``BANDITROUTE_SEED`` by the
    worker, from the OS otherwise)."""

    def __init__(
        self,
        states: Callable[[], Iterable[tuple[str, TaskState]]],
        rng: np.random.Generator,
        *,
        state: Callable[[str], TaskState | None] = lambda _key: None,
        interval_s: float = RECOMPUTE_S,
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._states = states
        self._state = state
        self._rng = rng
        self.interval_s = interval_s
        self._clock = clock
        self._timer = timer
        """Times a computation, for ``MAX_CPU_SHARE``."""
        self._shares = BudgetShares((), (), {}, {})
        self._known: dict[str, tuple[int, float]] = {}  # key -> (calls, spend) at the last computation
        self._at = float("-inf")
        self._wait = interval_s
        self._version = -1
        self.computed = 0

    def offset(self, snapshot: RoutingSnapshot, key: str) -> float | None:
        """``key``'s budget offset (None: ``key`` was not known at the last computation); 0.0 with the split off
        or for a key that shares with nobody, so a key split while it was on is back on its own budget at its
        next learnt batch."""
        if snapshot.budget_split == "off":
            return 0.0
        now = self._clock()
        if snapshot.version != self._version or now - self._at >= self._wait:
            self._recompute(snapshot, now)
        if key not in self._known:
            return None
        group = self._shares.group.get(key)
        if group is None:
            return 0.0
        live = len(self._shares.members[group]) <= LIVE_GROUP_MAX
        return self._shares.offset(key, self._calls_and_spend if live else self._known.__getitem__)

    def _calls_and_spend(self, key: str) -> tuple[int, float]:
        """A group member's calls and spend: as the worker holds them now (from the last computation when it no
        longer holds them, or holds non-finite ones)."""
        state = self._state(key)
        if state is not None and math.isfinite(state.spend_total_usd):
            return state.spend_calls, state.spend_total_usd
        return self._known[key]

    def split(self, snapshot: RoutingSnapshot, key: str, state: TaskState) -> TaskState:
        """``state`` with ``key``'s budget offset (the same object when there is nothing to change)."""
        offset = self.offset(snapshot, key)
        if offset is None or offset == state.budget_offset_usd:
            return state
        return replace_state(state, budget_offset_usd=offset)

    def _recompute(self, snapshot: RoutingSnapshot, now: float) -> None:
        began = self._timer()
        self._at, self._version = now, snapshot.version
        states = {k: s for k, s in self._states() if k != SHARED_KEY}
        policies = {k: snapshot.route(task_type_of(k)).policy for k in states}
        rng = self._rng if snapshot.budget_split == "sampled" else None
        servable = frozenset(m.name for m in snapshot.models if m.routable)
        self._shares = budget_shares(states, policies, rng, group_of=tenant_of, servable=servable)
        self._known = {k: (s.spend_calls, s.spend_total_usd) for k, s in states.items()}
        self.computed += 1
        self._wait = max(self.interval_s, (self._timer() - began) / MAX_CPU_SHARE)


__all__ = ["LIVE_GROUP_MAX", "MAX_CPU_SHARE", "RECOMPUTE_S", "BudgetSplit"]
