"""One mean-cost budget shared by several task types.

A budget set per task type is held per task type: a task type whose best model costs less than the budget
leaves the rest unspent. A budget over all traffic (what ``replay --budget`` and the budget oracle mean) is
shared by the task types with the same budget. Two ways to share it:

* :func:`share_budget`: every task type paces to the same mean cost, against the slack of all of them
  together (``TaskState.budget_offset_usd`` lends it the others' slack). Even with the true means this caps
  the quality at 0.87-0.99 of the budget oracle's on the evaluation suite's datasets: money is worth more in
  some task types than in others.
* :func:`allocate_budget` (replay's default): each task type paces to its share of the budget in the oracle's
  linear program solved on the current posteriors, plus the group's slack. :func:`budget_shares` is the same
  split for the worker's learner: keys grouped further (by tenant), a key with nobody to share with keeps its
  own budget, and the others' slack is read when a key's offset is applied (:class:`BudgetShares`).

The linear program is solved greedily (:func:`_split`), exactly: a worker splits every second.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from banditroute.core.models import TaskPolicy
from banditroute.core.objective import cost_moments, quality_moments
from banditroute.core.state import TaskState, replace_state

FloatArray = npt.NDArray[np.float64]


def slack_usd(state: TaskState, policy: TaskPolicy) -> float:
    """What the task type has under-spent (> 0) or over-spent (< 0) against its own mean-cost budget."""
    budget = policy.budget_mean_cost_usd or 0.0
    return budget * state.spend_calls - state.spend_total_usd


def _groups(states: Mapping[str, TaskState], policies: Mapping[str, TaskPolicy]) -> dict[float, list[str]]:
    """The task types with a state and a mean-cost budget, grouped by that budget (each group shares one)."""
    groups: dict[float, list[str]] = {}
    for task, policy in policies.items():
        if task in states and policy.objective == "budget" and policy.budget_mean_cost_usd is not None:
            groups.setdefault(policy.budget_mean_cost_usd, []).append(task)
    return groups


def share_budget(states: Mapping[str, TaskState], policies: Mapping[str, TaskPolicy]) -> dict[str, TaskState]:
    """The states with each task type's pacing slack set to that of all task types with the same budget."""
    groups = _groups(states, policies)
    out = dict(states)
    for tasks in groups.values():
        own = {t: slack_usd(states[t], policies[t]) for t in tasks}
        total = sum(own.values())
        for t in tasks:
            offset = total - own[t]
            if offset != states[t].budget_offset_usd:
                out[t] = replace_state(states[t], budget_offset_usd=offset)
    return out


def allocate_budget(
    states: Mapping[str, TaskState],
    policies: Mapping[str, TaskPolicy],
    rng: np.random.Generator | None = None,
) -> dict[str, TaskState]:
    """The states with each task type's pacing target set to its share of one budget over all task types.

    :func:`share_budget` lets every task type spend at the same mean cost, which is not the best use of the
    money when task types differ: the budget oracle spends where a dollar buys the most quality. Here the
    budget is divided as that linear program divides it, solved on the current posteriors (mean quality, or
    one Beta draw per model and task type when ``rng`` is given, so the split explores as Thompson sampling
    does) and the traffic each task type has had; each task type then paces to its own share plus the
    group's slack (``TaskState.budget_offset_usd`` carries the difference from the policy's budget).
    """
    out = dict(states)
    for budget, tasks in _groups(states, policies).items():
        for t, offset in zip(tasks, _offsets(tasks, states, policies, budget, rng), strict=True):
            if offset != states[t].budget_offset_usd:
                out[t] = replace_state(states[t], budget_offset_usd=offset)
    return out


@dataclass(frozen=True)
class BudgetShares:
    """Where one split put each key: the groups of keys sharing a budget, and each key's share of it as the
    distance its ``pacing_horizon`` calls put between that share and the budget (``target``). A key's offset is
    its target plus the slack of its group's other keys, read when it is applied (:meth:`offset`): the slack of
    a key paced below the budget grows with every call, so slack frozen at the split would drift."""

    budgets: tuple[float, ...]
    """The budget of each group."""
    members: tuple[tuple[str, ...], ...]
    """The keys of each group."""
    group: Mapping[str, int]
    """Key -> its group (keys sharing with nobody are not here)."""
    target: Mapping[str, float]
    """Key -> ``pacing_horizon x (share - budget)``."""

    def offset(self, key: str, calls_and_spend: Callable[[str], tuple[int, float]]) -> float | None:
        """``key``'s ``budget_offset_usd`` with the others' slack from ``calls_and_spend`` (key -> calls, USD
        spent); None when ``key`` shares with nobody."""
        i = self.group.get(key)
        if i is None:
            return None
        budget, others = self.budgets[i], 0.0
        for other in self.members[i]:
            if other != key:
                calls, spent = calls_and_spend(other)
                others += budget * calls - spent
        return self.target[key] + others


