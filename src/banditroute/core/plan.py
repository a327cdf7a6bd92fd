"""Decision plans: everything one decision needs, computed once per state version and request shape.

A ``Plan`` filters the eligible models (lifecycle, constraints, open circuits, capacity), computes their
utility moments, the Monte Carlo Thompson probabilities and the guarded target shares, and is cached on the
state so a single decision only draws from it (see ``banditroute.core.block``).

A plan is a function of the state version, the request shape and the time window it holds for (its Monte
Carlo is seeded by the version and the eligible set), so it may be built on another thread: whoever publishes
a new version builds the plans of the shapes the version before was decided with (:func:`prepare_plans`)
and the first decision on the new version takes them (:func:`get_plan`) instead of building them itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from banditroute.core.capacity import CapacityTracker
from banditroute.core.models import NO_CONSTRAINTS, Choice, Constraints, ModelSpec, TaskPolicy, make_choice
from banditroute.core.objective import cost_moments, effective_objective, latency_moments, utility_posterior
from banditroute.core.propensity import bound_shares, eligibility_seed, thompson_probabilities
from banditroute.core.sampling import UtilityPosterior
from banditroute.core.state import CIRCUIT, N_OBS, OPEN_UNTIL, PlanHandoff, TaskState

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
POLICY_NAME = "thompson"
MAX_PLANS_PER_STATE = 256
MAX_PROBE_TOTAL = 0.5
FIRST_BLOCK = 8  # decisions pre-drawn the first time a plan is used with an rng
MAX_SHAPES = 8  # request shapes noted per state version for the next version's plans (PlanHandoff.shapes)


@dataclass(eq=False)
class Plan:
    """Everything a decision needs for one (state version, catalog, policy, constraints, capacity mask)."""

    models: Sequence[ModelSpec]
    policy: TaskPolicy
    since_s: float
    until_s: float
    names: list[str]  # eligible models with a closed circuit, in state order
    index: IntArray  # their rows in the state
    posterior: UtilityPosterior  # what decisions draw from (the eligible closed models)
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
    block: Any = None  # the current core.block.Block for one rng (typed Any: plan sits below block)
    block_size: int = FIRST_BLOCK  # size of the next block; grows geometrically up to block.block_cap(k)
    name_tuple: tuple[str, ...] = ()
    positions: dict[str, int] = field(default_factory=dict)

    @property
    def mean(self) -> FloatArray:
        """Posterior mean utility of the eligible closed models (read from the posterior, not copied)."""
        return self.posterior.mean


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


def _vague_prior(
    state: TaskState, policy: TaskPolicy, catalog: dict[str, ModelSpec]
) -> tuple[FloatArray, FloatArray] | None:
    """Each state model's catalog quality prior (Beta(1, 1) for one the catalog lacks), when a robust mixture
    prior is asked for (``TaskPolicy.pooled_prior_weight`` < 1); else None."""
    if policy.pooled_prior_weight >= 1.0:
        return None
    prior = np.array([catalog[m].quality_prior if m in catalog else (1.0, 1.0) for m in state.names])
    return prior[:, 0].astype(np.float64), prior[:, 1].astype(np.float64)


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
    posterior_all = utility_posterior(state, policy, objective, lam, mu, _vague_prior(state, policy, catalog))
    mean_all = posterior_all.mean
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
    posterior = posterior_all.subset(index)
    names = [state.names[i] for i in closed]
    key = index.tobytes() + b"|" + np.array(probes, dtype=np.intp).tobytes()
    thompson = thompson_probabilities(
        posterior, policy.propensity_samples, eligibility_seed(state.version, key)
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
        posterior=posterior,
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
    """Cheapest model ignoring max-cost/max-latency/capacity. Never outside the request's candidates (allow),
    never denied, lacking a capability or context, or with an open circuit: then the request is rejected."""
    model = None
    if policy.when_none_eligible == "cheapest":
        relaxed = Constraints(
            allow=constraints.allow,
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
    if plan is None or not _holds(plan, models, policy, now_s):
        if len(cache) >= MAX_PLANS_PER_STATE:
            cache.clear()
        handoff = state.handoff
        plan = None
        if handoff is not None:
            plan = handoff.ready.pop(key, None)  # built by the version's publisher: now this thread's alone
            if plan is not None and not _holds(plan, models, policy, now_s):
                plan = None
            if blocked is None:
                _note_shape(handoff, key, (models, policy, constraints, policy_name))
        if plan is None:
            plan = build_plan(state, models, policy, constraints, now_s, blocked, policy_name)
        cache[key] = plan
    return plan


def _holds(plan: Plan, models: Sequence[ModelSpec], policy: TaskPolicy, now_s: float) -> bool:
    """Whether ``plan`` is the plan of these catalog and policy objects at ``now_s``."""
    return plan.models is models and plan.policy is policy and plan.since_s <= now_s < plan.until_s


def _note_shape(handoff: PlanHandoff, key: Any, shape: tuple[Any, ...]) -> None:
    shapes = handoff.shapes
    if key not in shapes and len(shapes) < MAX_SHAPES:
        shapes[key] = shape


def prepare_plans(state: TaskState, previous: TaskState | None, now_s: float) -> int:
    """Build ``state``'s plans for the request shapes ``previous`` (the version it replaces) was decided with
    and leave them in ``state``'s handoff, where the first decision of each shape takes its plan
    (:func:`get_plan`); returns how many were built. Equal to the plans that decision would build (same
    function, same version, catalog and policy objects, taken only for a time inside the window they hold
    for). Called by the publisher after ``state`` is published, so nothing waits for it: a decision that asks
    first builds its own plan, as without it. Only shapes without a capacity mask are prepared, and none
    after a version that no decision asked for a plan (so at most one unused build per version decided on).
    """
    if previous is None:
        return 0
    old, new = previous.handoff, state.handoff
    if old is None or new is None or not old.shapes:
        return 0
    built = 0
    for key, (models, policy, constraints, policy_name) in old.shapes.copy().items():
        if key in new.shapes or key in new.ready:  # a decision asked already, or prepared twice
            continue
        plan = build_plan(state, models, policy, constraints, now_s, None, policy_name)
        if key not in new.shapes:
            new.ready[key] = plan
        built += 1
    return built
