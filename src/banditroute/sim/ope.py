"""Off-policy evaluation: what would a candidate policy configuration have earned on the logged traffic?

Input is the router's own logs: RoutingDecision lines (``model``, ``propensity``, ``candidates``) joined to
Feedback lines (by ``decision_id``, else ``request_id``). The utility of a logged call is
``quality - lam * cost_usd - mu * latency_ms`` (an error counts as quality 0).

Estimator. The logs are replayed in time order. For each logged decision the candidate policy -- the core's
cost-aware Thompson sampler with the candidate catalog/TaskPolicy -- computes its action probabilities
``pi(. | task type, eligible candidates)`` with :func:`banditroute.core.propensities` on its *own* state.
With ``learn=True`` that state is updated only from logged outcomes whose feedback was observed before the
decision (the candidate learns from what the live policy explored, so the estimate is of "the candidate
trained on these logs"; it is exact for a stationary candidate, ``learn=False``). With weights
``w = pi(logged model) / logged propensity``:

* IPS: ``mean(w * r)``, unbiased when propensities are right and every model the candidate may pick could be
  logged;
* SNIPS: ``sum(w * r) / sum(w)``, slightly biased, much lower variance;
* DR: ``mean(sum_m pi(m) * rhat(m) + w * (r - rhat(logged)))`` with ``rhat`` the mean logged utility per
  (task type, model) (falling back to the task type's, then the overall mean).

95 % confidence intervals are normal approximations from the per-sample terms (the delta method for SNIPS).
The effective sample size is ``(sum w)^2 / sum w^2``. Reading logs straight from Kafka topics is not done yet:
export them as JSONL first.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from banditroute.core import ModelSpec, Outcome, TaskPolicy, TaskState, new_state, propensities, update
from banditroute.events import Feedback, RoutingDecision

FloatArray = npt.NDArray[np.float64]
Z95 = 1.959963984540054


@dataclass(frozen=True)
class LoggedStep:
    """One logged decision with its outcome (``reward`` None when no feedback arrived)."""

    task_type: str
    model: str
    propensity: float
    eligible: tuple[str, ...]
    decided_s: float
    reward: float | None
    outcome: Outcome | None = None
    feedback_s: float = math.inf
    request_id: str = ""


@dataclass(frozen=True)
class Estimate:
    value: float
    se: float

    @property
    def ci(self) -> tuple[float, float]:
        return (self.value - Z95 * self.se, self.value + Z95 * self.se)

    def covers(self, truth: float) -> bool:
        low, high = self.ci
        return low <= truth <= high

    def to_json(self) -> dict[str, float]:
        low, high = self.ci
        return {"value": self.value, "se": self.se, "ci95_low": low, "ci95_high": high}


@dataclass(frozen=True)
class OpeResult:
    ips: Estimate
    snips: Estimate
    dr: Estimate
    logged: Estimate
    effective_sample_size: float
    n: int
    n_without_feedback: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "n_without_feedback": self.n_without_feedback,
            "effective_sample_size": self.effective_sample_size,
            "logged_policy": self.logged.to_json(),
            "ips": self.ips.to_json(),
            "snips": self.snips.to_json(),
            "dr": self.dr.to_json(),
            **self.extra,
        }


def _mean_se(terms: FloatArray) -> Estimate:
    n = len(terms)
    if n == 0:
        return Estimate(math.nan, math.nan)
    se = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    return Estimate(float(terms.mean()), se)


def estimate(
    reward: FloatArray,
    logged_p: FloatArray,
    target_p: FloatArray,
    dm_target: FloatArray,
    dm_logged: FloatArray,
) -> OpeResult:
    """IPS, SNIPS and DR from per-step arrays: realised reward, logging propensity of the logged action, target
    probability of the logged action, E_target[rhat] and rhat(logged action)."""
    reward = np.asarray(reward, dtype=np.float64)
    w = np.asarray(target_p, dtype=np.float64) / np.asarray(logged_p, dtype=np.float64)
    n = len(reward)
    ips = _mean_se(w * reward)
    if n and w.sum() > 0:
        value = float((w * reward).sum() / w.sum())
        terms = w * (reward - value) / w.mean()
        snips = Estimate(value, float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf)
    else:
        snips = Estimate(math.nan, math.nan)
    dr = _mean_se(np.asarray(dm_target) + w * (reward - np.asarray(dm_logged)))
    ess = float(w.sum() ** 2 / (w * w).sum()) if n and (w * w).sum() > 0 else 0.0
    return OpeResult(ips=ips, snips=snips, dr=dr, logged=_mean_se(reward), effective_sample_size=ess, n=n)


class RewardModel:
    """Mean logged utility per (task type, model), falling back to the task type's mean, then overall."""

    def __init__(self, steps: Iterable[LoggedStep]) -> None:
        sums: dict[tuple[str, str], list[float]] = {}
        tasks: dict[str, list[float]] = {}
        total: list[float] = [0.0, 0.0]
        for s in steps:
            if s.reward is None:
                continue
            for acc in (
                sums.setdefault((s.task_type, s.model), [0.0, 0.0]),
                tasks.setdefault(s.task_type, [0.0, 0.0]),
                total,
            ):
                acc[0] += s.reward
                acc[1] += 1.0
        self._pair = {k: v[0] / v[1] for k, v in sums.items()}
        self._task = {k: v[0] / v[1] for k, v in tasks.items()}
        self._all = total[0] / total[1] if total[1] else 0.0

    def __call__(self, task_type: str, model: str) -> float:
        value = self._pair.get((task_type, model))
        if value is None:
            value = self._task.get(task_type, self._all)
        return value


