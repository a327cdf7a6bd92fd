"""Posterior moments of each model's utility ``quality - lam * cost - mu * latency`` for one task type.

Thompson sampling here draws utilities from a normal with these moments (moment-matched to the Beta or
Gaussian quality posterior plus the cost/latency posteriors). One decision is then a single vectorised normal
draw, and choice probabilities can be estimated cheaply and consistently with the sampler.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from banditroute.core.models import TaskPolicy
from banditroute.core.robust import mixture_moments, mixture_weight
from banditroute.core.sampling import UtilityPosterior
from banditroute.core.state import (
    C_N,
    C_SQ,
    C_SUM,
    L_N,
    L_SQ,
    L_SUM,
    PRIOR_A,
    PRIOR_B,
    PRIOR_PSEUDO_CALLS,
    Q_N,
    Q_SQ,
    Q_SUM,
    TaskState,
)

FloatArray = npt.NDArray[np.float64]
MIN_RELATIVE_SD = 0.05  # a cost or latency is never assumed more certain than 5 % per observation


def effective_objective(
    policy: TaskPolicy, now_s: float, override: dict[str, Any] | None = None
) -> tuple[str, float, float]:
    """(objective, λ, μ) in force: the policy, then its UTC schedule, then a request override."""
    lam, mu = policy.lam_mu_at(now_s)
    objective = policy.objective
    if override:
        objective = str(override.get("objective", objective))
        lam = float(override.get("lam", lam))
        mu = float(override.get("mu", mu))
    return objective, lam, mu


def quality_moments(state: TaskState, reward: str) -> tuple[FloatArray, FloatArray]:
    """Posterior mean and variance of each model's mean quality."""
    stats, scale = state.stats, state.scale
    prior_a, prior_b = stats[:, PRIOR_A], stats[:, PRIOR_B]
    total = stats[:, Q_N] * scale
    success = stats[:, Q_SUM] * scale
    if reward == "beta":
        a = prior_a + success
        b = prior_b + total - success
        n = a + b
        return a / n, a * b / (n * n * (n + 1.0))
    prior_n = prior_a + prior_b
    mean = (prior_a + success) / (prior_n + total)
    with np.errstate(invalid="ignore", divide="ignore"):
        observed_var = np.where(total > 1.0, stats[:, Q_SQ] * scale / total - (success / total) ** 2, 0.0)
    noise = (prior_n / 12.0 + total * np.maximum(observed_var, 0.0)) / (prior_n + total)
    return mean, np.maximum(noise, 1e-4) / (prior_n + total)


def _mean_var(state: TaskState, n_col: int, s_col: int, q_col: int) -> tuple[FloatArray, FloatArray]:
    stats = state.stats
    mean = stats[:, s_col] / stats[:, n_col]
    spread = np.maximum(stats[:, q_col] / stats[:, n_col] - mean * mean, (MIN_RELATIVE_SD * mean) ** 2)
    calls = np.maximum(stats[:, n_col] * state.scale, PRIOR_PSEUDO_CALLS)
    return mean, spread / calls


def cost_moments(state: TaskState) -> tuple[FloatArray, FloatArray]:
    """Posterior mean and variance of the mean cost of one call."""
    return _mean_var(state, C_N, C_SUM, C_SQ)


def latency_moments(state: TaskState) -> tuple[FloatArray, FloatArray]:
    return _mean_var(state, L_N, L_SUM, L_SQ)


def cost_weight(state: TaskState, objective: str, lam: float) -> float:
    """Utility lost per USD: λ in utility mode (0 in budget mode) plus the pacing dual variable."""
    return (0.0 if objective == "budget" else lam) + state.dual


