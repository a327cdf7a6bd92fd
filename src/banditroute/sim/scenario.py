"""A synthetic world described in YAML: task types, models with quality/cost/latency/errors, and drift.

``Scenario.load(path)`` validates the file (errors name the file and the offending key); ``SyntheticWorld``
samples outcomes, knows the best model at any point in time and produces request streams. The Kafka-driving
simulator and ``banditroute demo`` build on these classes; :mod:`banditroute.sim.simulator` runs them in
process through the policy core.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from banditroute.core import ModelSpec, TaskPolicy

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
QUALITY_KINDS = ("bernoulli", "score")


class ScenarioError(ValueError):
    """A scenario file is invalid; the message names the file and the key."""


def _num(
    where: str, value: Any, *, low: float = 0.0, high: float = math.inf, strict_low: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise ScenarioError(f"{where} must be a finite number, got {value!r}")
    number = float(value)
    if number < low or number > high or (strict_low and number <= low):
        op = ">" if strict_low else ">="
        raise ScenarioError(
            f"{where} must be {op} {low}"
            + (f" and <= {high}" if high < math.inf else "")
            + f", got {value!r}"
        )
    return number


def _mapping(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _keys(where: str, data: Mapping[str, Any], allowed: Sequence[str], required: Sequence[str] = ()) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ScenarioError(f"{where}: missing key(s) {', '.join(missing)}")


@dataclass(frozen=True)
class SyntheticModel:
    """One model of the world: mean quality per task type, cost, lognormal latency and an error rate."""

    name: str
    quality: Mapping[str, float]
    cost_usd: float
    cost_cv: float
    latency_median_ms: float
    latency_sigma: float
    error_rate: float

    @property
    def mean_latency_ms(self) -> float:
        return self.latency_median_ms * math.exp(self.latency_sigma**2 / 2.0)


@dataclass(frozen=True)
class DriftEvent:
    """From request ``at`` on, ``model`` changes on ``task_type`` (all task types when None)."""

    at: int
    model: str
    task_type: str | None = None
    quality_delta: float = 0.0
    cost_factor: float = 1.0
    latency_factor: float = 1.0
    error_rate: float | None = None


@dataclass(frozen=True)
class Scenario:
    """A validated scenario file."""

    name: str
    task_mix: Mapping[str, float]  # normalised
    models: tuple[SyntheticModel, ...]
    drift: tuple[DriftEvent, ...] = ()
    quality_kind: str = "bernoulli"
    score_concentration: float = 20.0
    lam: float = 20.0
    mu: float = 0.0

    @property
    def task_types(self) -> tuple[str, ...]:
        return tuple(self.task_mix)

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        file = Path(path)
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ScenarioError(f"{file}: {exc}") from exc
        try:
            return cls.from_mapping(data, name=file.stem)
        except ScenarioError as exc:
            raise ScenarioError(f"{file}: {exc}") from None

    @classmethod
    def from_mapping(cls, data: Any, name: str = "scenario") -> Scenario:
        top = _mapping("scenario", data)
        _keys(
            "scenario",
            top,
            ["name", "quality_kind", "score_concentration", "objective", "task_types", "models", "drift"],
            ["task_types", "models"],
        )
        kind = top.get("quality_kind", "bernoulli")
        if kind not in QUALITY_KINDS:
            raise ScenarioError(f"quality_kind must be one of {', '.join(QUALITY_KINDS)}, got {kind!r}")
        objective = _mapping("objective", top.get("objective", {}))
        _keys("objective", objective, ["lam", "mu"])
        tasks = _mapping("task_types", top["task_types"])
        if not tasks:
            raise ScenarioError("task_types must name at least one task type")
        shares = {str(t): _num(f"task_types.{t}", v) for t, v in tasks.items()}
        total = sum(shares.values())
        if total <= 0:
            raise ScenarioError("task_types: shares must add up to more than 0")
        mix = {t: s / total for t, s in shares.items()}
        raw_models = top["models"]
        if not isinstance(raw_models, list) or not raw_models:
            raise ScenarioError("models must be a non-empty list")
        models = tuple(_model(i, m, tuple(mix)) for i, m in enumerate(raw_models))
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ScenarioError("models: names must be unique")
        raw_drift = top.get("drift") or []
        if not isinstance(raw_drift, list):
            raise ScenarioError("drift must be a list")
        drift = tuple(_drift(i, d, names, tuple(mix)) for i, d in enumerate(raw_drift))
        return cls(
            name=str(top.get("name", name)),
            task_mix=mix,
            models=models,
            drift=tuple(sorted(drift, key=lambda d: d.at)),
            quality_kind=str(kind),
            score_concentration=_num(
                "score_concentration", top.get("score_concentration", 20.0), strict_low=True
            ),
            lam=_num("objective.lam", objective.get("lam", 20.0)),
            mu=_num("objective.mu", objective.get("mu", 0.0)),
        )

    def catalog(self, quality_prior: tuple[float, float] = (1.0, 1.0)) -> tuple[ModelSpec, ...]:
        """ModelSpecs for the router: list prices and median latencies as the cost/latency priors."""
        return tuple(
            ModelSpec(
                name=m.name,
                cost_per_call_usd=m.cost_usd,
                latency_ms=m.latency_median_ms,
                quality_prior=quality_prior,
            )
            for m in self.models
        )

    def task_policy(self, **overrides: Any) -> TaskPolicy:
        """A TaskPolicy with the scenario's objective (λ, μ), overridable."""
        values: dict[str, Any] = {"lam": self.lam, "mu": self.mu, **overrides}
        return TaskPolicy(**values)