def budget_shares(
    states: Mapping[str, TaskState],
    policies: Mapping[str, TaskPolicy],
    rng: np.random.Generator | None = None,
    *,
    group_of: Callable[[str], str] | None = None,
    servable: Collection[str] | None = None,
) -> BudgetShares:
    """:func:`allocate_budget`'s split with the budget shared only by keys of one group (``group_of``: key ->
    group; default one group) and the same budget. Keys not in budget mode, keys with nobody to share with and
    states with non-finite statistics (a corrupt record must not move the others' split) take no part.
    ``servable``: the models that can be served (None: every model a state holds); the rows a state keeps for
    others (retired, disabled, shadow, gone from the catalog) take no part, nor does a key left with none."""
    groups: dict[tuple[str, float], list[str]] = {}
    for key, state in states.items():
        policy = policies.get(key)
        if policy is None or policy.objective != "budget" or policy.budget_mean_cost_usd is None:
            continue
        if not _finite(state) or (servable is not None and not any(n in servable for n in state.names)):
            continue
        group = group_of(key) if group_of is not None else ""
        groups.setdefault((group, policy.budget_mean_cost_usd), []).append(key)
    budgets: list[float] = []
    members: list[tuple[str, ...]] = []
    index: dict[str, int] = {}
    target: dict[str, float] = {}
    for (_, budget), keys in groups.items():
        if len(keys) < 2:
            continue
        for key, share in zip(keys, _shares(keys, states, policies, budget, rng, servable), strict=True):
            index[key] = len(members)
            target[key] = policies[key].pacing_horizon * (share - budget)
        budgets.append(budget)
        members.append(tuple(keys))
    return BudgetShares(tuple(budgets), tuple(members), index, target)


def split_offsets(
    states: Mapping[str, TaskState],
    policies: Mapping[str, TaskPolicy],
    rng: np.random.Generator | None = None,
    *,
    group_of: Callable[[str], str] | None = None,
    servable: Collection[str] | None = None,
) -> dict[str, float]:
    """Each key's ``budget_offset_usd`` under :func:`budget_shares` applied at once: 0.0 (its own budget) for a
    key that takes no part."""
    shares = budget_shares(states, policies, rng, group_of=group_of, servable=servable)

    def calls_and_spend(key: str) -> tuple[int, float]:
        return states[key].spend_calls, states[key].spend_total_usd

    return {key: shares.offset(key, calls_and_spend) or 0.0 for key in states}


def _finite(state: TaskState) -> bool:
    values = (state.alpha, state.beta, state.mean_cost_usd, state.spend_total_usd, state.spend_calls)
    return all(bool(np.all(np.isfinite(v))) for v in values)


def _shares(
    tasks: Sequence[str],
    states: Mapping[str, TaskState],
    policies: Mapping[str, TaskPolicy],
    budget: float,
    rng: np.random.Generator | None,
    servable: Collection[str] | None = None,
) -> list[float]:
    """The mean cost per call each of ``tasks`` (one group sharing ``budget``) spends in the best split, over
    the ``servable`` models only (None: all)."""
    calls = np.array([states[t].spend_calls for t in tasks], dtype=np.float64) + 1.0
    weight = calls / calls.sum()
    quality, cost = [], []
    for t in tasks:
        state = states[t]
        if rng is None:
            q = quality_moments(state, policies[t].reward)[0]
        else:
            q = rng.beta(np.maximum(state.alpha, 1e-9), np.maximum(state.beta, 1e-9))
        c = cost_moments(state)[0]
        if servable is not None:
            rows = [i for i, name in enumerate(state.names) if name in servable]
            q, c = q[rows], c[rows]
        quality.append(q)
        cost.append(c)
    return _split(weight, quality, cost, budget)


