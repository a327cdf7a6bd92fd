"""Learning from outcomes: discounted posteriors, the circuit breaker and budget pacing, all in one pure step.

``update`` copies the state once and applies one outcome; ``update_many`` copies once and applies a batch in
order (same result as folding ``update``, much cheaper). Neither mutates its input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache

from banditroute.core.models import ModelSpec, Outcome, TaskPolicy
from banditroute.core.state import (
    C_N,
    C_SQ,
    C_SUM,
    CIRCUIT,
    CONSEC,
    DISCOUNTED,
    ERR,
    FAST,
    FAST_N,
    L_N,
    L_SQ,
    L_SUM,
    LAST_AT,
    N_OBS,
    OK,
    OPEN_UNTIL,
    Q_N,
    Q_SQ,
    Q_SUM,
    RESCALE_BELOW,
    TaskState,
    replace_state,
)

SPEND_RATE_WINDOW_S = 60.0  # the spend-rate estimate is a 60 s exponentially decayed sum, i.e. USD/min


@lru_cache(maxsize=256)
def _positions(names: tuple[str, ...]) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}


@lru_cache(maxsize=256)
def _decay(half_life: float | None) -> float:
    return 1.0 if half_life is None else 0.5 ** (1.0 / half_life)


def pacing_cost_scale(state: TaskState, policy: TaskPolicy) -> float:
    """USD scale used to normalise the pacing step: the per-call budget, else the mean realised call cost."""
    if policy.budget_mean_cost_usd is not None:
        return policy.budget_mean_cost_usd
    if state.spend_calls > 0 and state.spend_total_usd > 0:
        return state.spend_total_usd / state.spend_calls
    return 1.0


class _Work:
    """A mutable scratch copy of a TaskState used while applying outcomes."""

    __slots__ = ("state", "stats", "scale", "events", "dual", "rate", "rate_at", "spent", "calls", "applied")

    def __init__(self, state: TaskState) -> None:
        self.state = state
        self.stats = state.stats.copy()
        self.scale = state.scale
        self.events = state.events
        self.dual = state.dual
        self.rate = state.spend_rate_per_min
        self.rate_at = state.spend_at_s
        self.spent = state.spend_total_usd
        self.calls = state.spend_calls
        self.applied = state.applied

    def apply(self, policy: TaskPolicy, outcome: Outcome, source: tuple[int, int] | None) -> None:
        if source is not None:
            partition, offset = source
            if self.applied is self.state.applied:
                self.applied = dict(self.applied)
            if offset > self.applied.get(partition, -1):
                self.applied[partition] = offset  # type: ignore[index]
        self.events += 1
        self.scale *= _decay(policy.half_life)
        j = _positions(self.state.names).get(outcome.model)
        if j is None:
            return
        inv = 1.0 / self.scale
        row = self.stats[j].tolist()
        quality = outcome.quality
        if quality is None and outcome.error is not None:
            quality = 0.0  # an errored call delivered nothing
        if quality is not None:
            quality = min(1.0, max(0.0, quality))
            row[Q_SUM] += quality * inv
            row[Q_N] += inv
            row[Q_SQ] += quality * quality * inv
            if policy.half_life is not None and policy.change_window is not None:
                self._detect_change(row, policy.change_window, policy.change_threshold, quality, inv)
        if outcome.cost_usd is not None:
            cost = max(0.0, outcome.cost_usd)
            row[C_N] += inv
            row[C_SUM] += cost * inv
            row[C_SQ] += cost * cost * inv
            if outcome.served:
                self._pace(policy, cost, outcome.at_s)
        if outcome.latency_ms is not None:
            latency = max(0.0, outcome.latency_ms)
            row[L_N] += inv
            row[L_SUM] += latency * inv
            row[L_SQ] += latency * latency * inv
        row[N_OBS] += 1.0
        row[LAST_AT] = max(row[LAST_AT], outcome.at_s)
        self._circuit(row, policy, outcome.error is not None, outcome.at_s)
        self.stats[j] = row
        if self.scale < RESCALE_BELOW:
            self.stats[:, DISCOUNTED] *= self.scale
            self.scale = 1.0

    def _detect_change(
        self, row: list[float], window: int, threshold: float, quality: float, inv: float
    ) -> None:
        """Cut a model's quality evidence when its recent EWMA is far from the posterior (abrupt change)."""
        rate = 1.0 / window
        row[FAST] = quality if row[FAST_N] == 0 else row[FAST] + rate * (quality - row[FAST])
        row[FAST_N] += 1.0
        if row[FAST_N] < window or row[Q_N] * self.scale <= 2.0 * window:
            return
        mean = row[Q_SUM] / row[Q_N]
        spread = max(row[Q_SQ] / row[Q_N] - mean * mean, 0.01)
        if abs(row[FAST] - mean) > threshold * math.sqrt(spread * rate / (2.0 - rate)):
            keep = window * inv / row[Q_N]
            row[Q_SUM], row[Q_N], row[Q_SQ] = row[FAST] * window * inv, window * inv, row[Q_SQ] * keep
            row[FAST_N] = 0.0

    @staticmethod
    def _circuit(row: list[float], policy: TaskPolicy, failed: bool, at_s: float) -> None:
        keep = 0.5 ** (1.0 / policy.circuit_window)
        row[ERR] = row[ERR] * keep + failed
        row[OK] = row[OK] * keep + (not failed)
        row[CONSEC] = row[CONSEC] + 1.0 if failed else 0.0
        if row[CIRCUIT] > 0:
            if at_s >= row[OPEN_UNTIL]:  # a half-open probe came back
                if failed:
                    row[OPEN_UNTIL] = at_s + policy.circuit_cooldown_s
                else:
                    row[CIRCUIT], row[CONSEC], row[ERR] = 0.0, 0.0, 0.0
            return
        if not failed:
            return
        mass = row[ERR] + row[OK]
        enough = mass >= min(10.0, float(policy.circuit_window))
        if row[CONSEC] >= policy.circuit_consecutive_failures or (
            enough and row[ERR] / mass >= policy.circuit_error_rate
        ):
            row[CIRCUIT], row[OPEN_UNTIL] = 1.0, at_s + policy.circuit_cooldown_s

    def _pace(self, policy: TaskPolicy, cost: float, at_s: float) -> None:
        self.spent += cost
        self.calls += 1
        elapsed = max(0.0, at_s - self.rate_at)
        self.rate = self.rate * math.exp(-elapsed / SPEND_RATE_WINDOW_S) + cost
        self.rate_at = max(self.rate_at, at_s)
        mean_budget, rate_budget = policy.budget_mean_cost_usd, policy.budget_usd_per_min
        if mean_budget is None and rate_budget is None:
            return
        # Normalised constraint violation; the tighter constraint drives the single dual variable.
        violation = -math.inf
        if mean_budget is not None:
            violation = cost / mean_budget - 1.0
        if rate_budget is not None:
            violation = max(violation, self.rate / rate_budget - 1.0)
        scale = mean_budget if mean_budget is not None else max(self.spent / self.calls, 1e-12)
        self.dual = max(0.0, self.dual + policy.pacing_rate * min(violation, 10.0) / scale)

    def freeze(self) -> TaskState:
        return replace_state(
            self.state,
            stats=self.stats,
            scale=self.scale,
            version=self.state.version + 1,
            events=self.events,
            dual=self.dual,
            spend_rate_per_min=self.rate,
            spend_at_s=self.rate_at,
            spend_total_usd=self.spent,
            spend_calls=self.calls,
            applied=self.applied,
        )