def _model(i: int, data: Any, tasks: tuple[str, ...]) -> SyntheticModel:
    where = f"models[{i}]"
    m = _mapping(where, data)
    _keys(
        where,
        m,
        ["name", "quality", "cost_usd", "cost_cv", "latency_ms", "error_rate"],
        ["name", "quality", "cost_usd"],
    )
    name = m["name"]
    if not isinstance(name, str) or not name:
        raise ScenarioError(f"{where}.name must be a non-empty string")
    where = f"model {name!r}"
    quality = _mapping(f"{where}: quality", m["quality"])
    unknown = sorted(set(quality) - set(tasks))
    if unknown:
        raise ScenarioError(f"{where}: quality names unknown task type(s) {', '.join(map(str, unknown))}")
    missing = [t for t in tasks if t not in quality]
    if missing:
        raise ScenarioError(f"{where}: quality is missing task type(s) {', '.join(missing)}")
    latency = _mapping(f"{where}: latency_ms", m.get("latency_ms", {"median": 1000.0, "sigma": 0.3}))
    _keys(f"{where}: latency_ms", latency, ["median", "sigma"], ["median"])
    return SyntheticModel(
        name=name,
        quality={t: _num(f"{where}: quality.{t}", quality[t], high=1.0) for t in tasks},
        cost_usd=_num(f"{where}: cost_usd", m["cost_usd"]),
        cost_cv=_num(f"{where}: cost_cv", m.get("cost_cv", 0.3)),
        latency_median_ms=_num(f"{where}: latency_ms.median", latency["median"], strict_low=True),
        latency_sigma=_num(f"{where}: latency_ms.sigma", latency.get("sigma", 0.3)),
        error_rate=_num(f"{where}: error_rate", m.get("error_rate", 0.0), high=1.0),
    )


def _drift(i: int, data: Any, models: list[str], tasks: tuple[str, ...]) -> DriftEvent:
    where = f"drift[{i}]"
    d = _mapping(where, data)
    _keys(
        where,
        d,
        ["at", "model", "task_type", "quality_delta", "cost_factor", "latency_factor", "error_rate"],
        ["at", "model"],
    )
    at = d["at"]
    if isinstance(at, bool) or not isinstance(at, int) or at < 0:
        raise ScenarioError(f"{where}.at must be a request index >= 0, got {at!r}")
    if d["model"] not in models:
        raise ScenarioError(f"{where}.model {d['model']!r} is not one of {', '.join(models)}")
    task = d.get("task_type")
    if task is not None and task not in tasks:
        raise ScenarioError(f"{where}.task_type {task!r} is not one of {', '.join(tasks)}")
    err = d.get("error_rate")
    return DriftEvent(
        at=at,
        model=str(d["model"]),
        task_type=None if task is None else str(task),
        quality_delta=_num(f"{where}.quality_delta", d.get("quality_delta", 0.0), low=-1.0, high=1.0),
        cost_factor=_num(f"{where}.cost_factor", d.get("cost_factor", 1.0)),
        latency_factor=_num(f"{where}.latency_factor", d.get("latency_factor", 1.0), strict_low=True),
        error_rate=None if err is None else _num(f"{where}.error_rate", err, high=1.0),
    )


@dataclass(frozen=True)
class Sampled:
    """Outcomes of a batch of calls: quality is NaN where the call errored."""

    quality: FloatArray
    cost_usd: FloatArray
    latency_ms: FloatArray
    error: npt.NDArray[np.bool_]