def utility_posterior(
    state: TaskState,
    policy: TaskPolicy,
    objective: str,
    lam: float,
    mu: float,
    vague: tuple[FloatArray, FloatArray] | None = None,
) -> UtilityPosterior:
    """Everything the policy's sampler draws from, for every model of the state (see ``core.sampling``).

    ``vague`` (each model's catalog Beta prior) with ``policy.pooled_prior_weight`` < 1 and the Beta reward:
    the state's quality prior is taken as the robust mixture of :mod:`banditroute.core.robust`."""
    q_mean, q_var = quality_moments(state, policy.reward)
    mixture = robust_mixture(state, policy, vague)
    if mixture is not None:
        q_mean, q_var = mixture_moments(mixture[2], state.alpha, state.beta, mixture[0], mixture[1])
    c_mean, c_var = cost_moments(state)
    l_mean, l_var = latency_moments(state)
    knapsack = (
        objective == "budget" and policy.pacing == "knapsack" and policy.budget_mean_cost_usd is not None
    )
    if knapsack:  # cost enters through the knapsack mix; the dual only paces a per-minute budget
        weight = state.dual if policy.budget_usd_per_min is not None else 0.0
    else:
        weight = cost_weight(state, objective, lam)
    penalty = weight * c_mean + mu * l_mean
    sd = np.sqrt(q_var + weight * weight * c_var + mu * mu * l_var)
    sampler = policy.sampler
    if sampler == "beta" and policy.reward != "beta":
        sampler = "clipped"
    alpha, beta = state.alpha, state.beta
    vague_alpha = None if mixture is None else mixture[0]
    vague_beta = None if mixture is None else mixture[1]
    scale = policy.exploration
    if scale != 1.0:  # draws with scale x the posterior sd: a Beta's concentration divided by scale²
        sd = sd * scale
        concentration = 1.0 / (scale * scale)
        alpha, beta = alpha * concentration, beta * concentration
        if vague_alpha is not None and vague_beta is not None:
            vague_alpha, vague_beta = vague_alpha * concentration, vague_beta * concentration
    return UtilityPosterior(
        sampler=sampler,
        mean=q_mean - penalty,
        sd=sd,
        low=-penalty,
        high=1.0 - penalty,
        alpha=alpha,
        beta=beta,
        penalty=penalty,
        cost=c_mean if knapsack else None,
        budget=effective_budget(state, policy) if knapsack else 0.0,
        vague_alpha=vague_alpha,
        vague_beta=vague_beta,
        pooled_weight=None if mixture is None else mixture[2],
    )


def robust_mixture(
    state: TaskState, policy: TaskPolicy, vague: tuple[FloatArray, FloatArray] | None
) -> tuple[FloatArray, FloatArray, FloatArray] | None:
    """The vague component's Beta posterior (alpha, beta) and the pooled component's posterior weight, per
    model; None when the mixture is off (weight 1, another reward, no vague prior) or both components agree
    for every model (the state's prior is the vague one: nothing pooled)."""
    if vague is None or policy.pooled_prior_weight >= 1.0 or policy.reward != "beta":
        return None
    stats, scale = state.stats, state.scale
    vague_a, vague_b = vague
    if np.array_equal(stats[:, PRIOR_A], vague_a) and np.array_equal(stats[:, PRIOR_B], vague_b):
        return None
    success = stats[:, Q_SUM] * scale
    failure = np.maximum(stats[:, Q_N] * scale - success, 0.0)
    weight = mixture_weight(
        policy.pooled_prior_weight, stats[:, PRIOR_A], stats[:, PRIOR_B], vague_a, vague_b, success, failure
    )
    return vague_a + success, vague_b + failure, weight


def effective_budget(state: TaskState, policy: TaskPolicy) -> float:
    """The mean cost per call the next decisions may spend: the budget, plus what was under-spent so far (or
    minus what was over-spent) spread over ``pacing_horizon`` calls, so realised mean cost converges to it.
    With a budget shared by several task types (``core.budget``) the slack is theirs together."""
    budget = policy.budget_mean_cost_usd or 0.0
    slack = budget * state.spend_calls - state.spend_total_usd + state.budget_offset_usd
    # at most 4x the task type's target: its budget, or its share of a budget split over task types
    # (``core.budget.allocate_budget`` moves that target by the offset), which may be several times the budget
    ceiling = 4.0 * max(budget, budget + state.budget_offset_usd / policy.pacing_horizon)
    return float(min(max(budget + slack / policy.pacing_horizon, 0.0), ceiling))
