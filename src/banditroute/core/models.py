"""Immutable value types shared by the policy core: catalog entries, task policies, requests and results.

Everything here is a frozen dataclass so it can be cached, compared and shared between coroutines safely.
The ``from_mapping`` constructors are what the YAML config loader calls; they raise ``ValueError`` with a
message naming the offending key.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

LIFECYCLES = ("active", "canary", "shadow", "retired")
OBJECTIVES = ("utility", "budget")
REWARDS = ("beta", "gaussian")
SAMPLERS = ("normal", "clipped", "beta")  # see banditroute.core.sampling
PACINGS = ("knapsack", "dual")
CHANGE_TESTS = ("normal", "bernoulli")  # see banditroute.core.learn._observe
WHEN_NONE = ("cheapest", "reject")
ERROR_KINDS = ("timeout", "rate_limited", "provider_error", "invalid_output")


def _check_keys(kind: str, data: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"{kind}: unknown key(s) {', '.join(unknown)}")


def _number(kind: str, key: str, value: Any, *, low: float | None = 0.0, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{kind}: {key} must be a number, got {value!r}")
    number = float(value)
    if number != number or (low is not None and number < low) or (high is not None and number > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ValueError(f"{kind}: {key} must be in {bounds}, got {value!r}")
    return number


def _optional_number(kind: str, key: str, value: Any, **bounds: float | None) -> float | None:
    return None if value is None else _number(kind, key, value, **bounds)


def _choice(kind: str, key: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{kind}: {key} must be one of {', '.join(options)}, got {value!r}")
    return str(value)


def _names(kind: str, key: str, value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset([value])
    if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{kind}: {key} must be a list of strings, got {value!r}")
    return frozenset(value)


@dataclass(frozen=True)
class ModelSpec:
    """One routable model from the catalog, with the priors the router starts from."""

    name: str
    cost_per_call_usd: float
    latency_ms: float = 1000.0
    price_in_per_1k_usd: float = 0.0
    price_out_per_1k_usd: float = 0.0
    capabilities: frozenset[str] = frozenset()
    context_window: int | None = None
    lifecycle: str = "active"
    enabled: bool = True
    quality_prior: tuple[float, float] = (1.0, 1.0)
    rate_limit_rps: float | None = None
    tokens_per_minute: int | None = None

    def price(self, tokens_in: int, tokens_out: int) -> float:
        """List price in USD of one call with the given token counts."""
        return tokens_in / 1000.0 * self.price_in_per_1k_usd + tokens_out / 1000.0 * self.price_out_per_1k_usd

    @property
    def routable(self) -> bool:
        """Whether the model may receive live traffic at all (shadow and retired never do)."""
        return self.enabled and self.lifecycle in ("active", "canary")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Validate a config mapping; ``cost_per_call_usd`` is required (the cost prior before any call)."""
        kind = f"model {data.get('name', '?')!r}"
        _check_keys(kind, data, [f.name for f in fields(cls)])
        name = data.get("name")
        if not isinstance(name, str) or not name or len(name.encode()) > 255:
            raise ValueError(f"{kind}: name must be a non-empty string of at most 255 bytes")
        if "cost_per_call_usd" not in data:
            raise ValueError(f"{kind}: cost_per_call_usd is required")
        prior = data.get("quality_prior", (1.0, 1.0))
        if not isinstance(prior, list | tuple) or len(prior) != 2:
            raise ValueError(f"{kind}: quality_prior must be [alpha, beta]")
        alpha = _number(kind, "quality_prior[0]", prior[0])
        beta = _number(kind, "quality_prior[1]", prior[1])
        if alpha <= 0 or beta <= 0:
            raise ValueError(f"{kind}: quality_prior values must be > 0")
        context = data.get("context_window")
        if context is not None and (
            not isinstance(context, int) or isinstance(context, bool) or context <= 0
        ):
            raise ValueError(f"{kind}: context_window must be a positive integer")
        tpm = data.get("tokens_per_minute")
        if tpm is not None and (not isinstance(tpm, int) or isinstance(tpm, bool) or tpm <= 0):
            raise ValueError(f"{kind}: tokens_per_minute must be a positive integer")
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ValueError(f"{kind}: enabled must be true or false")
        rps = _optional_number(kind, "rate_limit_rps", data.get("rate_limit_rps"))
        if rps is not None and rps <= 0:
            raise ValueError(f"{kind}: rate_limit_rps must be > 0")
        return cls(
            name=name,
            cost_per_call_usd=_number(kind, "cost_per_call_usd", data["cost_per_call_usd"]),
            latency_ms=_number(kind, "latency_ms", data.get("latency_ms", 1000.0)),
            price_in_per_1k_usd=_number(kind, "price_in_per_1k_usd", data.get("price_in_per_1k_usd", 0.0)),
            price_out_per_1k_usd=_number(kind, "price_out_per_1k_usd", data.get("price_out_per_1k_usd", 0.0)),
            capabilities=_names(kind, "capabilities", data.get("capabilities", ())),
            context_window=context,
            lifecycle=_choice(kind, "lifecycle", data.get("lifecycle", "active"), LIFECYCLES),
            enabled=enabled,
            quality_prior=(alpha, beta),
            rate_limit_rps=rps,
            tokens_per_minute=tpm,
        )


