"""Robust mixture priors: the pooled prior mixed with a vague one, weighted by how well each explains the data.

In the spirit of the robust meta-analytic-predictive prior (Schmidli et al. 2014): a task type's quality prior
for a model is ``w Beta(a1, b1) + (1 - w) Beta(a0, b0)``, ``(a1, b1)`` the pooled prior (the catalog's prior
plus the other task types' pseudo-observations, ``core.pooling``) and ``(a0, b0)`` the catalog's prior alone.
After ``s`` successes and ``f`` failures (fractional scores add ``q`` and ``1 - q``) the posterior is again a
mixture, ``w' Beta(a1 + s, b1 + f) + (1 - w') Beta(a0 + s, b0 + f)``, with ``w'`` proportional to ``w`` times
each component's marginal likelihood of the task type's own evidence,
``B(a + s, b + f) / B(a, b)``. Evidence that conflicts with the pooled prior moves the weight to the vague
component, so a model the other task types underrate keeps a chance to be drawn high and is tried again.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def log_beta(a: FloatArray, b: FloatArray) -> FloatArray:
    """``log B(a, b)``, elementwise (scipy.special is imported here: it costs a worker's start otherwise)."""
    from scipy.special import betaln

    return np.asarray(betaln(a, b), dtype=np.float64)


def mixture_weight(
    weight: float | FloatArray,
    pooled_a: FloatArray,
    pooled_b: FloatArray,
    vague_a: FloatArray,
    vague_b: FloatArray,
    success: FloatArray,
    failure: FloatArray,
) -> FloatArray:
    """Posterior weight of the pooled component, per model: ``weight`` its prior weight, the two components'
    Beta parameters and the task type's own (discounted) successes and failures. Where both components are
    equal the weight is ``weight`` itself."""
    log_pooled = log_beta(pooled_a + success, pooled_b + failure) - log_beta(pooled_a, pooled_b)
    log_vague = log_beta(vague_a + success, vague_b + failure) - log_beta(vague_a, vague_b)
    w = np.broadcast_to(np.asarray(weight, dtype=np.float64), log_pooled.shape)
    with np.errstate(divide="ignore"):
        log_odds = np.log(w) - np.log1p(-w) + log_pooled - log_vague
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(log_odds, -700.0, 700.0))), dtype=np.float64)


def mixture_moments(
    weight: FloatArray, a1: FloatArray, b1: FloatArray, a0: FloatArray, b0: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Mean and variance of ``weight Beta(a1, b1) + (1 - weight) Beta(a0, b0)``, elementwise."""
    n1, n0 = a1 + b1, a0 + b0
    m1, m0 = a1 / n1, a0 / n0
    v1 = a1 * b1 / (n1 * n1 * (n1 + 1.0))
    v0 = a0 * b0 / (n0 * n0 * (n0 + 1.0))
    mean = weight * m1 + (1.0 - weight) * m0
    second = weight * (v1 + m1 * m1) + (1.0 - weight) * (v0 + m0 * m0)
    return mean, np.maximum(second - mean * mean, 0.0)
