"""Replay recorded outcomes through the policy core: every policy sees the same request stream.

Each step draws a task type (the file's task mix unless given) and a prompt of that type; the policy picks a
model and learns that model's recorded quality and cost for the prompt. Feedback is delayed: outcomes are
applied in blocks of ``delay`` requests (``update_many``), and all requests of a task type inside a block are
decided on the same state -- with ``choose_batch`` for the Thompson sampler, which makes a replay of 20 000
requests take well under a second.

The utility of a call is ``quality - lam * cost_usd``. The ``oracle`` is the best fixed model per task type
and the ``best single model`` the best fixed model overall, both computed exactly from the table's means under
the replay's task mix; ``captured`` is the share of the oracle's gain over the best single model a policy
realised.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from banditroute.core import (
    ModelSpec,
    Outcome,
    RoutingPolicy,
    TaskPolicy,
    TaskState,
    make_policy,
    new_state,
    update_many,
)
from banditroute.core.budget import BudgetShares, allocate_budget, budget_shares, share_budget
from banditroute.core.pooling import (
    DEFAULT_MAX_STRENGTH,
    DEFAULT_TAU2_METHOD,
    SHARED_TAU2_DF,
    pooled_priors,
    with_priors,
)
from banditroute.core.state import replace_state
from banditroute.sim.priors import FittedPriors
from banditroute.sim.table import OutcomeTable, parse_mix

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

DEFAULT_POLICIES = (
    "thompson",
    "thompson_naive",
    "thompson_plain",
    "uniform",
    "round_robin",
    "cheapest",
    "best_prior",
    "epsilon_greedy",
    "ucb1",
)
POOLED_POLICIES = ("thompson", "thompson_top_two")  # the naive and plain references never pool
SECONDS_PER_REQUEST = 0.01  # synthetic clock: 100 requests per second


@dataclass(frozen=True)
class RouterSetup:
    """What the router is configured with: a catalog per task type and one task policy per task type."""

    models: dict[str, tuple[ModelSpec, ...]]
    policies: dict[str, TaskPolicy]
    pooled_prior_strength: float = 0.0  # the most pseudo-observations a pooled prior may hold; 0 = off
    # "eb": empirical Bayes (core.pooling), "eb:<method>" with a given core.pooling.TAU2_METHODS entry;
    # "fixed": the pre-0.2 fixed-strength pool
    pooling: str = "eb"
    pool_traffic_half: float = 0.0  # core.pooling.pooled_table's traffic_half (a candidate); 0 = off
    pool_shared_df: float = SHARED_TAU2_DF  # pooled_table's shared_df (dl_shared, dl_offset_shared)
    shared_budget: bool = True  # one budget over all task types (as the budget oracle), not one per type
    # a shared budget's split over task types: "sampled" (the budget oracle's split on a posterior draw, the
    # default), "mean" (on posterior means) or "slack" (the same mean cost everywhere); see core.budget
    budget_split: str = "sampled"
    # blocks between two splits: 1 = after every block; more models a worker, which computes the shares about
    # once a second whatever its traffic and applies them with the others' current slack (agents/budget_split.py)
    budget_split_every: int = 1


def catalog_from_table(
    table: OutcomeTable, quality_prior: tuple[float, float] = (1.0, 1.0)
) -> tuple[ModelSpec, ...]:
    """ModelSpecs priced at the table's mean cost per call of each model (the "catalog price")."""
    prices = table.catalog_cost()
    return tuple(
        ModelSpec(name=m, cost_per_call_usd=prices[m], latency_ms=1000.0, quality_prior=quality_prior)
        for m in table.models
    )


