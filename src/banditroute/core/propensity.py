"""Probability that Thompson sampling picks each model, and the exploration guards applied on top of it.

``thompson_probabilities`` is a Monte Carlo estimate with ``n`` draws from a generator seeded by the state
version and the eligible set, so it is reproducible and computed once per (version, eligible set). Its
standard error is ``sqrt(p * (1 - p) / n)``: at most 0.0079 for the default n = 4000.

``bound_shares`` then clips the distribution into per-model [min, max] shares (canary floor/ceiling, new
model floor, min/max share) and redistributes the difference in proportion to the Thompson probabilities.
"""

from __future__ import annotations

import zlib

import numpy as np
import numpy.typing as npt

from banditroute.core.sampling import UtilityPosterior

FloatArray = npt.NDArray[np.float64]
CHUNK = 8192


def thompson_probabilities(posterior: UtilityPosterior, n: int, seed: tuple[int, ...]) -> FloatArray:
    """Monte Carlo estimate of P(argmax of the posterior's utility draws = i), with the decisions' sampler."""
    k = len(posterior)
    if k == 0:
        return np.zeros(0)
    if k == 1:
        return np.ones(1)
    rng = np.random.default_rng(list(seed))
    total = np.zeros(k, dtype=np.float64)
    done = 0
    while done < n:
        rows = min(CHUNK, n - done)
        total += posterior.shares(posterior.draw(rng, rows)) * rows
        done += rows
    return total / float(n)


def eligibility_seed(version: int, key: bytes) -> tuple[int, int, int]:
    return (version & 0xFFFFFFFF, version >> 32, zlib.crc32(key))


def bound_shares(p: FloatArray, low: FloatArray, high: FloatArray) -> FloatArray:
    """Closest distribution to ``p`` (proportional redistribution) with ``low <= share <= high``.

    Infeasible bounds are relaxed: floors are scaled down if they add up to more than 1 and ceilings scaled
    up if they add up to less than 1.
    """
    k = len(p)
    if k == 0:
        return p.copy()
    low = np.clip(low, 0.0, 1.0)
    high = np.clip(np.maximum(high, low), 0.0, 1.0)
    if low.sum() > 1.0:
        low = low / low.sum()
    if high.sum() < 1.0:
        high = high / high.sum() if high.sum() > 0 else np.ones(k)
    q = np.clip(p, low, high)
    for _ in range(2 * k + 2):
        gap = 1.0 - q.sum()
        if abs(gap) < 1e-12:
            break
        free = q < high - 1e-15 if gap > 0 else q > low + 1e-15
        if not free.any():
            break
        weight = np.where(free, p, 0.0)
        if weight.sum() <= 0:
            weight = free.astype(np.float64)
        q = np.clip(q + gap * weight / weight.sum(), low, high)
    total = q.sum()
    return q / total if total > 0 else np.full(k, 1.0 / k)
