"""Quality priors pooled over task types, for the learner of a worker.

The evaluation suite's defaults pool evidence across task types (:mod:`banditroute.core.pooling`: each task
type's prior for a model is the model's mean over the other task types, worth as many observations as the
task types agree). A worker holds every task type's newest state (the state topic is read by all), so its
learner can do the same: each state key it learns gets the priors pooled from the states it knows, within
limits that keep the isolation the worker promises (docs/guarantees.md):

* a tenant's key (``tenant|task_type``) pools only with that tenant's other keys, and keys without a tenant
  only with each other: one tenant's outcomes never move another tenant's posteriors;
* ``~shared`` (the state of every task type past ``limits.max_task_types``, whatever names a client sent) is
  neither pooled from nor given pooled priors: a flood of junk task types does not move the priors of the task
  types that have state of their own.

The pooled table is recomputed from those states at most every ``interval_s`` (a numpy pass over task types x
models) and on a change of configuration; between two computations a learnt key takes the table's row. A
key that is not in the table yet (new, or evicted) keeps its priors until the next computation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from banditroute.core import TaskState
from banditroute.core.pooling import PooledTable, pooled_table, with_priors
from banditroute.limits import SHARED_KEY, TENANT_SEPARATOR
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
        self._catalog: tuple[int, Priors] = (-1, {})  # (snapshot version, its catalog's priors)
        self._at = float("-inf")
        self._version = -1
        self.computed = 0

    def priors(self, snapshot: RoutingSnapshot, key: str, names: tuple[str, ...]) -> Priors | None:
        """``key``'s pooled prior for each model of ``names`` (None: ``key`` was not known when the table was
        computed). With pooling off, the catalog's ``quality_prior`` of each model: a key pooled while it was on
        is back under the catalog's priors at its next learnt batch."""
        catalog = self._catalog_priors(snapshot)
        if snapshot.pooled_prior_strength <= 0:
            return catalog
        now = self._clock()
        if snapshot.version != self._version or now - self._at >= self.interval_s:
            self._recompute(snapshot, now)
        return None if self._table is None else self._table.row(key, names, catalog)

    def _catalog_priors(self, snapshot: RoutingSnapshot) -> Priors:
        """Each model's ``quality_prior`` in ``snapshot`` (built once per snapshot version)."""
        if self._catalog[0] != snapshot.version:
            self._catalog = (snapshot.version, {m.name: m.quality_prior for m in snapshot.models})
        return self._catalog[1]

    def pooled(self, snapshot: RoutingSnapshot, key: str, state: TaskState) -> TaskState:
        """``state`` under ``key``'s pooled priors (the same object when there is nothing to change)."""
        priors = self.priors(snapshot, key, state.names)
        return state if priors is None else with_priors(state, priors)

    def _recompute(self, snapshot: RoutingSnapshot, now: float) -> None:
        self._at, self._version = now, snapshot.version
        states = {k: s for k, s in self._states() if k != SHARED_KEY}
        self.computed += 1
        self._table = (
            pooled_table(states, max_strength=snapshot.pooled_prior_strength, group_of=tenant_of)
            if len(states) >= 2
            else None
        )


def tenant_of(key: str) -> str:
    """The tenant of a state key, "" for a key without one: the group a key's priors are pooled within."""
    tenant, separator, _ = key.partition(TENANT_SEPARATOR)
    return tenant if separator else ""


__all__ = ["RECOMPUTE_S", "PriorPool", "Priors", "tenant_of"]
