"""Declarative routing rules: match on tenant, task type and request metadata; allow, deny, pin or override.

All matching rules apply, in order: allow-lists intersect, deny-lists unite, the first pin wins, objective
overrides merge with later rules winning per key. A rule with ``stop: true`` ends evaluation when it matches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from banditroute.core.models import OBJECTIVES, Constraints

_RULE_KEYS = ("name", "tenants", "task_types", "metadata", "allow", "deny", "pin", "objective", "stop")


def _str_set(rule: str, key: str, value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset([value])
    if not isinstance(value, list | tuple | set | frozenset) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"rule {rule!r}: {key} must be a string or a list of strings")
    return frozenset(value)


@dataclass(frozen=True)
class Rule:
    """Matches when every given condition holds (``None`` = any); metadata values match any listed option."""

    name: str
    tenants: frozenset[str] | None = None
    task_types: frozenset[str] | None = None
    metadata: Mapping[str, frozenset[str]] = field(default_factory=dict, hash=False)
    allow: frozenset[str] | None = None
    deny: frozenset[str] = frozenset()
    pin: str | None = None
    objective: Mapping[str, Any] | None = field(default=None, hash=False)
    stop: bool = False

    def matches(self, tenant: str | None, task_type: str, metadata: Mapping[str, Any]) -> bool:
        if self.tenants is not None and tenant not in self.tenants:
            return False
        if self.task_types is not None and task_type not in self.task_types:
            return False
        for key, options in self.metadata.items():  # a loop, not all(...): this runs for every decision
            if key not in metadata or str(metadata[key]) not in options:
                return False
        return True

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Rule:
        """Validate a config mapping; e.g. ``{"name": "eu", "metadata": {"region": "eu"}, "deny": ["x"]}``."""
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("rule: name must be a non-empty string")
        unknown = sorted(set(data) - set(_RULE_KEYS))
        if unknown:
            raise ValueError(f"rule {name!r}: unknown key(s) {', '.join(unknown)}")
        metadata_in = data.get("metadata") or {}
        if not isinstance(metadata_in, Mapping):
            raise ValueError(f"rule {name!r}: metadata must map key -> value or list of values")
        metadata = {}
        for key, value in metadata_in.items():
            options = value if isinstance(value, list | tuple) else [value]
            metadata[str(key)] = frozenset(str(v) for v in options)
        objective = data.get("objective")
        if objective is not None:
            if not isinstance(objective, Mapping) or not set(objective) <= {"lam", "mu", "objective"}:
                raise ValueError(f"rule {name!r}: objective may only set lam, mu and objective")
            if "objective" in objective and objective["objective"] not in OBJECTIVES:
                raise ValueError(f"rule {name!r}: objective.objective must be one of {', '.join(OBJECTIVES)}")
            for key in ("lam", "mu"):
                value = objective.get(key, 0.0)
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"rule {name!r}: objective.{key} must be a number >= 0")
            objective = dict(objective)
        pin = data.get("pin")
        if pin is not None and not isinstance(pin, str):
            raise ValueError(f"rule {name!r}: pin must be a model name")
        stop = data.get("stop", False)
        if not isinstance(stop, bool):
            raise ValueError(f"rule {name!r}: stop must be true or false")
        if pin is None and objective is None and data.get("allow") is None and not data.get("deny"):
            raise ValueError(f"rule {name!r}: needs an action (allow, deny, pin or objective)")
        return cls(
            name=name,
            tenants=_str_set(name, "tenants", data.get("tenants")),
            task_types=_str_set(name, "task_types", data.get("task_types")),
            metadata=metadata,
            allow=_str_set(name, "allow", data.get("allow")),
            deny=_str_set(name, "deny", data.get("deny")) or frozenset(),
            pin=pin,
            objective=objective,
            stop=stop,
        )


@dataclass(frozen=True)
class RuleEffect:
    """What the matching rules ask for: extra constraints (merge with ``Constraints.merged``) and a pin."""

    constraints: Constraints = Constraints()
    pin: str | None = None


NO_EFFECT = RuleEffect()
"""What no matching rule asks for (one shared object)."""


def apply_rules(
    rules: Sequence[Rule], tenant: str | None, task_type: str, metadata: Mapping[str, Any] | None = None
) -> tuple[RuleEffect, tuple[str, ...]]:
    """Evaluate ``rules`` in order; returns the combined effect and the names of the rules that applied."""
    metadata = metadata or {}
    matching = [rule for rule in rules if rule.matches(tenant, task_type, metadata)]
    if not matching:
        return NO_EFFECT, ()
    effect = Constraints()
    pin: str | None = None
    applied: list[str] = []
    for rule in matching:
        applied.append(rule.name)
        effect = effect.merged(
            Constraints(
                allow=rule.allow,
                deny=rule.deny,
                objective_override=dict(rule.objective) if rule.objective else None,
            )
        )
        if pin is None and rule.pin is not None:
            pin = rule.pin
        if rule.stop:
            break
    return RuleEffect(constraints=effect, pin=pin), tuple(applied)