def default_setup(
    table: OutcomeTable,
    lam: float,
    budget: float | None = None,
    *,
    half_life: float | None = None,
    pooled_prior_strength: float = DEFAULT_MAX_STRENGTH,
    propensity_samples: int = 64,
    pooling: str = "eb",
    pool_traffic_half: float = 0.0,
    pool_shared_df: float = SHARED_TAU2_DF,
    pool_robust_weight: float = 1.0,
    shared_budget: bool = True,
    budget_split: str = "sampled",
    budget_split_every: int = 1,
    priors: FittedPriors | None = None,
    exploration: float | None = None,
) -> RouterSetup:
    """The router configuration used by ``replay``: catalog prices from the data, λ from the objective,
    no discounting (recorded outcomes are stationary), and empirical-Bayes quality priors pooled over task
    types (:mod:`banditroute.core.pooling`) worth at most ``pooled_prior_strength`` observations, and less
    the more the task types disagree. ``propensity_samples`` is small because a replay never reads the
    propensities (decisions are drawn directly; the Monte Carlo estimate only serves the guards, off here).
    The defaults are chosen by the evaluation suite (``banditroute evaluate-policy``) over every dataset.
    ``priors`` (``banditroute priors fit``) set each task type's starting quality prior per model.
    ``pool_robust_weight`` < 1 (a candidate) makes each pooled prior a robust mixture with that weight on the
    pooled part and the rest on the catalog's prior (``TaskPolicy.pooled_prior_weight``, ``core.robust``).
    ``exploration`` replaces ``TaskPolicy``'s default spread of the Thompson draws (1.0: the posterior's own)."""
    models = catalog_from_table(table)
    per_task = {t: models for t in table.task_types}
    if priors is not None:
        per_task = {
            t: tuple(
                dataclasses.replace(m, quality_prior=priors.for_task(t).get(m.name, m.quality_prior))
                for m in models
            )
            for t in table.task_types
        }
    policy = TaskPolicy(
        objective="utility" if budget is None else "budget",
        lam=lam,
        budget_mean_cost_usd=budget,
        half_life=half_life,
        new_model_floor=0.0,
        propensity_samples=propensity_samples,
        pooled_prior_weight=pool_robust_weight,
        exploration=TaskPolicy.exploration if exploration is None else exploration,
    )
    return RouterSetup(
        models=per_task,
        policies={t: policy for t in table.task_types},
        pooled_prior_strength=pooled_prior_strength,
        pooling=pooling,
        pool_traffic_half=pool_traffic_half,
        pool_shared_df=pool_shared_df,
        shared_budget=shared_budget,
        budget_split=budget_split,
        budget_split_every=budget_split_every,
    )


@dataclass(frozen=True)
class Stream:
    """The request stream shared by all policies: a task index and a prompt index per step."""

    task_types: tuple[str, ...]
    task: IntArray
    prompt: IntArray
    mix: dict[str, float]


def make_stream(table: OutcomeTable, n: int, seed: int, mix: Mapping[str, float] | None = None) -> Stream:
    """``n`` requests: task types drawn from ``mix`` (default: the table's), prompts uniformly per type."""
    tasks = table.task_types
    shares = table.mix() if mix is None else parse_mix(mix, tasks)
    rng = np.random.default_rng([seed, 1])
    p = np.array([shares[t] for t in tasks])
    task = rng.choice(len(tasks), size=n, p=p / p.sum()).astype(np.intp)
    prompt = np.empty(n, dtype=np.intp)
    for i, t in enumerate(tasks):
        where = np.flatnonzero(task == i)
        prompt[where] = rng.integers(0, len(table.tasks[t]), size=len(where))
    return Stream(task_types=tasks, task=task, prompt=prompt, mix=shares)


def one_pass_stream(table: OutcomeTable, seed: int) -> Stream:
    """Every prompt of the table exactly once, in a seeded random order (short horizon, no repeats)."""
    tasks = table.task_types
    task = np.concatenate([np.full(len(table.tasks[t]), i, dtype=np.intp) for i, t in enumerate(tasks)])
    prompt = np.concatenate([np.arange(len(table.tasks[t]), dtype=np.intp) for t in tasks])
    order = np.random.default_rng([seed, 3]).permutation(len(task))
    return Stream(task_types=tasks, task=task[order], prompt=prompt[order], mix=table.mix())


@dataclass
class PolicyRun:
    """Per-step record of one policy's replay: chosen model index, quality, cost, utility."""

    name: str
    chosen: IntArray
    quality: FloatArray
    cost: FloatArray
    utility: FloatArray
    expected_utility: FloatArray  # mean utility of the chosen model on that task type (less noisy)