@dataclass(frozen=True)
class ScheduleEntry:
    """An hour-of-day window in UTC, ``[start_hour, end_hour)`` (wrapping past midnight), overriding λ/μ."""

    start_hour: int
    end_hour: int
    lam: float | None = None
    mu: float | None = None

    def covers(self, hour: int) -> bool:
        if self.start_hour <= self.end_hour:
            return self.start_hour <= hour < self.end_hour
        return hour >= self.start_hour or hour < self.end_hour

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ScheduleEntry:
        kind = "schedule entry"
        _check_keys(kind, data, ["start_hour", "end_hour", "lam", "mu"])
        hours = []
        for key in ("start_hour", "end_hour"):
            value = data.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 24:
                raise ValueError(f"{kind}: {key} must be an integer hour in 0..24, got {value!r}")
            hours.append(value % 24 if key == "start_hour" else value)
        return cls(
            start_hour=hours[0],
            end_hour=hours[1],
            lam=_optional_number(kind, "lam", data.get("lam")),
            mu=_optional_number(kind, "mu", data.get("mu")),
        )


@dataclass(frozen=True)
class TaskPolicy:
    """How one task type trades quality against cost and latency, and the safety rails around learning.

    Non-stationarity: evidence is discounted with ``half_life`` (events of this task type), and a model whose
    recent quality (EWMA over ``change_window`` of its own outcomes) departs from its posterior mean has its
    quality evidence cut to ``change_window`` observations at the recent level. ``half_life=None`` turns both
    off (stationary counting); ``change_window=None`` turns the detector off. ``change_test="bernoulli"`` (the
    default) fires when the EWMA is more than ``change_threshold`` standard errors from the mean *and* the
    Chernoff bound of outcomes in [0, 1] agrees: the EWMA's effective observations ``(2 - r) / r`` times
    KL(Bernoulli(EWMA) || Bernoulli(mean)) above ``change_threshold**2 / 2``; its EWMA starts from the mean
    rather than from one outcome. ``"normal"`` (the earlier default) asks the standard errors alone, and with
    0/1 quality near 1 it fires far more often than 4 standard errors suggest (the few failures among 25 are
    skewed): 0.7-1.3 times per 10,000 outcomes of a stationary model at 0.9, 0.15 with the Bernoulli test.
    The defaults (half-life 20,000, the Bernoulli test) were chosen by the evaluation suite over every dataset
    and by drift scenarios (README "Learning"): the detector follows abrupt changes, so the half-life can be
    long, and a short one (2,000, the earlier default) cost ``captured`` on stationary data.

    Utility of a call is ``quality - lam * cost_usd - mu * latency_ms``. In ``budget`` mode quality is
    maximised subject to the budget(s): with ``pacing="knapsack"`` (default) and a mean cost budget, each
    decision draws from the best mix of models whose mean cost is the budget, corrected for past over- or
    under-spend over ``pacing_horizon`` calls; with ``pacing="dual"`` (and for the per-minute budget) λ is
    replaced by a pacing dual variable learnt from realised spend (step ``pacing_rate``).

    ``pooled_prior_weight`` < 1 (a candidate; 1, the default, is off) takes a pooled quality prior as a robust
    mixture: that weight on the pooled prior, the rest on the catalog's ``quality_prior`` (``core.robust``).

    ``exploration`` scales the spread of the Thompson draws: each model's utility is drawn with that multiple of
    its posterior standard deviation (the Beta sampler's concentration divided by its square). 1 draws from the
    posterior itself; below 1 explores less. The default, 0.8, was chosen by the evaluation suite over every
    dataset (README "Learning"): it raised mean ``captured`` with the worst seed unchanged; 0.7 raised the mean
    more but lowered the worst seed, and both find a model that improves where it is not chosen less often.
    """

    objective: str = "utility"
    lam: float = 10.0
    mu: float = 0.0
    schedule: tuple[ScheduleEntry, ...] = ()
    budget_mean_cost_usd: float | None = None
    budget_usd_per_min: float | None = None
    pacing: str = "knapsack"
    pacing_horizon: float = 500.0
    pacing_rate: float = 0.05
    half_life: float | None = 20000.0
    change_window: int | None = 25
    change_threshold: float = 4.0
    change_test: str = "bernoulli"
    reward: str = "beta"
    sampler: str = "beta"
    min_share: Mapping[str, float] = field(default_factory=dict)
    max_share: Mapping[str, float] = field(default_factory=dict)
    default_min_share: float = 0.0
    default_max_share: float = 1.0
    new_model_floor: float = 0.02
    new_model_observations: int = 50
    canary_floor: float = 0.05
    canary_ceiling: float = 0.2
    canary_observations: int = 500
    circuit_error_rate: float = 0.5
    circuit_consecutive_failures: int = 5
    circuit_cooldown_s: float = 30.0
    circuit_probe_share: float = 0.05
    circuit_window: int = 50
    when_none_eligible: str = "cheapest"
    propensity_samples: int = 4000
    pooled_prior_weight: float = 1.0
    exploration: float = 0.8

    __hash__ = object.__hash__  # identity hash: the share maps are dicts; policies are cached by identity

    def lam_mu_at(self, now_s: float) -> tuple[float, float]:
        """λ and μ in force at ``now_s`` (UTC hour of day), the first matching schedule entry winning."""
        if self.schedule:
            hour = int(now_s // 3600.0) % 24
            for entry in self.schedule:
                if entry.covers(hour):
                    lam = self.lam if entry.lam is None else entry.lam
                    return lam, self.mu if entry.mu is None else entry.mu
        return self.lam, self.mu

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TaskPolicy:
        """Validate a config mapping (unknown keys, ranges, enumerations) into a policy."""
        kind = "task policy"
        names = [f.name for f in fields(cls)]
        _check_keys(kind, data, names)
        kwargs: dict[str, Any] = {}
        floats_01: tuple[str, ...] = (
            "default_min_share",
            "default_max_share",
            "new_model_floor",
            "canary_floor",
        )
        floats_01 += ("canary_ceiling", "circuit_error_rate", "circuit_probe_share", "pooled_prior_weight")
        for key, value in data.items():
            if key == "objective":
                kwargs[key] = _choice(kind, key, value, OBJECTIVES)
            elif key == "reward":
                kwargs[key] = _choice(kind, key, value, REWARDS)
            elif key == "sampler":
                kwargs[key] = _choice(kind, key, value, SAMPLERS)
            elif key == "change_test":
                kwargs[key] = _choice(kind, key, value, CHANGE_TESTS)
            elif key == "pacing":
                kwargs[key] = _choice(kind, key, value, PACINGS)
            elif key == "when_none_eligible":
                kwargs[key] = _choice(kind, key, value, WHEN_NONE)
            elif key == "schedule":
                if not isinstance(value, list | tuple):
                    raise ValueError(f"{kind}: schedule must be a list")
                kwargs[key] = tuple(ScheduleEntry.from_mapping(e) for e in value)
            elif key in ("min_share", "max_share"):
                if not isinstance(value, Mapping):
                    raise ValueError(f"{kind}: {key} must map model name -> share")
                kwargs[key] = {str(k): _number(kind, f"{key}[{k}]", v, high=1.0) for k, v in value.items()}
            elif key in ("budget_mean_cost_usd", "budget_usd_per_min", "half_life"):
                number = _optional_number(kind, key, value)
                if number is not None and number <= 0:
                    raise ValueError(f"{kind}: {key} must be > 0 (or null)")
                kwargs[key] = number
            elif key in floats_01:
                kwargs[key] = _number(kind, key, value, high=1.0)
            elif key in ("new_model_observations", "canary_observations", "circuit_consecutive_failures"):
                kwargs[key] = int(_number(kind, key, value))
            elif key == "change_window":
                kwargs[key] = None if value is None else int(_number(kind, key, value, low=2.0))
            elif key == "exploration":
                kwargs[key] = _number(kind, key, value, low=0.05, high=4.0)
            elif key in ("circuit_window", "propensity_samples"):
                kwargs[key] = int(_number(kind, key, value, low=1.0))
            else:
                kwargs[key] = _number(kind, key, value)
        policy = cls(**kwargs)
        if (
            policy.objective == "budget"
            and policy.budget_mean_cost_usd is None
            and policy.budget_usd_per_min is None
        ):
            raise ValueError(
                f"{kind}: objective 'budget' needs budget_mean_cost_usd and/or budget_usd_per_min"
            )
        if policy.pacing_horizon <= 0:
            raise ValueError(f"{kind}: pacing_horizon must be > 0 (calls)")
        if policy.canary_floor > policy.canary_ceiling:
            raise ValueError(f"{kind}: canary_floor must not exceed canary_ceiling")
        return policy


@dataclass(frozen=True)
class Constraints:
    """A request's filters. ``objective_override`` may set ``lam``, ``mu`` and/or ``objective``."""

    allow: frozenset[str] | None = None
    deny: frozenset[str] = frozenset()
    max_cost_usd: float | None = None
    max_latency_ms: float | None = None
    capabilities: frozenset[str] = frozenset()
    min_context_tokens: int | None = None
    objective_override: dict[str, Any] | None = field(default=None, hash=False)

    def merged(self, other: Constraints) -> Constraints:
        """Both sets of filters at once: allow-lists intersect, deny-lists and capabilities unite, limits tighten."""
        allow = (
            self.allow
            if other.allow is None
            else (other.allow if self.allow is None else self.allow & other.allow)
        )

        def tighter(a: float | None, b: float | None) -> float | None:
            return b if a is None else (a if b is None else min(a, b))

        contexts = [c for c in (self.min_context_tokens, other.min_context_tokens) if c is not None]
        override = {**(self.objective_override or {}), **(other.objective_override or {})} or None
        return Constraints(
            allow=allow,
            deny=self.deny | other.deny,
            max_cost_usd=tighter(self.max_cost_usd, other.max_cost_usd),
            max_latency_ms=tighter(self.max_latency_ms, other.max_latency_ms),
            capabilities=self.capabilities | other.capabilities,
            min_context_tokens=max(contexts) if contexts else None,
            objective_override=override,
        )


NO_CONSTRAINTS = Constraints()


@dataclass(frozen=True)
class Outcome:
    """Feedback for one call. ``served=False`` marks shadow/off-policy calls: they teach but do not pace spend."""

    model: str
    quality: float | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    error: str | None = None
    at_s: float = 0.0
    served: bool = True


@dataclass(frozen=True)
class Choice:
    """The routing decision and everything needed to audit it and to learn off-policy from it."""

    model: str | None
    fallbacks: tuple[str, ...]
    propensity: float
    sampled: Mapping[
        str, float
    ]  # a read-only mapping (a dict or a SampledUtilities view); compares like a dict
    means: dict[str, float]
    explored: bool
    filtered: dict[str, str]
    circuit_open: tuple[str, ...]
    no_eligible: str | None
    state_version: int
    policy_name: str


class SampledUtilities(Mapping[str, float]):
    """Read-only ``name -> sampled utility`` view of one row of a pre-drawn utility block (see ``choose``).

    Nothing is converted until it is read, so a decision does not pay for building a dict of k floats that
    most callers never look at. Behaves like a dict of Python floats for reading and equality.
    """

    __slots__ = ("_names", "_positions", "_draws", "_row")

    def __init__(self, names: tuple[str, ...], positions: Mapping[str, int], draws: Any, row: int) -> None:
        self._names = names  # eligible names, aligned with the columns of ``draws``
        self._positions = positions  # name -> column
        self._draws = draws  # (rows, k) float64 array, never modified after it is drawn
        self._row = row

    def __getitem__(self, name: str) -> float:
        return float(self._draws[self._row, self._positions[name]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._positions

    def to_dict(self) -> dict[str, float]:
        return dict(self.pairs())

    def pairs(self) -> Iterator[tuple[str, float]]:
        """``(name, sampled utility)`` in column order, as Python floats (what ``items()`` yields, minus the
        dict)."""
        return zip(self._names, self._draws[self._row].tolist(), strict=True)

    def items(self) -> Any:
        return self.to_dict().items()

    def values(self) -> Any:
        return self.to_dict().values()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SampledUtilities):
            return self.to_dict() == other.to_dict()
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self.to_dict())

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (self.to_dict(),))


def make_choice(**values: Any) -> Choice:
    """Build a :class:`Choice` without the frozen-dataclass ``__setattr__`` cost (hot path only)."""
    choice = object.__new__(Choice)
    choice.__dict__.update(values)
    return choice
