"""Reference routing policies behind one interface, so replay and simulation can run them side by side.

Every policy has ``name``, ``choose(state, models, policy, constraints, rng, now_s, *, pinned, capacity)``
returning a :class:`Choice` and ``update(...)`` returning a new state. They share the cost-aware sampler's
filtering (constraints, lifecycle, circuits, capacity) and its TaskState, and differ only in how they pick
among the eligible models. ε-greedy and UCB1 optimise the same utility as the Thompson sampler; "thompson_plain"
is Beta–Bernoulli Thompson sampling on quality alone (λ = μ = 0, no guards, no budget).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from banditroute.core.capacity import CapacityTracker
from banditroute.core.choose import Plan, choose, choose_batch, get_plan
from banditroute.core.learn import update
from banditroute.core.models import Choice, Constraints, ModelSpec, Outcome, TaskPolicy, make_choice
from banditroute.core.objective import cost_moments, cost_weight, effective_objective, quality_moments
from banditroute.core.state import N_OBS, PRIOR_A, PRIOR_B, Q_N, Q_SUM, TaskState


class RoutingPolicy(Protocol):
    name: str

    def choose(
        self,
        state: TaskState,
        models: Sequence[ModelSpec],
        policy: TaskPolicy,
        constraints: Constraints | None,
        rng: np.random.Generator,
        now_s: float,
        *,
        pinned: str | None = None,
        capacity: CapacityTracker | None = None,
    ) -> Choice: ...

    def update(
        self,
        state: TaskState,
        models: Sequence[ModelSpec],
        policy: TaskPolicy,
        outcome: Outcome,
        *,
        source: tuple[int, int] | None = None,
    ) -> TaskState: ...


class _Learner:
    """Learning shared by every policy: the production update on the shared TaskState."""

    name = "learner"

    def update(
        self,
        state: TaskState,
        models: Sequence[ModelSpec],
        policy: TaskPolicy,
        outcome: Outcome,
        *,
        source: tuple[int, int] | None = None,
    ) -> TaskState:
        return update(state, models, policy, outcome, source=source)


class ThompsonPolicy(_Learner):
    """The production cost-aware Thompson sampler."""

    name = "thompson"

    def choose(
        self,
        state: TaskState,
        models: Sequence[ModelSpec],
        policy: TaskPolicy,
        constraints: Constraints | None,
        rng: np.random.Generator,
        now_s: float,
        *,
        pinned: str | None = None,
        capacity: CapacityTracker | None = None,
    ) -> Choice:
        return choose(state, models, policy, constraints, rng, now_s, pinned=pinned, capacity=capacity)

    def choose_batch(
        self,
        state: TaskState,
        models: Sequence[ModelSpec],
        policy: TaskPolicy,
        n: int,
        rng: np.random.Generator,
        now_s: float,
    ) -> npt.NDArray[np.intp]:
        """Rows in ``state.names`` of ``n`` decisions on the same state (the replay's delayed-feedback block)."""
        return choose_batch(state, models, policy, n, rng, now_s)


class PlainThompsonPolicy(ThompsonPolicy):
    """Thompson sampling on quality only: ignores cost, latency, budgets and exploration guards."""

    name = "thompson_plain"

    def __init__(self) -> None:
        self._derived: dict[int, tuple[TaskPolicy, TaskPolicy]] = {}

    def _plain(self, policy: TaskPolicy) -> TaskPolicy:
        cached = self._derived.get(id(policy))
        if cached is None or cached[0] is not policy:
            plain = dataclasses.replace(
                policy,
                objective="utility",
                lam=0.0,
                mu=0.0,
                schedule=(),
                budget_mean_cost_usd=None,
                budget_usd_per_min=None,
                min_share={},
                max_share={},
                default_min_share=0.0,
                default_max_share=1.0,
                new_model_floor=0.0,
                canary_floor=0.0,
                canary_ceiling=1.0,
            )
            cached = (policy, plain)
            self._derived[id(policy)] = cached
        return cached[1]

    def choose(
        self,
        state: TaskState,
        models: Sequence[ModelSpec],
        policy: TaskPolicy,
        constraints: Constraints | None,
        rng: np.random.Generator,
        now_s: float,
        *,
        pinned: str | None = None,
        capacity: CapacityTracker | None = None,
    ) -> Choice:
        plain = self._plain(policy)
        if state.dual:
            state = dataclasses.replace(state, dual=0.0)
        choice = choose(state, models, plain, constraints, rng, now_s, pinned=pinned, capacity=capacity)
        return dataclasses.replace(choice, policy_name=self.name)

    def choose_batch(
        self,
        state: TaskState,
        models: Sequence[ModelSpec],
        policy: TaskPolicy,
        n: int,
        rng: np.random.Generator,
        now_s: float,
    ) -> npt.NDArray[np.intp]:
        if state.dual:
            state = dataclasses.replace(state, dual=0.0)
        return choose_batch(state, models, self._plain(policy), n, rng, now_s)


def _plan_choice(state: TaskState, plan: Plan, model: str, propensity: float, policy_name: str) -> Choice:
    """The Choice of a baseline that picked ``model`` from ``plan`` (no sampled utilities to report)."""
    return make_choice(
        model=model,
        fallbacks=tuple(n for n in plan.names if n != model),
        propensity=propensity,
        sampled={},
        means=plan.means,
        explored=model != plan.best,
        filtered=plan.filtered,
        circuit_open=plan.circuit_open,
        no_eligible=None,
        state_version=state.version,
        policy_name=policy_name,
    )


class _DrawPolicy(_Learner):
    """Base for samplers defined by ``draw``: positions in ``plan.names`` of ``n`` independent decisions."""

    propensity_samples = 256

    def draw(
        self, state: TaskState, plan: Plan, policy: TaskPolicy, n: int, rng: np.random.Generator, now_s: float
    ) -> npt.NDArray[np.intp]:
        raise NotImplementedError

    def choose(
        self,
        state: TaskState,
        models: Sequence[ModelSpec],
        policy: TaskPolicy,
        constraints: Constraints | None,
        rng: np.random.Generator,
        now_s: float,
        *,
        pinned: str | None = None,
        capacity: CapacityTracker | None = None,
    ) -> Choice:
        plan = get_plan(state, models, policy, constraints, now_s, capacity, policy_name=self.name)
        if plan.fixed is not None:
            return plan.fixed
        if not plan.names:  # only half-open probes: the production coupling handles them
            return choose(state, models, policy, constraints, rng, now_s, pinned=pinned, capacity=capacity)
        if pinned is not None and pinned in plan.names:
            j, propensity = plan.names.index(pinned), 1.0
        else:
            j = int(self.draw(state, plan, policy, 1, rng, now_s)[0])
            key = (self.name, "propensity", id(plan))
            shares = state.cache.get(key)
            if shares is None:  # Monte Carlo with a fixed seed, once per plan
                picks = self.draw(
                    state, plan, policy, self.propensity_samples, np.random.default_rng(0), now_s
                )
                shares = np.bincount(picks, minlength=len(plan.names)) / self.propensity_samples
                state.cache[key] = shares
            propensity = float(shares[j])
        model = plan.names[j]
        return _plan_choice(state, plan, model, propensity, self.name)

    def choose_batch(
        self,
        state: TaskState,
        models: Sequence[ModelSpec],
        policy: TaskPolicy,
        n: int,
        rng: np.random.Generator,
        now_s: float,
    ) -> npt.NDArray[np.intp]:
        """Rows in ``state.names`` of ``n`` decisions on the same state (the replay's delayed-feedback block)."""
        plan = get_plan(state, models, policy, None, now_s, policy_name=self.name)
        if plan.fixed is not None or not plan.names:
            picks = (self.choose(state, models, policy, None, rng, now_s).model for _ in range(n))
            return np.array([state.index(m) if m else -1 for m in picks], dtype=np.intp)
        return np.asarray(plan.index[self.draw(state, plan, policy, n, rng, now_s)], dtype=np.intp)


class NaiveThompsonPolicy(_DrawPolicy):
    """The naive reference: Beta(1, 1) on quality, the empirical mean cost, nothing else.

    Each decision samples every eligible model's quality from ``Beta(1 + successes, 1 + failures)`` (the
    catalog prior and any pooling are ignored) and picks the largest ``quality - w * mean_cost`` with ``w`` the
    policy's λ (the pacing dual in budget mode). No guards, no normal approximation, no cost uncertainty.
    A default that learns worse than this is a regression the replay and the evaluation suite show at once.
    """

    name = "thompson_naive"

    def draw(
        self, state: TaskState, plan: Plan, policy: TaskPolicy, n: int, rng: np.random.Generator, now_s: float
    ) -> npt.NDArray[np.intp]:
        idx = plan.index
        success = state.stats[idx, Q_SUM] * state.scale
        total = state.stats[idx, Q_N] * state.scale
        objective, lam, _ = effective_objective(policy, now_s)
        penalty = cost_weight(state, objective, lam) * state.mean_cost_usd[idx]
        draws = rng.beta(1.0 + success, 1.0 + np.maximum(total - success, 0.0), size=(n, len(idx))) - penalty
        return np.asarray(draws.argmax(axis=1), dtype=np.intp)


class TopTwoThompsonPolicy(_DrawPolicy):
    """Top-two Thompson sampling (Russo 2016) on the production posterior: with probability ``leader_share``
    the leader of one posterior draw, else the leader of a second draw among the other models. An
    alternative the evaluation suite compares with the default."""

    name = "thompson_top_two"
    leader_share = 0.5

    def draw(
        self, state: TaskState, plan: Plan, policy: TaskPolicy, n: int, rng: np.random.Generator, now_s: float
    ) -> npt.NDArray[np.intp]:
        leader = plan.posterior.pick(plan.posterior.draw(rng, n), rng)
        if len(plan.names) < 2:
            return leader
        second = plan.posterior.draw(rng, n)
        second[np.arange(n), leader] = -np.inf
        challenger = np.asarray(second.argmax(axis=1), dtype=np.intp)
        return np.where(rng.random(n) < self.leader_share, leader, challenger)


class _IndexPolicy(_DrawPolicy):
    """Base for policies that pick one eligible model by a rule; subclasses implement ``pick``."""

    def pick(self, state: TaskState, plan: Plan, rng: np.random.Generator) -> tuple[int, float]:
        raise NotImplementedError

    def choose(
        self,
        state: TaskState,
        models: Sequence[ModelSpec],
        policy: TaskPolicy,
        constraints: Constraints | None,
        rng: np.random.Generator,
        now_s: float,
        *,
        pinned: str | None = None,
        capacity: CapacityTracker | None = None,
    ) -> Choice:
        plan = get_plan(state, models, policy, constraints, now_s, capacity, policy_name=self.name)
        if plan.fixed is not None:
            return plan.fixed
        if not plan.names:  # only half-open probes are left
            j_name = plan.probes[int(rng.integers(len(plan.probes)))]
            j, propensity, names = -1, plan.probe_share, [j_name]
        elif pinned is not None and pinned in plan.names:
            j, propensity, names = plan.names.index(pinned), 1.0, plan.names
        else:
            j, propensity = self.pick(state, plan, rng)
            names = plan.names
        model = names[j] if j >= 0 else names[0]
        return _plan_choice(state, plan, model, propensity, self.name)

    def draw(
        self, state: TaskState, plan: Plan, policy: TaskPolicy, n: int, rng: np.random.Generator, now_s: float
    ) -> npt.NDArray[np.intp]:
        return np.array([self.pick(state, plan, rng)[0] for _ in range(n)], dtype=np.intp)


class UniformPolicy(_IndexPolicy):
    name = "uniform"

    def pick(self, state: TaskState, plan: Plan, rng: np.random.Generator) -> tuple[int, float]:
        k = len(plan.names)
        return int(rng.integers(k)), 1.0 / k


class RoundRobinPolicy(_IndexPolicy):
    """Cycles through the eligible models; keeps its position in the instance (one per replay)."""

    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def pick(self, state: TaskState, plan: Plan, rng: np.random.Generator) -> tuple[int, float]:
        j = self._next % len(plan.names)
        self._next += 1
        return j, 1.0


class CheapestPolicy(_IndexPolicy):
    """Always the eligible model with the lowest posterior mean cost."""

    name = "cheapest"

    def pick(self, state: TaskState, plan: Plan, rng: np.random.Generator) -> tuple[int, float]:
        cost, _ = cost_moments(state)
        return int(np.argmin(cost[plan.index])), 1.0


class BestPriorPolicy(_IndexPolicy):
    """Always the eligible model with the best catalog quality prior (never learns)."""

    name = "best_prior"

    def pick(self, state: TaskState, plan: Plan, rng: np.random.Generator) -> tuple[int, float]:
        prior = state.stats[plan.index, PRIOR_A] / (
            state.stats[plan.index, PRIOR_A] + state.stats[plan.index, PRIOR_B]
        )
        return int(np.argmax(prior)), 1.0


class EpsilonGreedyPolicy(_IndexPolicy):
    """Best posterior mean utility, or a uniform pick with probability ε."""

    name = "epsilon_greedy"

    def __init__(self, epsilon: float = 0.1) -> None:
        self.epsilon = epsilon

    def pick(self, state: TaskState, plan: Plan, rng: np.random.Generator) -> tuple[int, float]:
        k = len(plan.names)
        greedy = int(np.argmax(plan.mean))
        j = int(rng.integers(k)) if rng.random() < self.epsilon else greedy
        return j, self.epsilon / k + (1.0 - self.epsilon if j == greedy else 0.0)


class UCB1Policy(_IndexPolicy):
    """UCB1 on mean utility: mean + sqrt(2 ln N / n_i); untried models first."""

    name = "ucb1"

    def pick(self, state: TaskState, plan: Plan, rng: np.random.Generator) -> tuple[int, float]:
        seen = state.stats[plan.index, N_OBS]
        if np.any(seen == 0):
            return int(np.argmin(seen)), 1.0
        bonus = np.sqrt(2.0 * math.log(float(seen.sum())) / seen)
        return int(np.argmax(plan.mean + bonus)), 1.0


class GreedyQualityPolicy(_IndexPolicy):
    """Best posterior mean quality, ignoring cost (an "always the best model" reference)."""

    name = "best_quality"

    def pick(self, state: TaskState, plan: Plan, rng: np.random.Generator) -> tuple[int, float]:
        mean, _ = quality_moments(state, "beta")
        return int(np.argmax(mean[plan.index])), 1.0


_FACTORIES: dict[str, Callable[[], RoutingPolicy]] = {
    "thompson": ThompsonPolicy,
    "thompson_plain": PlainThompsonPolicy,
    "thompson_naive": NaiveThompsonPolicy,
    "thompson_top_two": TopTwoThompsonPolicy,
    "uniform": UniformPolicy,
    "round_robin": RoundRobinPolicy,
    "cheapest": CheapestPolicy,
    "best_prior": BestPriorPolicy,
    "epsilon_greedy": EpsilonGreedyPolicy,
    "ucb1": UCB1Policy,
}

POLICIES: dict[str, RoutingPolicy] = {name: factory() for name, factory in _FACTORIES.items()}


def make_policy(name: str) -> RoutingPolicy:
    """A fresh instance of a registered policy (stateful ones such as round-robin start over)."""
    try:
        return _FACTORIES[name]()
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(sorted(_FACTORIES))}") from None
