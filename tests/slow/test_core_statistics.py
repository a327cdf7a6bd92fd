"""Statistical behaviour of the cost-aware Thompson sampler on synthetic models (fixed seeds, wide margins)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog

from banditroute.core import ModelSpec, Outcome, TaskPolicy, choose, new_state, update_many

pytestmark = pytest.mark.slow


def simulate(  # type: ignore[no-untyped-def]
    models, policy, quality, cost, n, seed, change_at=None, new_quality=None, learn_every=1
):
    """Run n decide/learn rounds with Bernoulli quality; returns chosen indices.

    Outcomes are learnt in blocks of ``learn_every`` decisions, as a worker learns a batch of feedback at a time
    (each new state version costs a propensity plan of a few milliseconds; blocks keep the slow layer short).
    """
    rng = np.random.default_rng(seed)
    state = new_state(models, policy)
    chosen = np.empty(n, dtype=int)
    q = np.array(quality, dtype=float)
    block: list[Outcome] = []
    for t in range(n):
        if change_at is not None and t == change_at:
            q = np.array(new_quality, dtype=float)
        choice = choose(state, models, policy, None, rng, float(t))
        assert choice.model is not None
        i = state.names.index(choice.model)
        chosen[t] = i
        outcome = Outcome(
            choice.model,
            quality=float(rng.random() < q[i]),
            cost_usd=cost[i],
            latency_ms=500.0,
            at_s=float(t),
        )
        block.append(outcome)
        if len(block) == learn_every:
            state = update_many(state, models, policy, block)
            block = []
    return chosen


def catalog(quality, cost):  # type: ignore[no-untyped-def]
    return tuple(ModelSpec(f"m{i}", cost_per_call_usd=c) for i, c in enumerate(cost))


def test_best_utility_model_dominates_after_2000_decisions() -> None:
    rng = np.random.default_rng(42)
    quality = rng.uniform(0.4, 0.75, 15)
    cost = rng.uniform(0.001, 0.02, 15)
    quality[7], cost[7] = 0.85, 0.004  # utility 0.81 with λ = 10; the runner-up is well below
    policy = TaskPolicy(lam=10.0)
    utility = quality - policy.lam * cost
    assert np.argmax(utility) == 7 and np.sort(utility)[-2] < utility[7] - 0.05
    # Learning in blocks of 10, one run's share after 2000 decisions was 0.805-0.934 over seeds 1-20 (mean 0.88),
    # with the odd run stuck longer on a runner-up; the mean over three independent runs is the robust statistic.
    shares = [
        np.mean(
            simulate(catalog(quality, cost), policy, quality, cost, 3000, seed=seed, learn_every=10)[2000:]
            == 7
        )
        for seed in (1, 2, 3)
    ]
    assert np.mean(shares) >= 0.8, shares


def test_traffic_moves_within_500_decisions_after_an_abrupt_change() -> None:
    quality = [0.85, 0.7, 0.6, 0.5, 0.4]
    cost = [0.002] * 5
    after = [0.55, 0.7, 0.6, 0.5, 0.4]  # the best drops by 0.3; m1 is the new best
    policy = TaskPolicy()  # default half-life 20,000; the change detector does the fast part
    change, window = 2000, 100
    chosen = simulate(
        catalog(quality, cost), policy, quality, cost, change + 500, 3, change_at=change, new_quality=after
    )
    assert np.mean(chosen[change - window : change] == 0) > 0.8
    ends = range(change + window, change + 501)
    moved = [end for end in ends if np.mean(chosen[end - window : end] == 1) > 0.5]
    assert moved, "m1 never had the majority of a 100-decision window within 500 decisions"


def test_budget_mode_holds_mean_cost_and_matches_best_fixed_mixture() -> None:
    quality = np.array([0.55, 0.7, 0.8, 0.85])
    cost = np.array([0.001, 0.004, 0.01, 0.03])
    budget = 0.006
    models = catalog(quality, cost)
    policy = TaskPolicy(objective="budget", budget_mean_cost_usd=budget)
    # Learning in blocks of 10 over seeds 1-10: cost within 0.2 % of the budget, quality 0.003-0.015 below the LP's.
    chosen = simulate(models, policy, quality, cost, 10_000, seed=5, learn_every=10)
    realised_cost = cost[chosen].mean()
    realised_quality = quality[chosen].mean()
    best = linprog(-quality, A_ub=[cost], b_ub=[budget], A_eq=[np.ones(4)], b_eq=[1.0], bounds=[(0, 1)] * 4)
    assert abs(realised_cost / budget - 1.0) <= 0.05, realised_cost
    assert realised_quality >= -best.fun - 0.02, (realised_quality, -best.fun)
