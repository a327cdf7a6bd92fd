"""Routing requests, feedback and default-route decisions built in one place (pure: no I/O).

Used by the client, the CLI and the integrations; re-exported by :mod:`banditroute.client`.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from banditroute.events import (
    Constraints,
    DecisionReasons,
    Feedback,
    FeedbackError,
    Objective,
    PolicyRef,
    RoutingDecision,
    RoutingRequest,
)
from banditroute.settings import Settings

DEFAULT_ROUTE_ENV = "BANDITROUTE_DEFAULT_ROUTE"
"""Environment variable with the static default route: ``model[,fallback,...]``."""
DEFAULT_ROUTE_RULE = "default_route"
_WHY_CLEAN = re.compile(r"[^A-Za-z0-9._:/@+=-]+")


@dataclass(frozen=True, slots=True)
class DefaultRoute:
    """The static route used when the router does not answer: a model and the fallbacks after it."""

    model: str
    fallbacks: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: DefaultRoute | str | Sequence[str] | None) -> DefaultRoute | None:
        """Accept a DefaultRoute, ``"model,fallback1,fallback2"`` or a list of names; empty means none."""
        if value is None or isinstance(value, DefaultRoute):
            return value
        names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value)]
        names = [n for n in names if n]
        if not names:
            return None
        return cls(names[0], tuple(names[1:]))

    @classmethod
    def from_settings(cls, settings: Settings) -> DefaultRoute | None:
        """``settings.default_route`` if the settings have it, else ``$BANDITROUTE_DEFAULT_ROUTE``."""
        configured = getattr(settings, "default_route", None)
        if configured is None:
            configured = os.environ.get(DEFAULT_ROUTE_ENV)
        return cls.parse(configured)


def new_request_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def build_request(
    task_type: str,
    *,
    tenant: str | None = None,
    candidates: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    max_cost_usd: float | None = None,
    max_latency_ms: float | None = None,
    capabilities: Iterable[str] = (),
    objective: Objective | Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    reply_to: str | None = None,
    created_at: datetime | None = None,
) -> RoutingRequest:
    """A validated :class:`RoutingRequest` (raises ``pydantic.ValidationError`` on bad input)."""
    return RoutingRequest(
        request_id=request_id or new_request_id(),
        task_type=task_type,
        tenant=tenant,
        candidates=tuple(candidates) if candidates is not None else None,
        exclude=tuple(exclude) if exclude is not None else None,
        constraints=Constraints(
            max_cost_usd=max_cost_usd, max_latency_ms=max_latency_ms, capabilities=tuple(capabilities)
        ),
        objective=Objective.model_validate(objective) if isinstance(objective, Mapping) else objective,
        metadata=dict(metadata or {}),
        created_at=created_at or utcnow(),
        reply_to=reply_to,
    )


def idempotency_key_for(request_id: str, model: str) -> str:
    """``<request_id>:<model>``, or its SHA-256 when that would exceed the 128-character id limit."""
    key = f"{request_id}:{model}"
    return key if len(key) <= 128 else hashlib.sha256(key.encode()).hexdigest()


def request_id_of_decision(decision_id: str) -> str | None:
    """The request id inside a worker decision id ``d:<request_id>``, else None."""
    return decision_id[2:] if decision_id.startswith("d:") and len(decision_id) > 2 else None


def build_feedback(
    *,
    request_id: str | None,
    model: str,
    quality: float | None = None,
    latency_ms: float | None = None,
    cost_usd: float | None = None,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
    error: FeedbackError | str | None = None,
    decision_id: str | None = None,
    idempotency_key: str | None = None,
    observed_at: datetime | None = None,
) -> Feedback:
    """A validated :class:`Feedback`; ``request_id`` may be derived from a ``d:<request_id>`` decision id."""
    if request_id is None and decision_id is not None:
        request_id = request_id_of_decision(decision_id)
    if request_id is None:
        raise ValueError("give request_id (the feedback topic is keyed by it)")
    return Feedback(
        request_id=request_id,
        decision_id=decision_id,
        model=model,
        quality=quality,
        latency_ms=latency_ms,
        cost_usd=cost_usd,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        error=FeedbackError(error) if error is not None else None,
        observed_at=observed_at or utcnow(),
        idempotency_key=idempotency_key or idempotency_key_for(request_id, model),
    )


def default_decision(request: RoutingRequest, route: DefaultRoute, why: str) -> RoutingDecision:
    """The decision returned when the router did not answer: the static route, flagged, propensity 1.

    ``why`` is a short code (``timeout``, ``unavailable``, ...); it lands in ``reasons.rules`` as
    ``default_route:<why>`` (``reasons.no_eligible`` must stay null when a model is set).
    """
    code = _WHY_CLEAN.sub("_", why).strip("_")[:100] or "unknown"
    return RoutingDecision(
        decision_id=f"default:{request.request_id}"[:128],
        request_id=request.request_id,
        task_type=request.task_type,
        tenant=request.tenant,
        model=route.model,
        fallbacks=route.fallbacks,
        propensity=1.0,
        policy=PolicyRef(name=DEFAULT_ROUTE_RULE, version="static"),
        state_version=0,
        reasons=DecisionReasons(rules=(DEFAULT_ROUTE_RULE, f"{DEFAULT_ROUTE_RULE}:{code}")),
        decided_at=utcnow(),
        decision_ms=0.0,
        is_default_route=True,
    )


def default_route_reason(decision: RoutingDecision) -> str | None:
    """Why a decision is a default route (``timeout``, ``unavailable``, ...), or None for a real decision."""
    if not decision.is_default_route:
        return None
    for rule in decision.reasons.rules:
        if rule.startswith(f"{DEFAULT_ROUTE_RULE}:"):
            return rule.split(":", 1)[1]
    return "unknown"


__all__ = [
    "DEFAULT_ROUTE_ENV",
    "DEFAULT_ROUTE_RULE",
    "DefaultRoute",
    "build_feedback",
    "build_request",
    "default_decision",
    "default_route_reason",
    "idempotency_key_for",
    "new_request_id",
    "request_id_of_decision",
    "utcnow",
]
