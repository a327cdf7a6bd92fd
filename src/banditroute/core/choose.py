"""Cost-aware Thompson sampling: filter the eligible models, sample utilities, pick the best.

All per-state work (eligibility, utility moments, choice probabilities, guards) is done once per state
version and request shape and cached on the state as a ``Plan``; a single decision then costs one normal
draw of k values, an argmax and a sort for the fallbacks.

Exploration guards and half-open circuit probes are applied as a *coupling* on top of the Thompson draw:
with probability ``probe_total`` a half-open model is probed; otherwise the Thompson winner ``j`` is kept with
probability ``min(1, target_j / thompson_j)`` and else replaced by a draw from the excess
``max(target - thompson, 0)``. The marginal probability of each model is exactly its guarded target share,
which is what ``Choice.propensity`` reports (up to the Monte Carlo error of the Thompson probabilities).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from banditroute.core.capacity import CapacityTracker
from banditroute.core.models import (
    NO_CONSTRAINTS,
    Choice,
    Constraints,
    ModelSpec,
    SampledUtilities,
    TaskPolicy,
    make_choice,
)
from banditroute.core.objective import cost_moments, effective_objective, latency_moments, utility_moments
from banditroute.core.propensity import bound_shares, eligibility_seed, thompson_probabilities
from banditroute.core.state import CIRCUIT, N_OBS, OPEN_UNTIL, TaskState

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
POLICY_NAME = "thompson"
MAX_PLANS_PER_STATE = 256
MAX_PROBE_TOTAL = 0.5
FIRST_BLOCK = 8  # decisions pre-drawn the first time a plan is used with an rng
MAX_BLOCK = 256  # block size cap (memory: ~k * 8 bytes of draws plus one fallback tuple per row)
BLOCK_GROWTH = 4


@dataclass(eq=False)
class Plan:
    """Everything a decision needs for one (state version, catalog, policy, constraints, capacity mask)."""

    models: Sequence[ModelSpec]
    policy: TaskPolicy
    since_s: float
    until_s: float
    names: list[str]  # eligible models with a closed circuit, in state order
    index: IntArray  # their rows in the state
    mean: FloatArray
    sd: FloatArray
    thompson: FloatArray  # P(Thompson winner), Monte Carlo
    target: FloatArray  # guarded share of each eligible closed model, already times (1 - probe_total)
    ratio: FloatArray  # keep-probability of the Thompson winner in the coupling
    excess_cum: FloatArray  # cumulative redistribution distribution
    mixing: bool
    probes: list[str]  # half-open models
    probe_share: float
    probe_total: float
    means: dict[str, float]
    best: str | None
    filtered: dict[str, str]
    circuit_open: tuple[str, ...]
    fixed: Choice | None  # the answer when nothing is eligible (relaxed or rejected)
    policy_name: str
    block: Block | None = None  # pre-drawn decisions for one rng (see ``_draw_block``)
    block_size: int = FIRST_BLOCK  # size of the next block; grows geometrically up to MAX_BLOCK
    name_tuple: tuple[str, ...] = ()
    positions: dict[str, int] = field(default_factory=dict)


def _catalog(models: Sequence[ModelSpec]) -> dict[str, ModelSpec]:
    return {m.name: m for m in models}


def _reason(spec: ModelSpec | None, name: str, c: Constraints, cost: float, latency: float) -> str | None:
    if spec is None or spec.lifecycle == "retired":
        return "retired"
    if not spec.enabled:
        return "disabled"
    if spec.lifecycle == "shadow":
        return "shadow"
    if name in c.deny:
        return "deny"
    if c.allow is not None and name not in c.allow:
        return "not_allowed"
    if c.capabilities and not c.capabilities <= spec.capabilities:
        return "capability"
    if c.min_context_tokens is not None and spec.context_window is not None:
        if spec.context_window < c.min_context_tokens:
            return "capability"
    if c.max_cost_usd is not None and cost > c.max_cost_usd:
        return "max_cost"
    if c.max_latency_ms is not None and latency > c.max_latency_ms:
        return "max_latency"
    return None


def _share_bounds(
    state: TaskState, policy: TaskPolicy, catalog: dict[str, ModelSpec], index: IntArray
) -> tuple[FloatArray, FloatArray]:
    low, high = [], []
    for i in index.tolist():
        name = state.names[i]
        spec = catalog[name]
        seen = state.stats[i, N_OBS]
        lo = policy.min_share.get(name, policy.default_min_share)
        hi = policy.max_share.get(name, policy.default_max_share)
        if spec.lifecycle == "canary" and seen < policy.canary_observations:
            lo, hi = max(lo, policy.canary_floor), min(hi, policy.canary_ceiling)
        elif seen < policy.new_model_observations:
            lo = max(lo, policy.new_model_floor)
        low.append(lo)
        high.append(hi)
    return np.array(low, dtype=np.float64), np.array(high, dtype=np.float64)


def build_plan(
    state: TaskState,
    models: Sequence[ModelSpec],
    policy: TaskPolicy,
    constraints: Constraints,
    now_s: float,
    blocked: npt.NDArray[np.bool_] | None = None,
    policy_name: str = POLICY_NAME,
) -> Plan:
    """Compute the cached decision plan (slow path; once per state version and request shape)."""
    catalog = _catalog(models)
    objective, lam, mu = effective_objective(policy, now_s, constraints.objective_override)
    mean_all, sd_all = utility_moments(state, policy, objective, lam, mu)
    cost, _ = cost_moments(state)
    latency, _ = latency_moments(state)
    flags, until = state.stats[:, CIRCUIT], state.stats[:, OPEN_UNTIL]
    filtered: dict[str, str] = {}
    closed: list[int] = []
    probes: list[int] = []
    circuit_open = []
    since, valid_until = now_s, np.inf
    if policy.schedule:
        valid_until = (now_s // 3600.0 + 1.0) * 3600.0
        since = now_s // 3600.0 * 3600.0
    for i, name in enumerate(state.names):
        is_open = flags[i] > 0 and now_s < until[i]
        if flags[i] > 0:
            if is_open:
                circuit_open.append(name)
                valid_until = min(valid_until, float(until[i]))
            else:
                since = max(since, float(until[i]))
        reason = _reason(catalog.get(name), name, constraints, float(cost[i]), float(latency[i]))
        if reason is None and is_open:
            reason = "circuit_open"
        if reason is None and blocked is not None and blocked[i]:
            reason = "at_capacity"
        if reason is not None:
            filtered[name] = reason
        elif flags[i] > 0:
            probes.append(i)
        else:
            closed.append(i)
    index = np.array(closed, dtype=np.intp)
    mean, sd = mean_all[index], sd_all[index]
    names = [state.names[i] for i in closed]
    key = index.tobytes() + b"|" + np.array(probes, dtype=np.intp).tobytes()
    thompson = thompson_probabilities(
        mean, sd, policy.propensity_samples, eligibility_seed(state.version, key)
    )
    low, high = _share_bounds(state, policy, catalog, index)
    guarded = bound_shares(thompson, low, high)
    probe_names = [state.names[i] for i in probes]
    if probes and not closed:
        probe_share, probe_total = 1.0 / len(probes), 1.0
    elif probes:
        probe_total = min(MAX_PROBE_TOTAL, policy.circuit_probe_share * len(probes))
        probe_share = probe_total / len(probes)
    else:
        probe_share = probe_total = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(thompson > 0, np.minimum(1.0, guarded / thompson), (guarded > 0).astype(np.float64))
    excess = np.maximum(guarded - thompson, 0.0)
    excess = excess if excess.sum() > 0 else guarded.copy()
    excess_cum = np.cumsum(excess / excess.sum()) if len(excess) else excess
    mixing = bool(probes) or bool(np.any(np.abs(guarded - thompson) > 1e-12))
    means = {state.names[i]: float(mean_all[i]) for i in closed + probes}
    best = max(means, key=means.__getitem__) if means else None
    fixed: Choice | None = None
    if not closed and not probes:
        answer = _none_eligible(state, policy, catalog, constraints, cost, flags, until, now_s, blocked)
        fixed = make_choice(
            **{
                **answer,
                "filtered": filtered,
                "circuit_open": tuple(circuit_open),
                "policy_name": policy_name,
            }
        )
    return Plan(
        models=models,
        policy=policy,
        since_s=since,
        until_s=float(valid_until),
        names=names,
        index=index,
        mean=mean,
        sd=sd,
        thompson=thompson,
        target=guarded * (1.0 - probe_total),
        ratio=ratio,
        excess_cum=excess_cum,
        mixing=mixing,
        probes=probe_names,
        probe_share=probe_share,
        probe_total=probe_total,
        means=means,
        best=best,
        filtered=filtered,
        circuit_open=tuple(circuit_open),
        fixed=fixed,
        policy_name=policy_name,
        name_tuple=tuple(names),
        positions={name: i for i, name in enumerate(names)},
    )


def _none_eligible(
    state: TaskState,
    policy: TaskPolicy,
    catalog: dict[str, ModelSpec],
    constraints: Constraints,
    cost: FloatArray,
    flags: FloatArray,
    until: FloatArray,
    now_s: float,
    blocked: npt.NDArray[np.bool_] | None,
) -> dict[str, Any]:
    """Cheapest model ignoring allow/max-cost/max-latency/capacity (never deny, capability, open circuit)."""
    model = None
    if policy.when_none_eligible == "cheapest":
        relaxed = Constraints(
            deny=constraints.deny,
            capabilities=constraints.capabilities,
            min_context_tokens=constraints.min_context_tokens,
        )
        candidates = [
            i
            for i, name in enumerate(state.names)
            if _reason(catalog.get(name), name, relaxed, 0.0, 0.0) is None
            and not (flags[i] > 0 and now_s < until[i])
        ]
        if candidates:
            model = state.names[min(candidates, key=lambda i: (cost[i], i))]
    return {
        "model": model,
        "fallbacks": (),
        "propensity": 1.0 if model is not None else 0.0,
        "sampled": {},
        "means": {},
        "explored": False,
        "no_eligible": "relaxed_to_cheapest" if model is not None else "rejected",
        "state_version": state.version,
    }


def get_plan(
    state: TaskState,
    models: Sequence[ModelSpec],
    policy: TaskPolicy,
    constraints: Constraints | None,
    now_s: float,
    capacity: CapacityTracker | None = None,
    policy_name: str = POLICY_NAME,
) -> Plan:
    """The cached plan for this request shape, rebuilt when the catalog/policy object, time window or
    capacity mask changes."""
    constraints = NO_CONSTRAINTS if constraints is None else constraints
    blocked = None
    if capacity is not None:
        blocked = capacity.blocked(state.names, now_s)
        if not blocked.any():
            blocked = None
    key = (id(models), id(policy), constraints, None if blocked is None else blocked.tobytes(), policy_name)
    cache = state.cache
    plan: Plan | None = cache.get(key)
    if (
        plan is None
        or plan.models is not models
        or plan.policy is not policy
        or not plan.since_s <= now_s < plan.until_s
    ):
        if len(cache) >= MAX_PLANS_PER_STATE:
            cache.clear()
        plan = build_plan(state, models, policy, constraints, now_s, blocked, policy_name)
        cache[key] = plan
    return plan


class Block:
    """``size`` pre-drawn, independent decisions for one plan and one rng; ``choose`` hands out one row per call.

    Row ``i`` holds a utility vector ``z[i] ~ N(mean, sd^2)`` (the same normal approximation as a single draw),
    its Thompson winner, the guard/probe coupling already applied with the row's own uniforms, the chosen
    model, its propensity (the plan's target share: the true marginal choice probability) and the fallback
    order (the other eligible models by sampled utility). The state is fixed within a version, so these are
    exactly the draws that successive single calls would make, only taken from the rng in one go.
    """

    __slots__ = (
        "rng",
        "models",
        "policy",
        "constraints",
        "since_s",
        "until_s",
        "plan",
        "pos",
        "size",
        "z",
        "rows",
        "static",
    )

    def __init__(self, plan: Plan, rng: np.random.Generator, size: int, state_version: int) -> None:
        self.rng = rng  # held (not just its id) so a recycled id can never pick up these draws
        self.models = plan.models
        self.policy = plan.policy
        self.constraints: Constraints | None = None
        self.since_s = plan.since_s
        self.until_s = plan.until_s
        self.plan = plan
        self.pos = 0
        self.size = size
        k = len(plan.names)
        z = rng.standard_normal((size, k))
        z *= plan.sd
        z += plan.mean
        self.z = z
        names = plan.name_tuple
        order = np.argsort(-z, axis=1)  # descending sampled utility; column 0 is the Thompson winner
        if k == 0:  # only half-open probes are eligible: every row probes
            u_probe = rng.random(size)
            picked = np.full(size, -1, dtype=np.intp)
        elif plan.mixing:
            u = rng.random((3, size))
            u_probe = u[0]
            win = order[:, 0]
            keep = u[1] < plan.ratio[win]
            redirect = np.minimum(np.searchsorted(plan.excess_cum, u[2], side="right"), k - 1)
            picked = np.where(keep, win, redirect)
            if plan.probes:
                picked[u_probe < plan.probe_total] = -1
        else:
            picked = order[:, 0].copy()
            unseen = plan.target[picked] == 0.0  # Monte Carlo never saw this winner: use the estimate
            if unseen.any():
                redo = np.searchsorted(np.cumsum(plan.target), rng.random(int(unseen.sum())), side="right")
                picked[unseen] = np.minimum(redo, k - 1)
        probe_rows = np.flatnonzero(picked < 0).tolist()
        model_idx = picked.tolist()
        prop = plan.target[np.maximum(picked, 0)].tolist() if k else [0.0] * size
        # fallbacks: the row's order without the chosen model (a probe keeps all k closed models)
        fallback_idx = order[order != picked[:, None]]
        if probe_rows:
            cut = np.cumsum(np.where(picked < 0, k, k - 1))[:-1]
            fallbacks = [tuple(names[i] for i in part.tolist()) for part in np.split(fallback_idx, cut)]
            for r in probe_rows:
                slot = min(int(u_probe[r] / plan.probe_share), len(plan.probes) - 1)
                model_idx[r] = -1 - slot
                prop[r] = plan.probe_share
        else:
            lookup = np.array(names, dtype=object)
            fallbacks = list(map(tuple, lookup[fallback_idx.reshape(size, k - 1)].tolist()))
        best = plan.best
        rows = []
        for m, fb, p in zip(model_idx, fallbacks, prop, strict=True):
            model = names[m] if m >= 0 else plan.probes[-1 - m]
            rows.append((model, fb, p, model != best))
        self.rows = rows
        self.static = (plan.means, plan.filtered, plan.circuit_open, state_version, plan.policy_name)

    def take(self) -> Choice:
        i = self.pos
        self.pos = i + 1
        model, fallbacks, propensity, explored = self.rows[i]
        means, filtered, circuit_open, version, policy_name = self.static
        plan = self.plan
        choice = _new_choice(Choice)
        choice.__dict__.update(
            {
                "model": model,
                "fallbacks": fallbacks,
                "propensity": propensity,
                "sampled": SampledUtilities(plan.name_tuple, plan.positions, self.z, i),
                "means": means,
                "explored": explored,
                "filtered": filtered,
                "circuit_open": circuit_open,
                "no_eligible": None,
                "state_version": version,
                "policy_name": policy_name,
            }
        )
        return choice


_new_choice = object.__new__
_HOT = object()  # state.cache key of the block used by the last plain (unpinned, no capacity) call


def _block(state: TaskState, plan: Plan, rng: np.random.Generator) -> Block:
    """The plan's current block for ``rng``, drawing a new one when it is used up or belongs to another rng.

    Block sizes grow FIRST_BLOCK, x BLOCK_GROWTH, ..., MAX_BLOCK per plan, so a state version that serves only
    a few decisions (the usual case when feedback arrives between requests) draws only a few rows.
    """
    block = plan.block
    if block is None or block.rng is not rng or block.pos >= block.size:
        block = Block(plan, rng, plan.block_size, state.version)
        plan.block_size = min(MAX_BLOCK, plan.block_size * BLOCK_GROWTH)
        plan.block = block
    return block


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
    cache = state.cache
    if pinned is None and capacity is None:
        hot = cache.get(_HOT)
        if (
            hot is not None
            and hot.rng is rng
            and hot.pos < hot.size
            and hot.models is models
            and hot.policy is policy
            and hot.constraints is constraints
            and hot.since_s <= now_s < hot.until_s
        ):
            return hot.take()  # type: ignore[no-any-return]
    plan = get_plan(state, models, policy, constraints, now_s, capacity)
    if plan.fixed is not None:
        return plan.fixed
    block = _block(state, plan, rng)
    if pinned is not None:
        if pinned in plan.means:
            return _pinned_choice(state, plan, pinned, block)
    elif capacity is None:
        block.constraints = constraints
        cache[_HOT] = block
    return block.take()


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

    Samples an (n, k) float32 utility matrix in chunks and takes row-wise argmax, then applies the same
    guard/probe coupling as ``choose``. Returns -1 for rejected requests when nothing is eligible.
    """
    plan = get_plan(state, models, policy, constraints, now_s)
    if plan.fixed is not None:
        model = plan.fixed.model
        return np.full(n, -1 if model is None else state.names.index(model), dtype=np.intp)
    out = np.empty(n, dtype=np.intp)
    k = len(plan.names)
    if k:
        mean = plan.mean.astype(np.float32)
        sd = plan.sd.astype(np.float32)
        chunk = max(1, 262144 // k)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            draws = rng.standard_normal((stop - start, k), dtype=np.float32)
            draws *= sd
            draws += mean
            out[start:stop] = draws.argmax(axis=1)
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