@dataclass
class ReplayResult:
    """All runs on one stream, plus the oracle and best single model under the same objective."""

    models: tuple[str, ...]
    stream: Stream
    lam: float
    budget: float | None
    runs: list[PolicyRun]
    task_utility: FloatArray  # (tasks, models) mean utility
    task_quality: FloatArray
    task_cost: FloatArray
    seed: int
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def _weights(self) -> FloatArray:
        return np.array([self.stream.mix[t] for t in self.stream.task_types])

    def oracle(self) -> dict[str, float]:
        w = self._weights()
        best = self.task_utility.argmax(axis=1)
        rows = np.arange(len(best))
        return {
            "mean_quality": float(w @ self.task_quality[rows, best]),
            "mean_cost_usd": float(w @ self.task_cost[rows, best]),
            "mean_utility": float(w @ self.task_utility[rows, best]),
        }

    def best_single(self) -> dict[str, Any]:
        w = self._weights()
        j = int((w @ self.task_utility).argmax())
        return {
            "name": self.models[j],
            "mean_quality": float(w @ self.task_quality[:, j]),
            "mean_cost_usd": float(w @ self.task_cost[:, j]),
            "mean_utility": float(w @ self.task_utility[:, j]),
        }

    def summary(self, run: PolicyRun) -> dict[str, Any]:
        oracle, single = self.oracle()["mean_utility"], self.best_single()["mean_utility"]
        utility = float(run.utility.mean())
        gap = oracle - single
        shares: dict[str, dict[str, float]] = {}
        for i, t in enumerate(self.stream.task_types):
            picks = run.chosen[self.stream.task == i]
            if len(picks) == 0:
                continue
            counts = np.bincount(picks, minlength=len(self.models)) / max(1, len(picks))
            shares[t] = {m: round(float(c), 4) for m, c in zip(self.models, counts, strict=True)}
        return {
            "name": run.name,
            "mean_quality": float(run.quality.mean()),
            "mean_cost_usd": float(run.cost.mean()),
            "mean_utility": utility,
            "expected_utility": float(run.expected_utility.mean()),
            "regret": oracle - utility,
            "captured": (utility - single) / gap if gap > 1e-12 else None,
            "captured_expected": (
                (float(run.expected_utility.mean()) - single) / gap if gap > 1e-12 else None
            ),
            "traffic_share": shares,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "data": self.source,
            "requests": int(len(self.stream.task)),
            "seed": self.seed,
            "objective_lambda": self.lam,
            "budget": self.budget,
            "task_mix": {t: round(s, 6) for t, s in self.stream.mix.items()},
            "policies": [self.summary(run) for run in self.runs],
            "oracle": self.oracle(),
            "best_single_model": self.best_single(),
            **self.extra,
        }


def fixed_pooled_priors(
    states: Mapping[str, TaskState], strength: float, floor: float = 1.0
) -> dict[str, tuple[float, float]]:
    """The pre-0.2 pooled prior, kept for the evaluation suite's comparison: each model's success rate over
    all task types (each task's own evidence included), worth ``strength`` observations whatever the task
    types' disagreement."""
    names = next(iter(states.values())).names
    success = np.zeros(len(names))
    total = np.zeros(len(names))
    for state in states.values():
        a, b = state.alpha - state.stats[:, 0], state.beta - state.stats[:, 1]
        success += a
        total += a + b
    weight = np.minimum(total, strength)
    mean = (success + 1.0) / (total + 2.0)
    alpha = floor + weight * mean
    beta = floor + weight * (1.0 - mean)
    return {n: (float(x), float(y)) for n, x, y in zip(names, alpha, beta, strict=True)}


def pool(
    states: dict[str, TaskState], setup: RouterSetup, rng: np.random.Generator | None = None
) -> dict[str, TaskState]:
    """The states with their quality priors pooled over task types as ``setup`` says (unchanged when off).
    ``rng``: what the pooling methods that draw ``tau²`` draw from (core.pooling.SAMPLED_METHODS)."""
    if setup.pooled_prior_strength <= 0 or len(states) < 2:
        return states
    if setup.pooling == "fixed":
        shared = fixed_pooled_priors(states, setup.pooled_prior_strength)
        return {t: with_priors(s, shared) for t, s in states.items()}
    base = {t: {m.name: m.quality_prior for m in models} for t, models in setup.models.items()}
    method = setup.pooling.partition(":")[2] or DEFAULT_TAU2_METHOD
    priors = pooled_priors(
        states,
        base,
        max_strength=setup.pooled_prior_strength,
        tau2_method=method,
        traffic_half=setup.pool_traffic_half,
        shared_df=setup.pool_shared_df,
        rng=rng,
    )
    return {t: with_priors(s, priors[t]) for t, s in states.items()}


def _with_offsets(states: dict[str, TaskState], shares: BudgetShares) -> dict[str, TaskState]:
    """The states with the offsets of ``shares`` and their current slack (a worker's split between two
    computations, agents/budget_split.py)."""

    def calls_and_spend(key: str) -> tuple[int, float]:
        return states[key].spend_calls, states[key].spend_total_usd

    out = dict(states)
    for key, state in states.items():
        offset = shares.offset(key, calls_and_spend)
        if offset is not None and offset != state.budget_offset_usd:
            out[key] = replace_state(state, budget_offset_usd=offset)
    return out


