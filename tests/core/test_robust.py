"""The robust mixture prior (core.robust): posterior weights, moments, the sampler's draws, and a lock-out."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import integrate, stats

from banditroute.core import ModelSpec, TaskPolicy, new_state
from banditroute.core.models import NO_CONSTRAINTS
from banditroute.core.plan import build_plan
from banditroute.core.pooling import with_priors
from banditroute.core.robust import mixture_moments, mixture_weight
from banditroute.core.sampling import UtilityPosterior
from banditroute.core.state import Q_N, Q_SUM, replace_state


def _marginal(a: float, b: float, s: float, f: float) -> float:
    """∫ q^s (1 - q)^f Beta(q; a, b) dq by quadrature: the component's likelihood of the evidence."""
    value, _ = integrate.quad(lambda q: q**s * (1.0 - q) ** f * stats.beta.pdf(q, a, b), 0.0, 1.0, limit=200)
    return float(value)


@pytest.mark.parametrize(
    ("w", "pooled", "vague", "s", "f"),
    [
        (0.8, (58.0, 44.0), (1.0, 1.0), 30.0, 19.0),  # evidence close to the pooled mean
        (0.8, (58.0, 44.0), (1.0, 1.0), 37.0, 12.0),  # a specialist: above what the pooled prior allows
        (0.5, (20.5, 80.5), (2.0, 3.0), 4.4, 0.6),  # fractional scores, few of them, another vague prior
        (0.9, (101.0, 101.0), (1.0, 1.0), 0.0, 0.0),  # no evidence: the prior weight itself
    ],
)
def test_the_posterior_weight_is_the_prior_weight_times_each_components_marginal_likelihood(
    w: float, pooled: tuple[float, float], vague: tuple[float, float], s: float, f: float
) -> None:
    m1, m0 = _marginal(*pooled, s, f), _marginal(*vague, s, f)
    expected = w * m1 / (w * m1 + (1.0 - w) * m0)
    got = mixture_weight(w, *(np.array([x]) for x in (pooled[0], pooled[1], vague[0], vague[1], s, f)))
    assert got[0] == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_a_conflict_moves_the_weight_to_the_vague_component_and_agreement_to_the_pooled_one() -> None:
    pooled_a, pooled_b = np.array([115.0, 115.0]), np.array([87.0, 87.0])  # mean 0.57, 200 pseudo-calls
    success, failure = np.array([57.0, 219.0]), np.array([43.0, 81.0])  # 0.57 (agrees), 0.73 (conflicts)
    w = mixture_weight(0.8, pooled_a, pooled_b, np.ones(2), np.ones(2), success, failure)
    assert w[0] > 0.9
    assert w[1] < 0.1  # 300 calls at 0.73 against a prior worth 200 at 0.57


def test_equal_components_keep_the_prior_weight() -> None:
    a, b = np.array([3.0, 40.0]), np.array([5.0, 2.0])
    w = mixture_weight(0.7, a, b, a, b, np.array([10.0, 0.0]), np.array([1.0, 7.5]))
    assert w == pytest.approx([0.7, 0.7])


def test_mixture_moments_are_those_of_the_mixture() -> None:
    w, a1, b1, a0, b0 = 0.3, 30.0, 10.0, 2.0, 6.0
    mean, var = mixture_moments(np.array([w]), *(np.array([x]) for x in (a1, b1, a0, b0)))
    grid = np.linspace(0.0, 1.0, 200_001)
    pdf = w * stats.beta.pdf(grid, a1, b1) + (1.0 - w) * stats.beta.pdf(grid, a0, b0)
    m = integrate.trapezoid(grid * pdf, grid)
    assert mean[0] == pytest.approx(m, rel=1e-6)
    assert var[0] == pytest.approx(integrate.trapezoid((grid - m) ** 2 * pdf, grid), rel=1e-4)


def _posterior(weight: float) -> UtilityPosterior:
    zero = np.zeros(2)
    return UtilityPosterior(
        sampler="beta",
        mean=zero,
        sd=zero,
        low=zero,
        high=zero,
        alpha=np.array([900.0, 100.0]),  # pooled component: quality near 0.9 and 0.1
        beta=np.array([100.0, 900.0]),
        penalty=zero,
        vague_alpha=np.array([100.0, 900.0]),  # vague component: near 0.1 and 0.9
        vague_beta=np.array([900.0, 100.0]),
        pooled_weight=np.array([weight, weight]),
    )


def test_the_sampler_draws_each_component_with_its_posterior_weight() -> None:
    draws = _posterior(0.3).draw(np.random.default_rng(5), 20_000)
    from_pooled = (draws[:, 0] > 0.5).mean()
    assert from_pooled == pytest.approx(0.3, abs=0.02)
    assert ((draws[:, 1] > 0.5).mean()) == pytest.approx(0.7, abs=0.02)
    sub = _posterior(1.0).subset(np.array([1], dtype=np.intp))
    assert sub.pooled_weight is not None and sub.vague_alpha is not None
    assert (sub.draw(np.random.default_rng(5), 1000) < 0.5).all()


def _state_with_pooled_prior(weight: float) -> tuple[TaskPolicy, object]:
    models = (ModelSpec("a", 0.001, 100.0), ModelSpec("b", 0.001, 100.0))
    policy = TaskPolicy(lam=0.0, pooled_prior_weight=weight, exploration=1.0)  # the posterior's own spread
    state = new_state(models, policy)
    stats = state.stats.copy()
    stats[:, Q_SUM], stats[:, Q_N] = [60.0, 36.0], [100.0, 40.0]  # own evidence 0.6 and 0.9
    state = with_priors(replace_state(state, stats=stats), {"a": (121.0, 81.0), "b": (61.0, 141.0)})
    return policy, build_plan(state, models, policy, NO_CONSTRAINTS, 0.0)


def test_the_plan_carries_the_mixture_only_when_it_is_asked_for() -> None:
    _, plan = _state_with_pooled_prior(1.0)
    assert plan.posterior.pooled_weight is None  # type: ignore[attr-defined]
    _, plan = _state_with_pooled_prior(0.8)
    posterior = plan.posterior  # type: ignore[attr-defined]
    assert posterior.pooled_weight is not None
    assert posterior.pooled_weight[0] > 0.8  # "a": its evidence agrees with its pooled prior
    assert posterior.pooled_weight[1] < 0.01  # "b": 0.9 on 40 calls against a pooled 0.3
    assert posterior.vague_alpha == pytest.approx([61.0, 37.0])
    assert posterior.mean[1] > posterior.mean[0]  # the mixture's mean follows "b"'s own evidence


def test_the_weight_is_a_validated_policy_field() -> None:
    assert TaskPolicy.from_mapping({"pooled_prior_weight": 0.8}).pooled_prior_weight == 0.8
    with pytest.raises(ValueError, match="pooled_prior_weight"):
        TaskPolicy.from_mapping({"pooled_prior_weight": 1.5})
    assert dataclasses.replace(TaskPolicy(), pooled_prior_weight=0.5).pooled_prior_weight == 0.5
