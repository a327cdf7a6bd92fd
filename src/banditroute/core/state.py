"""Per-task-type learning state: one float64 matrix (models x statistics) plus a few scalars.

Discounting multiplies every model's evidence by ``g = 0.5 ** (1 / half_life)`` per event. Instead of touching
all models on every event we keep the evidence *unnormalised* and a global ``scale = g ** events``: the true
value of a discounted column is ``stored * scale``, and a new observation is added as ``x / scale``. That makes
an update O(1) in the number of models. ``scale`` is folded back into the matrix before it underflows.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from banditroute.core.models import ModelSpec, TaskPolicy

FloatArray = npt.NDArray[np.float64]

# Column layout of TaskState.stats (one row per model).
PRIOR_A, PRIOR_B = 0, 1  # Beta prior of quality (not discounted)
Q_SUM, Q_N, Q_SQ = 2, 3, 4  # quality: sum, count, sum of squares (discounted)
C_N, C_SUM, C_SQ = 5, 6, 7  # cost per call (discounted; seeded with catalog pseudo-observations)
L_N, L_SUM, L_SQ = 8, 9, 10  # latency ms (discounted; seeded likewise)
ERR, OK = 11, 12  # error/success mass in the circuit window (decayed per own event)
N_OBS = 13  # outcomes ever applied (not discounted)
CONSEC = 14  # consecutive failures
CIRCUIT = 15  # 1.0 while the breaker is open (half-open once now >= OPEN_UNTIL)
OPEN_UNTIL = 16  # unix seconds
LAST_AT = 17  # unix seconds of the last outcome
FAST, FAST_N = 18, 19  # short exponentially weighted mean of quality and its count (change detection)
N_COLUMNS = 20
DISCOUNTED = slice(Q_SUM, L_SQ + 1)

PRIOR_PSEUDO_CALLS = 2.0  # weight of the catalog cost/latency prior, in calls
PRIOR_CV = 0.5  # assumed coefficient of variation of the catalog prior
RESCALE_BELOW = 1e-120
ROW = struct.Struct(f"={N_COLUMNS}d")  # one stats row of a C-ordered native float64 matrix
PENDING = "_pending"  # __dict__ key of a not yet materialised stats matrix: (base, {row: values})
THREAD_CACHE = "_thread_cache"  # __dict__ key of the state's ThreadCache
HANDOFF = "_plan_handoff"  # __dict__ key of the state's PlanHandoff


class ThreadCache(threading.local):
    """Derived data of one state version with one dict per thread: what a thread caches (plans, pre-drawn
    blocks, propensities) only that thread sees, so deciding on a state shared with other threads never writes
    to anything they read."""

    def __init__(self) -> None:
        self.entries: dict[Any, Any] = {}


class PlanHandoff:
    """What threads share of one state version's decision plans (``core.plan``), besides their own caches.

    ``shapes``: the request shapes (plan cache key -> models, policy, constraints, policy name) a thread built
    or took a plan for on this version, so that whoever publishes the next version can build its plans before
    a decision asks (``core.plan.prepare_plans``). ``ready``: plans built so for this version, each taken
    (``dict.pop``) by the one thread that then owns it. Only single dict operations touch either (atomic under
    the GIL): the one place a decision writes to something another thread reads."""

    __slots__ = ("ready", "shapes")

    def __init__(self) -> None:
        self.shapes: dict[Any, Any] = {}
        self.ready: dict[Any, Any] = {}


@dataclass(frozen=True, eq=False)
class TaskState:
    """Learning state of one task type. Treat as immutable: every change returns a new object.

    ``applied`` maps a source partition to the highest offset already applied (the streaming layer's
    idempotency watermark); ``version`` increases on every update. ``cache`` holds derived, rebuildable data
    (decision plans, propensities) for this exact version, private to the calling thread, and is never
    serialised.
    """

    names: tuple[str, ...]
    stats: FloatArray
    scale: float = 1.0
    version: int = 0
    events: int = 0
    dual: float = 0.0
    spend_rate_per_min: float = 0.0
    spend_at_s: float = 0.0
    spend_total_usd: float = 0.0
    spend_calls: int = 0
    budget_offset_usd: float = 0.0  # a shared budget's share and slack (core.budget); encoded when not 0
    applied: Mapping[int, int] = field(default_factory=dict)

    @property
    def cache(self) -> dict[Any, Any]:
        """The calling thread's cache of derived data for this version (see :class:`ThreadCache`)."""
        holder = self.__dict__.get(THREAD_CACHE)
        if (
            holder is None
        ):  # a state no other thread has seen yet (shared ones are made ready by ``shareable``)
            holder = self.__dict__.setdefault(THREAD_CACHE, ThreadCache())
        entries: dict[Any, Any] = holder.entries
        return entries

    @property
    def handoff(self) -> PlanHandoff | None:
        """The plans shared between threads for this version (see :class:`PlanHandoff`); None until
        :func:`shareable` made the state ready for other threads."""
        handoff: PlanHandoff | None = self.__dict__.get(HANDOFF)
        return handoff

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the cache (a thread-local holder cannot be pickled, and is rebuilt anyway)."""
        values = dict(self.__dict__)
        values.pop(THREAD_CACHE, None)
        values.pop(HANDOFF, None)
        return values

    # --- derived views (true, discounted values) -------------------------------------------------------
    def index(self, name: str) -> int:
        return self.names.index(name)

    def column(self, col: int) -> FloatArray:
        """A statistic for all models with the discount applied."""
        values: FloatArray = self.stats[:, col]
        return values * self.scale if Q_SUM <= col <= L_SQ else values.copy()

    @property
    def alpha(self) -> FloatArray:
        """Beta posterior alpha of quality (fractional scores add ``q`` to alpha, ``1 - q`` to beta)."""
        return self.stats[:, PRIOR_A] + self.stats[:, Q_SUM] * self.scale

    @property
    def beta(self) -> FloatArray:
        return self.stats[:, PRIOR_B] + (self.stats[:, Q_N] - self.stats[:, Q_SUM]) * self.scale

    @property
    def mean_cost_usd(self) -> FloatArray:
        """Posterior mean cost of one call (the catalog price until calls are observed)."""
        return np.asarray(self.stats[:, C_SUM] / self.stats[:, C_N], dtype=np.float64)

    @property
    def mean_latency_ms(self) -> FloatArray:
        return np.asarray(self.stats[:, L_SUM] / self.stats[:, L_N], dtype=np.float64)

    @property
    def observations(self) -> FloatArray:
        return self.stats[:, N_OBS].copy()

    @property
    def consecutive_failures(self) -> FloatArray:
        return self.stats[:, CONSEC].copy()

    @property
    def open_until_s(self) -> FloatArray:
        return np.where(self.stats[:, CIRCUIT] > 0, self.stats[:, OPEN_UNTIL], 0.0)

    def circuit_state(self, now_s: float) -> dict[str, str]:
        """ "closed", "open" or "half_open" per model at ``now_s``."""
        out = {}
        for name, flag, until in zip(
            self.names, self.stats[:, CIRCUIT], self.stats[:, OPEN_UNTIL], strict=True
        ):
            out[name] = "closed" if flag == 0 else ("open" if now_s < until else "half_open")
        return out


class _LazyStats:
    """Non-data descriptor behind ``TaskState.stats`` for states made by ``update`` (copy-on-write).

    A state built normally has ``stats`` in its ``__dict__``, which wins over this descriptor, so reading it
    costs nothing extra. A state made by ``update`` has only ``PENDING``; the first read materialises the matrix
    and stores it in the instance ``__dict__`` (like ``functools.cached_property``, without its lock).
    """

    def __get__(self, state: TaskState | None, owner: type | None = None) -> Any:
        if state is None:
            return self
        values = state.__dict__
        if PENDING not in values:
            raise AttributeError("stats")
        stats = materialize(*values[PENDING])
        values["stats"] = stats
        return stats


if not TYPE_CHECKING:
    TaskState.stats = _LazyStats()  # set after @dataclass so it is not taken as the field's default


def native_rows(stats: FloatArray) -> FloatArray:
    """``stats`` itself when its rows can be read with :data:`ROW` (C-ordered native float64), else a copy."""
    if stats.flags.c_contiguous and stats.dtype == np.float64 and stats.dtype.isnative:
        return stats
    return np.ascontiguousarray(stats, dtype=np.float64)


def materialize(base: FloatArray, rows: Mapping[int, tuple[float, ...]]) -> FloatArray:
    """A fresh, writable stats matrix: ``base`` (never modified) with ``rows`` written over it.

    ``update`` does not copy the (models x columns) matrix: the new state keeps the parent's matrix as
    ``base`` plus the rows that changed since, and the matrix is built here on the first read of ``stats``.
    A run of updates between two reads (the learn agent folding a batch) thus costs one copy, not one each.
    """
    stats = base.copy()
    size = ROW.size
    for j, row in rows.items():
        ROW.pack_into(stats, j * size, *row)  # type: ignore[arg-type]  # ndarray is a buffer
    return stats


def shareable(state: TaskState) -> TaskState:
    """``state`` itself, made ready to be read by other threads without any of them writing to it: its stats
    matrix materialised, its per-thread cache holder and its :class:`PlanHandoff` in place. Called before a
    state is published to the decide thread (the :class:`~banditroute.routing.StateView`, the routing
    snapshot's prior)."""
    _ = state.stats
    _ = state.cache
    state.__dict__.setdefault(HANDOFF, PlanHandoff())
    return state


def replace_state(state: TaskState, **changes: Any) -> TaskState:
    """A copy of ``state`` with ``changes`` (fresh, empty cache); cheaper than ``dataclasses.replace``."""
    values = dict(state.__dict__)
    values.update(changes)
    values.pop(THREAD_CACHE, None)
    values.pop(HANDOFF, None)
    new = object.__new__(TaskState)
    new.__dict__.update(values)
    return new


def _prior_row(spec: ModelSpec, scale: float) -> list[float]:
    row = [0.0] * N_COLUMNS
    row[PRIOR_A], row[PRIOR_B] = spec.quality_prior
    for n_col, s_col, q_col, mean in (
        (C_N, C_SUM, C_SQ, spec.cost_per_call_usd),
        (L_N, L_SUM, L_SQ, spec.latency_ms),
    ):
        row[n_col] = PRIOR_PSEUDO_CALLS / scale
        row[s_col] = PRIOR_PSEUDO_CALLS * mean / scale
        row[q_col] = PRIOR_PSEUDO_CALLS * mean * mean * (1.0 + PRIOR_CV**2) / scale
    return row


def new_state(models: Sequence[ModelSpec], policy: TaskPolicy | None = None) -> TaskState:
    """Fresh state for one task type: quality from each model's Beta prior, cost/latency from the catalog."""
    names = tuple(m.name for m in models)
    if len(set(names)) != len(names):
        raise ValueError("model names must be unique")
    stats = np.array([_prior_row(m, 1.0) for m in models], dtype=np.float64).reshape(len(models), N_COLUMNS)
    return TaskState(names=names, stats=stats)


def sync_models(state: TaskState, models: Sequence[ModelSpec], policy: TaskPolicy | None = None) -> TaskState:
    """Add catalog models the state does not know yet (with their priors), appended at the end.

    Existing rows keep their position and statistics, including models that disappeared from the catalog or
    were retired (kept for audit; the catalog decides whether they get traffic). Returns ``state`` itself when
    nothing is new.
    """
    known = set(state.names)
    added = [m for m in models if m.name not in known]
    if len({m.name for m in added}) != len(added):
        raise ValueError("model names must be unique")
    if not added:
        return state
    rows = np.array([_prior_row(m, state.scale) for m in added], dtype=np.float64)
    stats = np.vstack([state.stats, rows])
    names = state.names + tuple(m.name for m in added)
    return replace_state(state, names=names, stats=stats, version=state.version + 1)
