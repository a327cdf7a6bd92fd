"""Cost-aware Thompson sampling: filter the eligible models, sample utilities, pick the best.

All per-state work (eligibility, utility moments, choice probabilities, guards) is done once per state
version and request shape and cached on the state as a ``Plan`` (``banditroute.core.plan``); a single
decision then takes one row of a pre-drawn ``Block`` (``banditroute.core.block``): one normal draw of k
values, an argmax and a sort for the fallbacks.

Exploration guards and half-open circuit probes are applied as a *coupling* on top of the Thompson draw:
with probability ``probe_total`` a half-open model is probed; otherwise the Thompson winner ``j`` is kept with
probability ``min(1, target_j / thompson_j)`` and else replaced by a draw from the excess
``max(target - thompson, 0)``. The marginal probability of each model is exactly its guarded target share,
which is what ``Choice.propensity`` reports (up to the Monte Carlo error of the Thompson probabilities).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from banditroute.core.block import MAX_BLOCK, Block, block_for
from banditroute.core.capacity import CapacityTracker
from banditroute.core.models import Choice, Constraints, ModelSpec, SampledUtilities, TaskPolicy, make_choice
from banditroute.core.plan import FIRST_BLOCK, POLICY_NAME, FloatArray, IntArray, Plan, build_plan, get_plan
from banditroute.core.state import TaskState

# Plan, get_plan, build_plan and the block sizes are re-exported: callers imported them from here.
__all__ = [
    "FIRST_BLOCK",
    "MAX_BLOCK",
    "POLICY_NAME",
    "Block",
    "Plan",
    "build_plan",
    "choose",
    "choose_batch",
    "hot_block",
    "get_plan",
    "propensities",
]

_HOT = object()  # state.cache key of the block used by the last plain (unpinned, no capacity) call


def _pinned_choice(state: TaskState, plan: Plan, pinned: str, block: Block) -> Choice:
    i = block.pos
    block.pos = i + 1
    z = block.z[i]
    order = np.argsort(-z).tolist()
    return make_choice(
        model=pinned,
        fallbacks=tuple(plan.names[i] for i in order if plan.names[i] != pinned),
        propensity=1.0,
        sampled=SampledUtilities(plan.name_tuple, plan.positions, block.z, i),
        means=plan.means,
        explored=pinned != plan.best,
        filtered=plan.filtered,
        circuit_open=plan.circuit_open,
        no_eligible=None,
        state_version=state.version,
        policy_name=plan.policy_name,
    )


def choose(
    state: TaskState,
    models: Sequence[ModelSpec],
    policy: TaskPolicy,
    constraints: Constraints | None,
    rng: np.random.Generator,
    now_s: float,
    *,
    pinned: str | None = None,
    capacity: CapacityTracker | None = None,
) -> Choice:
    """Pick a model for one request by cost-aware Thompson sampling. Pure: the state is not modified.

    ``pinned`` (from a rule) wins with propensity 1 when that model is eligible; otherwise it is ignored.
    ``capacity`` filters models whose buckets are empty; the caller acquires from the chosen model.
    The returned ``means``/``filtered`` dicts are shared with the cache: read them, do not modify them.

    Decisions are served from a block of pre-drawn independent posterior samples cached on the plan for this
    ``rng`` (see :class:`Block`): the same seed and the same sequence of calls give the same choices, and each
    decision is still an independent draw from the posterior of this state version.
    """
    if pinned is None and capacity is None:
        source = hot_block(state, models, policy, constraints, rng, now_s)
        if isinstance(source, Block):
            return source.take()
        assert source.fixed is not None  # hot_block returns a plan only for its fixed answer
        return source.fixed
    plan = get_plan(state, models, policy, constraints, now_s, capacity)
    if plan.fixed is not None:
        return plan.fixed
    block = block_for(state, plan, rng)
    if pinned is not None and pinned in plan.means:
        return _pinned_choice(state, plan, pinned, block)
    return block.take()


def hot_block(
    state: TaskState,
    models: Sequence[ModelSpec],
    policy: TaskPolicy,
    constraints: Constraints | None,
    rng: np.random.Generator,
    now_s: float,
) -> Block | Plan:
    """What an unpinned :func:`choose` call without capacity would take its answer from: the block whose
    ``pos`` row is the next decision (the caller takes it: reads ``rows[pos]``, ``z[pos]``, then advances
    ``pos``), or the plan when nothing is eligible (its ``fixed`` choice is the answer). Same cache, same draws
    and the same rng use as :func:`choose`: taking the row equals what ``choose`` returns."""
    hot = state.cache.get(_HOT)
    if (
        hot is not None
        and hot.rng is rng
        and hot.pos < hot.size
        and hot.models is models
        and hot.policy is policy
        and hot.constraints is constraints
        and hot.since_s <= now_s < hot.until_s
    ):
        return hot  # type: ignore[no-any-return]
    plan = get_plan(state, models, policy, constraints, now_s)
    if plan.fixed is not None:
        return plan
    block = block_for(state, plan, rng)
    block.constraints = constraints
    state.cache[_HOT] = block
    return block


def _eligible_constraints(state: TaskState, eligible: Iterable[str] | npt.NDArray[np.bool_]) -> Constraints:
    if isinstance(eligible, np.ndarray):
        if eligible.shape != (len(state.names),):
            raise ValueError("eligibility mask must align with state.names")
        return Constraints(
            allow=frozenset(n for n, ok in zip(state.names, eligible.tolist(), strict=True) if ok)
        )
    return Constraints(allow=frozenset(eligible))


def propensities(
    state: TaskState,
    models: Sequence[ModelSpec],
    policy: TaskPolicy,
    eligible: Iterable[str] | npt.NDArray[np.bool_],
    now_s: float,
) -> FloatArray:
    """Probability of choosing each model (aligned to ``state.names``) when ``eligible`` are allowed.

    Includes guards, canary floors/ceilings and half-open probe shares; models filtered by lifecycle or an
    open circuit get 0. Sums to 1 unless nothing is eligible (all zeros). Cached per state version.
    """
    plan = get_plan(state, models, policy, _eligible_constraints(state, eligible), now_s)
    out = np.zeros(len(state.names), dtype=np.float64)
    out[plan.index] = plan.target
    for name in plan.probes:
        out[state.names.index(name)] = plan.probe_share
    return out


def choose_batch(
    state: TaskState,
    models: Sequence[ModelSpec],
    policy: TaskPolicy,
    n: int,
    rng: np.random.Generator,
    now_s: float,
    constraints: Constraints | None = None,
) -> IntArray:
    """Indices into ``state.names`` for ``n`` independent decisions on the same state (no learning between).

    Samples an (n, k) float32 utility matrix in chunks (float64 for the Beta sampler) and takes row-wise argmax, then applies the same
    guard/probe coupling as ``choose``. Returns -1 for rejected requests when nothing is eligible.
    """
    plan = get_plan(state, models, policy, constraints, now_s)
    if plan.fixed is not None:
        model = plan.fixed.model
        return np.full(n, -1 if model is None else state.names.index(model), dtype=np.intp)
    out = np.empty(n, dtype=np.intp)
    k = len(plan.names)
    if k:
        chunk = max(1, 262144 // k)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            out[start:stop] = plan.posterior.pick(plan.posterior.draw(rng, stop - start, np.float32), rng)
        if plan.mixing:
            keep = rng.random(n) < plan.ratio[out]
            redirect = np.minimum(
                np.searchsorted(plan.excess_cum, rng.random(int((~keep).sum())), side="right"), k - 1
            )
            out[~keep] = redirect
        out = plan.index[out]
    if plan.probes:
        probe = rng.random(n) < plan.probe_total
        rows = np.array([state.names.index(p) for p in plan.probes], dtype=np.intp)
        out[probe] = rows[rng.integers(0, len(rows), int(probe.sum()))]
    return out