def _run_policy(
    name: str,
    policy: RoutingPolicy,
    table: OutcomeTable,
    stream: Stream,
    setup: RouterSetup,
    lam: float,
    delay: int,
    seed: int,
) -> PolicyRun:
    n = len(stream.task)
    rng = np.random.default_rng([seed, 2, sum(name.encode())])
    split_rng = np.random.default_rng([seed, 3, sum(name.encode())])
    pool_rng = np.random.default_rng([seed, 4, sum(name.encode())])  # read only by pooling that draws tau²
    tasks = stream.task_types
    states = {t: new_state(setup.models[t], setup.policies[t]) for t in tasks}
    chosen = np.empty(n, dtype=np.intp)
    batch = getattr(policy, "choose_batch", None)
    pooled = name in POOLED_POLICIES
    shares: BudgetShares | None = None
    column = {t: np.array([table.models.index(m) for m in states[t].names]) for t in tasks}
    for start in range(0, n, delay):
        stop = min(n, start + delay)
        now = start * SECONDS_PER_REQUEST
        block_task = stream.task[start:stop]
        for i in np.unique(block_task).tolist():
            t = tasks[i]
            state, models, tp = states[t], setup.models[t], setup.policies[t]
            where = np.flatnonzero(block_task == i) + start
            if batch is not None:
                rows = batch(state, models, tp, len(where), rng, now)
            else:
                picks = []
                for _ in range(len(where)):
                    choice = policy.choose(state, models, tp, None, rng, now)
                    picks.append(state.names.index(choice.model) if choice.model is not None else -1)
                rows = np.array(picks, dtype=np.intp)
            if np.any(rows < 0):
                raise RuntimeError(f"policy {name} rejected a request of task type {t}")
            cols = column[t][rows]
            chosen[where] = cols
            outcomes = table.tasks[t]
            q = outcomes.quality[stream.prompt[where], cols]
            c = outcomes.cost[stream.prompt[where], cols]
            lat = outcomes.latency[stream.prompt[where], cols]
            feedback = [
                Outcome(
                    model=table.models[m],
                    quality=qq,
                    cost_usd=cc,
                    latency_ms=None if ll != ll else ll,
                    at_s=now + delay * SECONDS_PER_REQUEST,
                )
                for m, qq, cc, ll in zip(cols.tolist(), q.tolist(), c.tolist(), lat.tolist(), strict=True)
            ]
            states[t] = update_many(state, models, tp, feedback)
        if pooled:
            states = pool(states, setup, pool_rng)
        if setup.shared_budget:
            draws = split_rng if setup.budget_split == "sampled" else None
            if setup.budget_split == "slack":
                states = share_budget(states, setup.policies)
            elif setup.budget_split_every == 1:
                states = allocate_budget(states, setup.policies, draws)
            else:  # as a worker: shares now and then, the others' slack at every block
                if shares is None or (start // delay) % setup.budget_split_every == 0:
                    shares = budget_shares(states, setup.policies, draws)
                states = _with_offsets(states, shares)
    quality = np.empty(n)
    cost = np.empty(n)
    for i, t in enumerate(tasks):
        where = np.flatnonzero(stream.task == i)
        quality[where] = table.tasks[t].quality[stream.prompt[where], chosen[where]]
        cost[where] = table.tasks[t].cost[stream.prompt[where], chosen[where]]
    mean_u = table.mean_quality() - lam * table.mean_cost()
    return PolicyRun(
        name=name,
        chosen=chosen,
        quality=quality,
        cost=cost,
        utility=quality - lam * cost,
        expected_utility=mean_u[stream.task, chosen],
    )


def replay(
    table: OutcomeTable,
    *,
    lam: float = 20.0,
    budget: float | None = None,
    requests: int = 20000,
    seed: int = 0,
    policies: Sequence[str] = DEFAULT_POLICIES,
    mix: Mapping[str, float] | str | None = None,
    delay: int = 50,
    setup: RouterSetup | None = None,
    one_pass: bool = False,
    draw_seed: int | None = None,
) -> ReplayResult:
    """Replay ``requests`` sampled requests through each named policy (deterministic for a seed).

    ``one_pass`` replays every prompt of the table exactly once in a seeded random order instead (``requests``
    and ``mix`` are then ignored): a short horizon without repeats, as production traffic is. ``draw_seed`` seeds
    the policies' draws apart from the request stream (default ``seed``): runs that differ only in it show the
    sampler's own noise on one stream."""
    if requests < 1:
        raise ValueError("requests must be >= 1")
    if delay < 1:
        raise ValueError("delay must be >= 1")
    if not policies:
        raise ValueError("give at least one policy")
    instances = {name: make_policy(name) for name in policies}
    if one_pass:
        stream = one_pass_stream(table, seed)
    else:
        stream = make_stream(
            table, requests, seed, parse_mix(mix, table.task_types) if mix is not None else None
        )
    setup = setup or default_setup(table, lam, budget)
    runs = [
        _run_policy(
            name, instance, table, stream, setup, lam, delay, seed if draw_seed is None else draw_seed
        )
        for name, instance in instances.items()
    ]
    q, c = table.mean_quality(), table.mean_cost()
    return ReplayResult(
        models=table.models,
        stream=stream,
        lam=lam,
        budget=budget,
        runs=runs,
        task_utility=q - lam * c,
        task_quality=q,
        task_cost=c,
        seed=seed,
        source=table.source,
        extra={} if draw_seed is None else {"draw_seed": draw_seed},
    )
