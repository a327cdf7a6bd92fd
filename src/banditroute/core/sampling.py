"""Posterior draws of each eligible model's utility: the one place Thompson samples are made.

Decisions (``block``, ``choose_batch``) and the Monte Carlo choice probabilities (``propensity``) both draw
from :class:`UtilityPosterior`, so the propensities a decision reports belong to the sampler that made it.

Samplers (``TaskPolicy.sampler``):

- ``"normal"``: utility ~ N(mean, sd²), moment-matched to the quality, cost and latency posteriors (the sampler
  of banditroute 0.1). Its tails ignore that quality lies in [0, 1], so it explores a model whose price alone
  rules it out.
- ``"clipped"``: the same normal draw of the quality part, clipped to the utility a model would have at
  quality 0 and at quality 1 with its posterior mean cost and latency. A model whose price cannot be paid
  for even by perfect quality is then never sampled above that ceiling: it is explored only while another
  model's draw falls below it.
- ``"beta"``: quality drawn from its Beta posterior itself, minus the mean cost and latency penalty (prices
  are known well: their posterior is not sampled). Exact for 0/1 and fractional scores under the Beta
  reward; a Gaussian-reward policy falls back to ``"clipped"``. Under a robust mixture prior
  (``core.robust``) each draw first picks the mixture's component by its posterior weight, then the quality.

Budget mode with a mean cost per request (``TaskPolicy.pacing = "knapsack"``) does not price cost with a
learnt dual variable. Each decision solves, for its own sampled qualities, the linear program "best mix of
models with mean cost at most B" (B corrected for the spend so far, see ``objective.effective_budget``) and
draws a model from that mix. With one budget constraint the mix holds at most two models, one on each side
of B, so a model costing ten times the budget is only ever picked in a mix that pays for it (Thompson
sampling for bandits with knapsacks, with known prices).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
SAMPLERS = ("normal", "clipped", "beta")


@dataclass(frozen=True, eq=False)
class UtilityPosterior:
    """What a draw needs for the eligible models: moments, utility bounds and Beta parameters."""

    sampler: str
    mean: FloatArray  # posterior mean utility
    sd: FloatArray  # posterior sd of utility (normal, clipped)
    low: FloatArray  # utility at quality 0: -penalty (clipped)
    high: FloatArray  # utility at quality 1: 1 - penalty (clipped)
    alpha: FloatArray  # Beta posterior of quality (beta)
    beta: FloatArray
    penalty: FloatArray  # cost weight x mean cost + mu x mean latency
    cost: FloatArray | None = None  # mean cost per call: set in knapsack budget mode
    budget: float = 0.0  # the mean cost per call the knapsack mix may spend
    # a robust mixture prior (core.robust): the vague component's Beta posterior and the pooled component's
    # posterior weight; each draw of the "beta" sampler first picks the component, then the quality
    vague_alpha: FloatArray | None = None
    vague_beta: FloatArray | None = None
    pooled_weight: FloatArray | None = None

    def __len__(self) -> int:
        return len(self.mean)

    def subset(self, index: npt.NDArray[np.intp]) -> UtilityPosterior:
        return UtilityPosterior(
            self.sampler,
            self.mean[index],
            self.sd[index],
            self.low[index],
            self.high[index],
            self.alpha[index],
            self.beta[index],
            self.penalty[index],
            None if self.cost is None else self.cost[index],
            self.budget,
            None if self.vague_alpha is None else self.vague_alpha[index],
            None if self.vague_beta is None else self.vague_beta[index],
            None if self.pooled_weight is None else self.pooled_weight[index],
        )

    def draw(self, rng: np.random.Generator, rows: int, dtype: type = np.float64) -> npt.NDArray[np.floating]:
        """``rows`` independent utility vectors, shape (rows, k)."""
        k = len(self.mean)
        if self.sampler == "beta":
            if (
                self.pooled_weight is not None
                and self.vague_alpha is not None
                and self.vague_beta is not None
            ):
                pooled = rng.random((rows, k)) < self.pooled_weight
                a = np.where(pooled, self.alpha, self.vague_alpha)
                b = np.where(pooled, self.beta, self.vague_beta)
                out = rng.beta(a, b)
            else:
                out = rng.beta(self.alpha, self.beta, size=(rows, k))
            out -= self.penalty
            return out.astype(dtype, copy=False)
        z = rng.standard_normal((rows, k), dtype=dtype)
        z *= self.sd.astype(dtype, copy=False)
        z += self.mean.astype(dtype, copy=False)
        if self.sampler == "clipped":
            np.clip(z, self.low.astype(dtype, copy=False), self.high.astype(dtype, copy=False), out=z)
        return z

    def pick(self, draws: npt.NDArray[np.floating], rng: np.random.Generator) -> npt.NDArray[np.intp]:
        """The chosen column of each row of ``draws``: the argmax, or a draw from the row's knapsack mix (one
        uniform per row from ``rng``, taken only in knapsack mode)."""
        if self.cost is None:
            return np.asarray(draws.argmax(axis=1), dtype=np.intp)
        u = rng.random(len(draws))
        first, second, weight = knapsack_mix(draws, self.cost, self.budget)
        return np.where(u < weight, second, first)

    def shares(self, draws: npt.NDArray[np.floating]) -> FloatArray:
        """Mean over rows of each column's choice probability (what ``pick`` would choose, in expectation)."""
        rows, k = draws.shape
        if self.cost is None:
            return np.bincount(draws.argmax(axis=1), minlength=k) / float(rows)
        first, second, weight = knapsack_mix(draws, self.cost, self.budget)
        total = np.bincount(first, weights=1.0 - weight, minlength=k)
        total += np.bincount(second, weights=weight, minlength=k)
        return np.asarray(total / float(rows), dtype=np.float64)


def knapsack_mix(
    quality: npt.NDArray[np.floating], cost: FloatArray, budget: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], FloatArray]:
    """Per row, the best mix of columns with mean cost <= ``budget``: (first, second, weight of second).

    Solves max sum_j p_j q_j s.t. sum_j p_j c_j <= B, p a distribution, for every row of ``quality`` at once.
    An optimal vertex is one affordable column alone, or a pair (i, j) with c_i <= B < c_j mixed to spend
    exactly B. When nothing is affordable the cheapest column is taken.
    """
    rows, k = quality.shape
    affordable = cost <= budget
    if not affordable.any():
        cheapest = np.full(rows, int(cost.argmin()), dtype=np.intp)
        return cheapest, cheapest, np.zeros(rows)
    single_q = np.where(affordable, quality, -np.inf)
    single = np.asarray(single_q.argmax(axis=1), dtype=np.intp)
    single_value = single_q[np.arange(rows), single]
    lo, hi = np.flatnonzero(affordable), np.flatnonzero(~affordable)
    if len(hi) == 0:
        return single, single, np.zeros(rows)
    frac = (budget - cost[lo])[:, None] / (cost[hi][None, :] - cost[lo][:, None])  # weight on the dear one
    q_lo = quality[:, lo][:, :, None]
    q_hi = quality[:, hi][:, None, :]
    value = (q_lo + (q_hi - q_lo) * frac[None, :, :]).reshape(rows, -1)
    best = value.argmax(axis=1)
    pair = value[np.arange(rows), best] > single_value
    first = np.where(pair, lo[best // len(hi)], single)
    second = np.where(pair, hi[best % len(hi)], single)
    weight = np.where(pair, frac.ravel()[best], 0.0)
    return first.astype(np.intp), second.astype(np.intp), weight