def _offsets(
    tasks: Sequence[str],
    states: Mapping[str, TaskState],
    policies: Mapping[str, TaskPolicy],
    budget: float,
    rng: np.random.Generator | None,
) -> list[float]:
    """The offset of each of ``tasks`` (one group sharing ``budget``): its share's distance from the budget
    over its own ``pacing_horizon``, plus the slack of the group's other task types."""
    share = _shares(tasks, states, policies, budget, rng)
    own = {t: slack_usd(states[t], policies[t]) for t in tasks}
    total = sum(own.values())
    return [
        policies[t].pacing_horizon * (target - budget) + total - own[t]
        for t, target in zip(tasks, share, strict=True)
    ]


def best_mix(
    weight: FloatArray, quality: Sequence[FloatArray], cost: Sequence[FloatArray], budget: float
) -> list[FloatArray] | None:
    """The budget oracle's linear program: per task type (traffic share ``weight``), the distribution over its
    models with the best weighted mean quality whose weighted mean cost is at most ``budget``; None when no mix
    is that cheap."""
    # imported here: scipy.optimize costs every worker and CLI start about half a second, and only the oracle
    # (the evaluation suite, the tests) solves the program with it; the worker splits with _split
    from scipy.optimize import linprog

    sizes = [len(q) for q in quality]
    objective = -np.concatenate([w * q for w, q in zip(weight, quality, strict=True)])
    cost_row = np.concatenate([w * c for w, c in zip(weight, cost, strict=True)])[None, :]
    equality = np.zeros((len(sizes), sum(sizes)))
    start = 0
    for i, k in enumerate(sizes):
        equality[i, start : start + k] = 1.0
        start += k
    result = linprog(
        objective,
        A_ub=cost_row,
        b_ub=[budget],
        A_eq=equality,
        b_eq=np.ones(len(sizes)),
        bounds=(0, None),
        method="highs",
    )
    if not result.success:
        return None
    bounds = np.cumsum([0, *sizes])
    return [np.asarray(result.x[a:b], dtype=np.float64) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _split(
    weight: FloatArray, quality: list[FloatArray], cost: list[FloatArray], budget: float
) -> list[float]:
    """Each task type's mean cost in the best per-task mix with traffic-weighted mean cost <= ``budget``: the
    optimum of :func:`best_mix`'s linear program, found greedily (a multiple-choice knapsack's relaxation):
    every task type starts on its cheapest model, then the budget buys the steps along the task types' upper
    convex hulls of (cost, quality) in order of quality per dollar, the last one in part. Exact, and about a
    hundred times faster than the solver, which matters to a worker with many groups to split every second."""
    start = [float(c.min()) for c in cost]
    left = budget - float(weight @ np.array(start))
    if left < -1e-12 * max(abs(budget), 1e-300):
        return [budget] * len(quality)  # no mix is that cheap (as best_mix: None)
    steps: list[tuple[float, int, float]] = []  # (quality per dollar, task, dollars per call)
    for i, (q, c) in enumerate(zip(quality, cost, strict=True)):
        for dq, dc in _hull_steps(np.asarray(q, dtype=np.float64), np.asarray(c, dtype=np.float64)):
            steps.append((dq / dc, i, dc))
    steps.sort(key=lambda step: -step[0])
    spend = list(start)
    for _, i, dc in steps:
        if left <= 0:
            break
        take = min(dc, left / weight[i]) if weight[i] > 0 else dc
        spend[i] += take
        left -= weight[i] * take
    return spend


def _hull_steps(quality: FloatArray, cost: FloatArray) -> list[tuple[float, float]]:
    """The steps (quality gained, cost added) along the upper convex hull of one task type's models, from its
    best cheapest model up to its best one, in order of falling quality per dollar (each > 0)."""
    order = np.lexsort((-quality, cost))  # by cost, the best first among equal costs
    hull: list[tuple[float, float]] = []  # (cost, quality)
    for j in order.tolist():
        c, q = float(cost[j]), float(quality[j])
        if hull and (c == hull[-1][0] or q <= hull[-1][1]):
            continue  # as dear and no better, or dearer and no better: never on the frontier
        while len(hull) >= 2:
            (c1, q1), (c2, q2) = hull[-2], hull[-1]
            if (q2 - q1) * (c - c1) <= (q - q1) * (c2 - c1):  # hull[-1] lies on or below the chord
                hull.pop()
            else:
                break
        hull.append((c, q))
    return [(q2 - q1, c2 - c1) for (c1, q1), (c2, q2) in zip(hull, hull[1:], strict=False)]