class SyntheticWorld:
    """Ground truth of a scenario at any request index, and a sampler of outcomes and request streams."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.task_types = scenario.task_types
        self.model_names = scenario.model_names
        self._model_index = {m: j for j, m in enumerate(self.model_names)}
        self._task_index = {t: i for i, t in enumerate(self.task_types)}
        self._mix = np.array([scenario.task_mix[t] for t in self.task_types])
        # Piecewise-constant truth: breakpoints and one parameter array per segment.
        self._breaks = sorted({0, *(d.at for d in scenario.drift)})
        self._segments = [self._params_at(b) for b in self._breaks]

    def _params_at(self, index: int) -> dict[str, FloatArray]:
        models = self.scenario.models
        q = np.array([[m.quality[t] for m in models] for t in self.task_types])
        cost = np.tile([m.cost_usd for m in models], (len(self.task_types), 1)).astype(np.float64)
        lat = np.tile([m.latency_median_ms for m in models], (len(self.task_types), 1)).astype(np.float64)
        err = np.tile([m.error_rate for m in models], (len(self.task_types), 1)).astype(np.float64)
        for d in self.scenario.drift:
            if d.at > index:
                continue
            j = self._model_index[d.model]
            rows = slice(None) if d.task_type is None else self._task_index[d.task_type]
            q[rows, j] += d.quality_delta
            cost[rows, j] *= d.cost_factor
            lat[rows, j] *= d.latency_factor
            if d.error_rate is not None:
                err[rows, j] = d.error_rate
        return {"quality": np.clip(q, 0.0, 1.0), "cost": cost, "latency": lat, "error": err}

    def params(self, index: int) -> dict[str, FloatArray]:
        """(tasks, models) arrays of mean quality, mean cost, median latency and error rate at ``index``."""
        k = int(np.searchsorted(self._breaks, index, side="right")) - 1
        return self._segments[max(k, 0)]

    def _t(self, task_type: str) -> int:
        try:
            return self._task_index[task_type]
        except KeyError:
            raise ValueError(f"unknown task type {task_type!r}") from None

    def _m(self, model: str) -> int:
        try:
            return self._model_index[model]
        except KeyError:
            raise ValueError(f"unknown model {model!r}") from None

    def expected_utilities(self, task_type: str, at_index: int, lam: float, mu: float = 0.0) -> FloatArray:
        """Expected utility of each model: (1 - error rate) * quality - λ * mean cost - μ * mean latency.

        An errored call delivers quality 0 but is still billed and still takes time.
        """
        p = self.params(at_index)
        t = self._t(task_type)
        sig = np.array([m.latency_sigma for m in self.scenario.models])
        mean_latency = p["latency"][t] * np.exp(sig**2 / 2.0)
        return np.asarray((1.0 - p["error"][t]) * p["quality"][t] - lam * p["cost"][t] - mu * mean_latency)

    def expected_utility(
        self, task_type: str, model: str, at_index: int, lam: float, mu: float = 0.0
    ) -> float:
        return float(self.expected_utilities(task_type, at_index, lam, mu)[self._m(model)])

    def best_model(self, task_type: str, at_index: int, lam: float, mu: float = 0.0) -> str:
        """The model with the highest expected utility for ``task_type`` at request ``at_index``."""
        return self.model_names[int(np.argmax(self.expected_utilities(task_type, at_index, lam, mu)))]

    def requests(self, n: int, rng: np.random.Generator) -> IntArray:
        """Task type indices (into ``task_types``) of ``n`` requests drawn from the task mix."""
        return rng.choice(len(self.task_types), size=n, p=self._mix).astype(np.intp)

    def request_task_types(self, n: int, rng: np.random.Generator) -> list[str]:
        return [self.task_types[i] for i in self.requests(n, rng).tolist()]

    def sample_many(
        self, task: IntArray, model: IntArray, index: IntArray, rng: np.random.Generator
    ) -> Sampled:
        """Vectorised outcomes of calls (task index, model index, request index) -> :class:`Sampled`."""
        n = len(task)
        q = np.empty(n)
        cost = np.empty(n)
        lat = np.empty(n)
        err = np.empty(n)
        seg = np.searchsorted(self._breaks, index, side="right") - 1
        for s in np.unique(seg).tolist():
            rows = seg == s
            p = self._segments[s]
            q[rows] = p["quality"][task[rows], model[rows]]
            cost[rows] = p["cost"][task[rows], model[rows]]
            lat[rows] = p["latency"][task[rows], model[rows]]
            err[rows] = p["error"][task[rows], model[rows]]
        models = self.scenario.models
        cv = np.array([m.cost_cv for m in models])[model]
        sigma = np.array([m.latency_sigma for m in models])[model]
        error = rng.random(n) < err
        if self.scenario.quality_kind == "bernoulli":
            quality = (rng.random(n) < q).astype(np.float64)
        else:
            kappa = self.scenario.score_concentration
            a = np.maximum(q * kappa, 1e-3)
            b = np.maximum((1.0 - q) * kappa, 1e-3)
            quality = rng.beta(a, b)
        shape = np.where(cv > 0, 1.0 / np.maximum(cv, 1e-9) ** 2, 0.0)
        gamma = rng.gamma(np.where(shape > 0, shape, 1.0), 1.0)
        sampled_cost = np.where(shape > 0, cost * gamma / np.where(shape > 0, shape, 1.0), cost)
        latency = lat * np.exp(sigma * rng.standard_normal(n))
        quality = np.where(error, np.nan, quality)
        return Sampled(quality=quality, cost_usd=sampled_cost, latency_ms=latency, error=error)

    def sample(self, task_type: str, model: str, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """One call's outcome: ``{quality (None on error), cost_usd, latency_ms, error (None or 'provider_error')}``."""
        s = self.sample_many(
            np.array([self._t(task_type)]), np.array([self._m(model)]), np.array([index]), rng
        )
        failed = bool(s.error[0])
        return {
            "quality": None if failed else float(s.quality[0]),
            "cost_usd": float(s.cost_usd[0]),
            "latency_ms": float(s.latency_ms[0]),
            "error": "provider_error" if failed else None,
        }