def utility_of(outcome: Outcome, lam: float, mu: float = 0.0) -> float:
    """``quality - lam * cost - mu * latency`` of one outcome (errors count as quality 0, missing as 0)."""
    quality = outcome.quality if outcome.quality is not None else 0.0
    return quality - lam * (outcome.cost_usd or 0.0) - mu * (outcome.latency_ms or 0.0)


PolicyFor = Callable[[str], TaskPolicy]


def evaluate_policy(
    steps: Sequence[LoggedStep],
    models: Sequence[ModelSpec],
    task_policy: TaskPolicy | PolicyFor,
    *,
    learn: bool = True,
    initial_states: Mapping[str, TaskState] | None = None,
) -> OpeResult:
    """Estimate the value of the core Thompson sampler configured by ``models``/``task_policy`` on ``steps``.

    ``steps`` must be in decision order; steps without feedback are skipped for estimation (counted in
    ``n_without_feedback``) but still let the candidate learn nothing. See the module docstring.
    """
    policy_for: PolicyFor
    if isinstance(task_policy, TaskPolicy):
        fixed = task_policy
        policy_for = lambda _task: fixed  # noqa: E731
    else:
        policy_for = task_policy
    rhat = RewardModel(steps)
    states: dict[str, TaskState] = dict(initial_states or {})
    pending: list[tuple[float, int]] = []  # (feedback time, step index)
    rewards, logged_p, target_p, dm_t, dm_l = [], [], [], [], []
    missing = 0
    known = {m.name for m in models}
    for i, step in enumerate(steps):
        while learn and pending and pending[0][0] <= step.decided_s:
            _, j = heapq.heappop(pending)
            done = steps[j]
            assert done.outcome is not None
            tp = policy_for(done.task_type)
            states[done.task_type] = update(states[done.task_type], models, tp, done.outcome)
        tp = policy_for(step.task_type)
        state = states.get(step.task_type)
        if state is None:
            state = states[step.task_type] = new_state(models, tp)
        eligible = [m for m in (step.eligible or state.names) if m in known]
        pi = propensities(state, models, tp, eligible, step.decided_s)
        if step.reward is None:
            missing += 1
            continue
        probs = dict(zip(state.names, pi.tolist(), strict=True))
        rewards.append(step.reward)
        logged_p.append(step.propensity)
        target_p.append(probs.get(step.model, 0.0))
        dm_t.append(sum(p * rhat(step.task_type, m) for m, p in probs.items() if p > 0))
        dm_l.append(rhat(step.task_type, step.model))
        if learn and step.outcome is not None:
            heapq.heappush(pending, (step.feedback_s, i))
    result = estimate(
        np.array(rewards), np.array(logged_p), np.array(target_p), np.array(dm_t), np.array(dm_l)
    )
    return OpeResult(**{**result.__dict__, "n_without_feedback": missing})


