"""Quality priors pooled over task types, for the learner of a worker.

The evaluation suite's defaults pool evidence across task types (:mod:`banditroute.core.pooling`: each task
type's prior for a model is the model's mean over the other task types, worth as many observations as the
task types agree). A worker holds every task type's newest state (the state topic is read by all), so its
learner can do the same: each state key it learns gets the priors pooled from all the states it knows.

The pooled table is recomputed from those states at most every ``interval_s`` (a numpy pass over task types x
models) and on a change of configuration; between two computations a learnt key takes the table's row. A
key that is not in the table yet (new, or evicted) keeps its priors until the next computation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from banditroute.core import TaskState
from banditroute.core.pooling import PooledTable, pooled_table, with_priors
from banditroute.routing import RoutingSnapshot

Priors = Mapping[str, tuple[float, float]]

RECOMPUTE_S = 1.0
"""How old the pooled table may get before the next learnt batch recomputes it."""


class PriorPool:
    """The pooled prior table of every known state key, recomputed at most every ``interval_s``."""

    def __init__(
        self,
        states: Callable[[], Iterable[tuple[str, TaskState]]],
        *,
        interval_s: float = RECOMPUTE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._states = states
        self.interval_s = interval_s
        self._clock = clock
        self._table: PooledTable | None = None
        self._base: Priors = {}
        self._at = float("-inf")
        self._version = -1
        self.computed = 0

    def priors(self, snapshot: RoutingSnapshot, key: str, names: tuple[str, ...]) -> Priors | None:
        """``key``'s pooled prior for each model of ``names`` (None: pooling is off, or ``key`` was not known
        when the table was computed)."""
        if snapshot.pooled_prior_strength <= 0:
            return None
        now = self._clock()
        if snapshot.version != self._version or now - self._at >= self.interval_s:
            self._recompute(snapshot, now)
        return None if self._table is None else self._table.row(key, names, self._base)

    def pooled(self, snapshot: RoutingSnapshot, key: str, state: TaskState) -> TaskState:
        """``state`` under ``key``'s pooled priors (the same object when there is nothing to change)."""
        priors = self.priors(snapshot, key, state.names)
        return state if priors is None else with_priors(state, priors)

    def _recompute(self, snapshot: RoutingSnapshot, now: float) -> None:
        self._at, self._version = now, snapshot.version
        states = dict(self._states())
        self.computed += 1
        self._base = {m.name: m.quality_prior for m in snapshot.models}
        self._table = (
            pooled_table(states, max_strength=snapshot.pooled_prior_strength) if len(states) >= 2 else None
        )


__all__ = ["RECOMPUTE_S", "PriorPool", "Priors"]
