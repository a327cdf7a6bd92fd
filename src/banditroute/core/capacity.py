"""Token buckets per model for requests/s and tokens/min, so traffic spills to the next model at capacity.

Buckets live in one worker. With N workers each enforces its own buckets, so the fleet allows up to N times
the provider limit; pass ``workers=N`` to give each worker ``limit / N`` instead (exact only if traffic is
spread evenly across workers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from banditroute.core.models import ModelSpec

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class CapacityTracker:
    """Immutable bucket levels; ``acquire``/``record_tokens`` return a new tracker."""

    names: tuple[str, ...]
    rps: FloatArray  # refill per second (inf = unlimited)
    rps_burst: FloatArray
    rps_level: FloatArray
    tpm: FloatArray  # tokens per minute (inf = unlimited)
    tpm_level: FloatArray
    at_s: FloatArray

    @classmethod
    def for_models(
        cls, models: Sequence[ModelSpec], *, workers: int = 1, burst_s: float = 1.0
    ) -> CapacityTracker:
        """Full buckets; ``workers`` divides every limit, ``burst_s`` seconds of rps may be spent at once."""
        if workers < 1:
            raise ValueError("workers must be >= 1")
        rps = np.array([m.rate_limit_rps or np.inf for m in models], dtype=np.float64) / workers
        tpm = np.array([m.tokens_per_minute or np.inf for m in models], dtype=np.float64) / workers
        burst = np.maximum(rps * burst_s, 1.0)
        n = len(models)
        return cls(tuple(m.name for m in models), rps, burst, burst.copy(), tpm, tpm.copy(), np.zeros(n))

    def _levels(self, now_s: float) -> tuple[FloatArray, FloatArray]:
        elapsed = np.maximum(now_s - self.at_s, 0.0)
        with np.errstate(invalid="ignore"):
            rps = np.minimum(self.rps_burst, self.rps_level + elapsed * self.rps)
            tpm = np.minimum(self.tpm, self.tpm_level + elapsed * self.tpm / 60.0)
        return np.where(np.isinf(self.rps), np.inf, rps), np.where(np.isinf(self.tpm), np.inf, tpm)

    def blocked(self, names: Sequence[str], now_s: float) -> BoolArray:
        """Mask aligned to ``names``: True where a model has no request or token budget left right now."""
        rps, tpm = self._levels(now_s)
        full = (rps < 1.0) | (tpm <= 0.0)
        where = {name: i for i, name in enumerate(self.names)}
        return np.array([bool(full[where[n]]) if n in where else False for n in names], dtype=np.bool_)

    def acquire(self, model: str, now_s: float, tokens: float = 0.0) -> CapacityTracker:
        """Spend one request (and an estimate of its tokens) from ``model``'s buckets."""
        return self._spend(model, now_s, 1.0, tokens)

    def record_tokens(self, model: str, now_s: float, tokens: float) -> CapacityTracker:
        """Charge tokens learnt after the call (e.g. from the outcome) to the tokens/min bucket."""
        return self._spend(model, now_s, 0.0, tokens)

    def _spend(self, model: str, now_s: float, requests: float, tokens: float) -> CapacityTracker:
        if model not in self.names:
            return self
        rps, tpm = self._levels(now_s)
        i = self.names.index(model)
        rps[i] -= requests
        tpm[i] -= tokens
        at = np.maximum(self.at_s, now_s)
        return CapacityTracker(self.names, self.rps, self.rps_burst, rps, self.tpm, tpm, at)
