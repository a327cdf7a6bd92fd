"""The samplers and the knapsack mix of budget mode, checked against scipy's LP solver and plain Beta draws."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog

from banditroute.core import ModelSpec, Outcome, TaskPolicy, TaskState, new_state, update_many
from banditroute.core.objective import effective_budget, utility_posterior
from banditroute.core.sampling import knapsack_mix


def _lp_value(q: np.ndarray, c: np.ndarray, budget: float) -> float:
    res = linprog(-q, A_ub=c[None, :], b_ub=[budget], A_eq=np.ones((1, len(q))), b_eq=[1.0], bounds=(0, None))
    return float(-res.fun)


@pytest.mark.parametrize("seed", range(5))
def test_knapsack_mix_is_the_lp_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 7
    q = rng.random((40, k))
    c = np.exp(rng.uniform(-8, -3, k))
    budget = float(np.quantile(c, 0.4))
    first, second, weight = knapsack_mix(q, c, budget)
    rows = np.arange(len(q))
    value = (1 - weight) * q[rows, first] + weight * q[rows, second]
    spend = (1 - weight) * c[first] + weight * c[second]
    assert np.all(spend <= budget * (1 + 1e-9))
    for r in range(len(q)):
        assert value[r] == pytest.approx(_lp_value(q[r], c, budget), abs=1e-9)


def test_knapsack_mix_with_nothing_affordable_takes_the_cheapest() -> None:
    q = np.array([[0.9, 0.1, 0.5]])
    c = np.array([3.0, 2.0, 4.0])
    first, second, weight = knapsack_mix(q, c, 1.0)
    assert first[0] == second[0] == 1 and weight[0] == 0.0


def test_beta_sampler_draws_the_posterior() -> None:
    models = [ModelSpec("a", 0.001), ModelSpec("b", 0.002)]
    policy = TaskPolicy(sampler="beta", lam=0.0, exploration=1.0)  # the posterior itself
    state = new_state(models, policy)
    outcomes = [Outcome("a", quality=1.0, cost_usd=0.001)] * 30 + [
        Outcome("a", quality=0.0, cost_usd=0.001)
    ] * 10
    state = update_many(state, models, policy, outcomes)
    post = utility_posterior(state, policy, "utility", 0.0, 0.0)
    draws = post.draw(np.random.default_rng(1), 20000)
    # Beta(31, 11): mean 0.738, sd 0.067; the untouched Beta(1, 1): mean 0.5
    assert draws[:, 0].mean() == pytest.approx(31 / 42, abs=0.005)
    assert draws[:, 0].std() == pytest.approx(0.0671, abs=0.005)
    assert draws[:, 1].mean() == pytest.approx(0.5, abs=0.01)
    assert draws.min() >= 0.0 and draws.max() <= 1.0


def test_clipped_sampler_never_exceeds_perfect_quality_at_its_price() -> None:
    models = [ModelSpec("cheap", 0.0001), ModelSpec("dear", 0.02)]
    policy = TaskPolicy(sampler="clipped", lam=20.0)
    state = new_state(models, policy)
    post = utility_posterior(state, policy, "utility", 20.0, 0.0)
    draws = post.draw(np.random.default_rng(2), 5000)
    assert draws[:, 1].max() <= 1.0 - 20.0 * 0.02 + 1e-12
    assert draws[:, 0].min() >= -20.0 * 0.0001 - 1e-12


def test_effective_budget_pays_back_overspend() -> None:
    models = [ModelSpec("a", 0.001)]
    policy = TaskPolicy(objective="budget", budget_mean_cost_usd=0.001, pacing_horizon=100.0)
    state = new_state(models, policy)
    assert effective_budget(state, policy) == pytest.approx(0.001)
    spent = update_many(state, models, policy, [Outcome("a", quality=1.0, cost_usd=0.003)] * 10)
    # 10 calls at 0.003 overspent 0.02 against 0.01: pay it back over 100 calls -> 0.001 - 0.0002
    assert effective_budget(spent, policy) == pytest.approx(0.0008)


def test_policy_yaml_names_sampler_and_pacing() -> None:
    policy = TaskPolicy.from_mapping({"sampler": "clipped", "pacing": "dual", "pacing_horizon": 50})
    assert (policy.sampler, policy.pacing, policy.pacing_horizon) == ("clipped", "dual", 50.0)
    with pytest.raises(ValueError, match="sampler must be one of normal, clipped, beta"):
        TaskPolicy.from_mapping({"sampler": "fancy"})
    with pytest.raises(ValueError, match="pacing_horizon must be > 0"):
        TaskPolicy.from_mapping({"pacing_horizon": 0})


def _trained(policy: TaskPolicy) -> tuple[list[ModelSpec], TaskState]:
    models = [ModelSpec("a", 0.001), ModelSpec("b", 0.002)]
    outcomes = [Outcome("a", quality=1.0, cost_usd=0.001)] * 30 + [
        Outcome("a", quality=0.0, cost_usd=0.001)
    ] * 10
    return models, update_many(new_state(models, policy), models, policy, outcomes)


@pytest.mark.parametrize("sampler", ["beta", "normal", "clipped"])
def test_exploration_scales_the_spread_of_the_draws_and_keeps_their_mean(sampler: str) -> None:
    full = TaskPolicy(sampler=sampler, lam=0.0, exploration=1.0)
    models, state = _trained(full)
    wide = utility_posterior(state, full, "utility", 0.0, 0.0).draw(np.random.default_rng(3), 40000)
    narrow_policy = TaskPolicy(sampler=sampler, lam=0.0, exploration=0.5)
    narrow = utility_posterior(state, narrow_policy, "utility", 0.0, 0.0).draw(
        np.random.default_rng(3), 40000
    )
    # model a, Beta(31, 11): sd 0.067 from the posterior, about half of it at 0.5 (the Beta's concentration x 4;
    # its sd shrinks by sqrt((n + 1) / (4 n + 1)) with n = 42: 0.504)
    assert wide[:, 0].std() == pytest.approx(0.0671, abs=0.005)
    assert narrow[:, 0].std() == pytest.approx(0.5 * wide[:, 0].std(), rel=0.08)
    assert narrow[:, 0].mean() == pytest.approx(wide[:, 0].mean(), abs=0.005)


def test_exploration_is_validated_from_config() -> None:
    assert TaskPolicy.from_mapping({"exploration": 0.7}).exploration == 0.7
    assert TaskPolicy().exploration == TaskPolicy.from_mapping({}).exploration
    for bad in (0.0, -1.0, 5.0, "wide", True):
        with pytest.raises(ValueError, match="exploration must"):
            TaskPolicy.from_mapping({"exploration": bad})