# --- JSONL logs -------------------------------------------------------------------------------------------


def read_jsonl(path: str | Path, kind: type[RoutingDecision] | type[Feedback]) -> list[Any]:
    """Parse one event per line (blank lines skipped); errors name the file and line."""
    out = []
    file = Path(path)
    with file.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                out.append(kind.model_validate_json(line))
            except ValueError as exc:
                first = str(exc).splitlines()
                raise ValueError(f"{file}:{line_no}: not a {kind.__name__}: {' '.join(first[:3])}") from None
    return out


def join_logs(
    decisions: Sequence[RoutingDecision],
    feedback: Sequence[Feedback],
    *,
    lam: float,
    mu: float = 0.0,
    catalog: Mapping[str, ModelSpec] | None = None,
) -> list[LoggedStep]:
    """Logged steps in decision order; feedback matched by decision_id, else request_id (first one wins).

    Shadow decisions are ignored. Costs given as tokens are priced from ``catalog`` when possible.
    """
    by_decision: dict[str, Feedback] = {}
    by_request: dict[str, Feedback] = {}
    for item in feedback:
        if item.decision_id is not None:
            by_decision.setdefault(item.decision_id, item)
        if item.request_id is not None:
            by_request.setdefault(item.request_id, item)
    steps = []
    live = sorted((d for d in decisions if not d.shadow and d.model is not None), key=lambda d: d.decided_at)
    for d in live:
        assert d.model is not None
        f: Feedback | None = by_decision.get(d.decision_id) or by_request.get(d.request_id)
        outcome = None
        reward = None
        feedback_s = math.inf
        if f is not None and f.model == d.model:
            cost = f.cost_usd
            if cost is None and f.tokens_in is not None and catalog and f.model in catalog:
                cost = catalog[f.model].price(f.tokens_in, f.tokens_out or 0)
            feedback_s = f.observed_at.timestamp()
            outcome = Outcome(
                model=f.model,
                quality=f.quality,
                cost_usd=cost,
                latency_ms=f.latency_ms,
                error=None if f.error is None else str(f.error),
                at_s=feedback_s,
            )
            reward = utility_of(outcome, lam, mu)
        steps.append(
            LoggedStep(
                task_type=d.task_type,
                model=d.model,
                propensity=d.propensity,
                eligible=tuple(c.model for c in d.candidates),
                decided_s=d.decided_at.timestamp(),
                reward=reward,
                outcome=outcome,
                feedback_s=feedback_s,
                request_id=d.request_id,
            )
        )
    return steps


# --- simulations ------------------------------------------------------------------------------------------


def steps_from_simulation(sim: Any, *, feedback_delay_s: float = 0.5) -> list[LoggedStep]:
    """Logged steps from a :class:`banditroute.sim.simulator.Simulation` (every model eligible)."""
    from banditroute.sim.simulator import SECONDS_PER_REQUEST

    names = tuple(sim.models)
    out = []
    for i in range(len(sim.task)):
        model = names[int(sim.model[i])]
        failed = bool(sim.error[i])
        at = i * SECONDS_PER_REQUEST
        outcome = Outcome(
            model=model,
            quality=None if failed else float(sim.quality[i]),
            cost_usd=float(sim.cost_usd[i]),
            latency_ms=float(sim.latency_ms[i]),
            error="provider_error" if failed else None,
            at_s=at + feedback_delay_s,
        )
        out.append(
            LoggedStep(
                task_type=sim.task_types[int(sim.task[i])],
                model=model,
                propensity=float(sim.propensity[i]),
                eligible=names,
                decided_s=at,
                reward=float(sim.utility[i]),
                outcome=outcome,
                feedback_s=at + feedback_delay_s,
                request_id=f"r{i}",
            )
        )
    return out


def true_value(
    world: Any, probs: Mapping[str, FloatArray], lam: float, mu: float = 0.0, at_index: int = 0
) -> float:
    """Exact value of a stationary policy ``probs[task type]`` (aligned to the world's models) in ``world``."""
    mix = world.scenario.task_mix
    return float(
        sum(
            mix[t] * float(probs[t] @ world.expected_utilities(t, at_index, lam, mu))
            for t in world.task_types
        )
    )
