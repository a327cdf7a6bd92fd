"""The in-process simulator: a :class:`SyntheticWorld` driven through the policy core with delayed feedback.

Feedback is delayed by ``feedback_delay`` requests: outcomes wait in a queue and are applied (``update_many``
per task type) once ``feedback_delay`` further requests have been decided, in blocks, so the state a decision
sees lags the world by up to ``2 * feedback_delay - 1`` requests. Every decision's propensity is recorded for
off-policy evaluation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

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
from banditroute.sim.scenario import Scenario, SyntheticWorld

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
SECONDS_PER_REQUEST = 0.01


@dataclass
class Simulation:
    """Per-request record of a simulation (arrays of length n) and the final states."""

    task_types: tuple[str, ...]
    models: tuple[str, ...]
    task: IntArray
    model: IntArray
    propensity: FloatArray
    quality: FloatArray  # NaN where the call errored
    cost_usd: FloatArray
    latency_ms: FloatArray
    error: npt.NDArray[np.bool_]
    utility: FloatArray  # realised: quality (0 on error) - lam * cost - mu * latency
    expected_utility: FloatArray  # the world's expected utility of the chosen model at that time
    best_expected_utility: FloatArray  # ... of the best model at that time
    states: dict[str, TaskState]
    lam: float
    mu: float

    @property
    def regret(self) -> float:
        """Mean expected-utility regret per request against the per-task, per-time best model."""
        return float((self.best_expected_utility - self.expected_utility).mean())


def simulate_in_process(
    scenario: Scenario | SyntheticWorld,
    policy: str | RoutingPolicy = "thompson",
    n: int = 10000,
    seed: int = 0,
    *,
    feedback_delay: int = 50,
    task_policy: TaskPolicy | None = None,
    models: Sequence[ModelSpec] | None = None,
    learn: bool = True,
    initial_states: dict[str, TaskState] | None = None,
) -> Simulation:
    """Run ``n`` requests of the scenario through ``policy`` (a name from ``POLICIES`` or an instance).

    ``task_policy`` defaults to the scenario's objective (λ, μ) with core defaults; ``models`` to the
    scenario's catalog. ``learn=False`` keeps the initial states (a stationary policy, e.g. for OPE tests).
    Deterministic for a seed.
    """
    world = scenario if isinstance(scenario, SyntheticWorld) else SyntheticWorld(scenario)
    if n < 0:
        raise ValueError("n must be >= 0")
    if feedback_delay < 1:
        raise ValueError("feedback_delay must be >= 1")
    router = make_policy(policy) if isinstance(policy, str) else policy
    tp = task_policy or world.scenario.task_policy()
    catalog = tuple(models) if models is not None else world.scenario.catalog()
    lam, mu = tp.lam, tp.mu
    rng = np.random.default_rng([seed, 11])
    outcome_rng = np.random.default_rng([seed, 12])
    tasks = world.task_types
    states = dict(initial_states) if initial_states else {}
    for t in tasks:
        states.setdefault(t, new_state(catalog, tp))
    col = {m: j for j, m in enumerate(world.model_names)}
    task = world.requests(n, np.random.default_rng([seed, 10]))
    model = np.empty(n, dtype=np.intp)
    prop = np.empty(n)
    pending: deque[tuple[int, int]] = deque()  # (request index, task index), in order
    sampled_q = np.empty(n)
    sampled_c = np.empty(n)
    sampled_l = np.empty(n)
    sampled_e = np.zeros(n, dtype=bool)
    block = feedback_delay
    for start in range(0, n, block):
        stop = min(n, start + block)
        # Decide the block on the current states.
        for i in range(start, stop):
            t = tasks[task[i]]
            choice = router.choose(states[t], catalog, tp, None, rng, i * SECONDS_PER_REQUEST)
            if choice.model is None:
                raise RuntimeError(f"policy rejected request {i} ({t})")
            model[i] = col[choice.model]
            prop[i] = choice.propensity
        idx = np.arange(start, stop)
        s = world.sample_many(task[idx], model[idx], idx, outcome_rng)
        sampled_q[idx], sampled_c[idx], sampled_l[idx], sampled_e[idx] = (
            s.quality,
            s.cost_usd,
            s.latency_ms,
            s.error,
        )
        pending.extend((i, int(task[i])) for i in range(start, stop))
        # Apply feedback that is at least `feedback_delay` requests old.
        due: dict[int, list[Outcome]] = {}
        while pending and pending[0][0] <= stop - feedback_delay:
            i, ti = pending.popleft()
            due.setdefault(ti, []).append(
                Outcome(
                    model=world.model_names[model[i]],
                    quality=None if sampled_e[i] else float(sampled_q[i]),
                    cost_usd=float(sampled_c[i]),
                    latency_ms=float(sampled_l[i]),
                    error="provider_error" if sampled_e[i] else None,
                    at_s=stop * SECONDS_PER_REQUEST,
                )
            )
        if learn:
            for ti, outs in due.items():
                t = tasks[ti]
                states[t] = update_many(states[t], catalog, tp, outs)
    quality0 = np.where(sampled_e, 0.0, sampled_q)
    utility = quality0 - lam * sampled_c - mu * sampled_l
    expected = np.empty(n)
    best = np.empty(n)
    for ti, t in enumerate(tasks):
        rows = np.flatnonzero(task == ti)
        for r in rows.tolist():
            u = world.expected_utilities(t, r, lam, mu)
            expected[r] = u[model[r]]
            best[r] = u.max()
    return Simulation(
        task_types=tasks,
        models=world.model_names,
        task=task,
        model=model,
        propensity=prop,
        quality=sampled_q,
        cost_usd=sampled_c,
        latency_ms=sampled_l,
        error=sampled_e,
        utility=utility,
        expected_utility=expected,
        best_expected_utility=best,
        states=states,
        lam=lam,
        mu=mu,
    )