def update(
    state: TaskState,
    models: Sequence[ModelSpec],
    policy: TaskPolicy,
    outcome: Outcome,
    *,
    source: tuple[int, int] | None = None,
) -> TaskState:
    """New state after one outcome; ``source=(partition, offset)`` is recorded in ``applied``.

    Every event of the task type discounts all models' evidence by the half-life; the named model then
    gets the observation (an error without a score counts as quality 0), its circuit breaker is updated, and
    served calls feed the budget pacing dual variable. Outcomes naming unknown models only advance
    ``version``/``events``/watermark. ``models`` is accepted for interface symmetry with ``choose``.
    """
    work = _Work(state)
    work.apply(policy, outcome, source)
    return work.freeze()


def update_many(
    state: TaskState,
    models: Sequence[ModelSpec],
    policy: TaskPolicy,
    outcomes: Iterable[Outcome],
    *,
    sources: Iterable[tuple[int, int] | None] | None = None,
) -> TaskState:
    """Apply outcomes in order with a single copy; ``version`` increases once per batch."""
    work = _Work(state)
    items = list(outcomes)
    source_list = list(sources) if sources is not None else [None] * len(items)
    if len(source_list) != len(items):
        raise ValueError("sources must be as long as outcomes")
    for outcome, source in zip(items, source_list, strict=True):
        work.apply(policy, outcome, source)
    return work.freeze()
