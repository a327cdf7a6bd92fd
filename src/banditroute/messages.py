"""Routing requests, feedback and default-route decisions built in one place (pure: no I/O).

Used by the client, the CLI and the integrations; re-exported by :mod:`banditroute.client`.
"""

from __future__ import annotations

import collections
import hashlib
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard, TypeVar

import orjson
from pydantic import BaseModel

from banditroute.events import (
    _ID_PATTERN,
    MAX_METADATA_BYTES,
    MAX_METADATA_KEYS,
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


_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))
"""Byte 6 of a version-4 UUID: its high nibble is the version (4)."""
_VARIANT_RFC_4122 = bytes((b & 0x3F) | 0x80 for b in range(256))
"""Byte 8: its two high bits are the variant (RFC 4122)."""


class _RequestIds:
    """Random version-4 UUIDs as 32 hex digits, like ``uuid.uuid4().hex`` at a fraction of its cost (it calls
    ``os.urandom`` for every id): 122 bits of ``os.urandom`` per id still (ids must not be predictable: whoever
    knows a request id can report its outcome), read, marked and turned to hex 256 ids at a time. A deque
    hands them out (``popleft`` is atomic, so threads never share an id); a forked child drops the parent's
    pool."""

    POOL = 256

    def __init__(self) -> None:
        self._pool: collections.deque[str] = collections.deque()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._pool.clear)

    def __call__(self) -> str:
        try:
            return self._pool.popleft()
        except IndexError:
            return self._refill()

    def _refill(self) -> str:
        raw = bytearray(os.urandom(16 * self.POOL))
        raw[6::16] = raw[6::16].translate(_VERSION_4)
        raw[8::16] = raw[8::16].translate(_VARIANT_RFC_4122)
        text = raw.hex()
        ids = [text[i : i + 32] for i in range(0, len(text), 32)]
        mine = ids.pop()
        self._pool.extend(ids)
        return mine


new_request_id = _RequestIds()
"""A new request id: a random version-4 UUID as 32 lower-case hex digits (``uuid.UUID(hex=...)`` reads it)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


_M = TypeVar("_M", bound=BaseModel)
_new = object.__new__
# pydantic's BaseModel keeps a model's fields in __dict__ and three more slots; their descriptors, set directly
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def trusted(cls: type[_M], values: dict[str, Any], fields_set: set[str] | None = None) -> _M:
    """``cls`` holding ``values`` (every field, already of the validated type) without validating them again.

    Only for values this process built to the model's schema; what pydantic's ``model_construct`` does minus
    its per-field default handling (which costs more than validating). ``values`` becomes the model's fields;
    ``fields_set`` (default: all of them) is what ``model_fields_set`` reports as given explicitly.
    """
    model = _new(cls)
    _set_dict(model, values)
    _set_fields_set(model, set(values) if fields_set is None else fields_set)
    _set_extra(model, None)
    _set_private(model, None)
    return model


def plain_request(
    request_id: str,
    task_type: str,
    tenant: str | None,
    metadata: dict[str, Any],
    created_at: datetime,
    reply_to: str | None,
    fields_set: set[str],
) -> RoutingRequest:
    """A :class:`RoutingRequest` without lists, limits or objective, from values already checked against its
    schema (``created_at`` in UTC), built without validating them again (see :func:`trusted`)."""
    return trusted(
        RoutingRequest,
        {
            "schema_version": 1,
            "request_id": request_id,
            "task_type": task_type,
            "tenant": tenant,
            "candidates": None,
            "exclude": None,
            "constraints": _NO_CONSTRAINTS,
            "objective": None,
            "metadata": metadata,
            "created_at": created_at,
            "reply_to": reply_to,
        },
        fields_set,
    )


_IDENTIFIER = re.compile(_ID_PATTERN[1:-1])  # without "^" and "$": fullmatch anchors it
_NO_CONSTRAINTS = Constraints()
_GIVEN = frozenset(RoutingRequest.model_fields) - {"schema_version"}
"""The fields ``build_request`` passes to pydantic (``model_fields_set`` of its requests)."""
_SAFE_INT = 2**53


_KNOWN_IDENTIFIERS: set[str] = set()
"""Task types and tenants already checked (they repeat; request ids do not come here unless given)."""
MAX_KNOWN_IDENTIFIERS = 4096


def is_identifier(value: object) -> TypeGuard[str]:
    """Whether ``value`` is what :data:`banditroute.events.Identifier` accepts (checked without pydantic)."""
    return type(value) is str and len(value) <= 128 and _IDENTIFIER.fullmatch(value) is not None


def known_identifier(value: object) -> bool:
    """:func:`is_identifier`, remembered for the values that repeat (task types, tenants); one cache for every
    caller and thread (a set's add, clear and membership each hold the GIL; a value cleared is checked again)."""
    if type(value) is not str:
        return False
    if value in _KNOWN_IDENTIFIERS:
        return True
    if not is_identifier(value):
        return False
    if len(_KNOWN_IDENTIFIERS) >= MAX_KNOWN_IDENTIFIERS:
        _KNOWN_IDENTIFIERS.clear()
    _KNOWN_IDENTIFIERS.add(value)
    return True


def _plain_metadata(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """A copy of ``metadata`` when it is already what :class:`RoutingRequest` accepts unchanged, else None."""
    if type(metadata) is not dict or len(metadata) > MAX_METADATA_KEYS:
        return None
    for key, value in metadata.items():
        if type(key) is not str or not 1 <= len(key) <= 64:
            return None
        kind = type(value)
        if kind is str:
            if len(value) > 256:
                return None
        elif kind is int:
            if not -_SAFE_INT <= value <= _SAFE_INT:
                return None
        elif kind is float:
            if not math.isfinite(value):
                return None
        elif kind is not bool:
            return None
    if len(orjson.dumps(metadata)) > MAX_METADATA_BYTES:
        return None
    return dict(metadata)


class PlainRequest:
    """A checked plain request (a task type, maybe a tenant, request id and plain metadata; no lists, limits,
    objective or reply topic) as the decide logic reads it, without the :class:`RoutingRequest` model: a
    local-mode request is decided in this process and never published. :meth:`full` is its model (what
    :func:`build_request` returns for the same call). Made by :func:`plain_call` only."""

    __slots__ = ("request_id", "task_type", "tenant", "metadata")
    candidates: None = None
    exclude: None = None
    objective: None = None
    constraints: Constraints = _NO_CONSTRAINTS
    reply_to: None = None

    def __init__(self, request_id: str, task_type: str, tenant: str | None, metadata: dict[str, Any]) -> None:
        self.request_id = request_id
        self.task_type = task_type
        self.tenant = tenant
        self.metadata = metadata

    def full(self) -> RoutingRequest:
        """The request model, created now (its metadata is this request's: do not change either)."""
        return plain_request(
            self.request_id, self.task_type, self.tenant, self.metadata, datetime.now(UTC), None, set(_GIVEN)
        )


def plain_call(
    task_type: str, tenant: str | None, metadata: Mapping[str, Any] | None, request_id: str | None
) -> PlainRequest | None:
    """The :class:`PlainRequest` of these arguments (a new request id unless one is given) when each is what
    :class:`RoutingRequest` accepts unchanged, else None (then pydantic decides: :func:`build_request`)."""
    if (
        known_identifier(task_type)
        and (tenant is None or known_identifier(tenant))
        and (not request_id or is_identifier(request_id))
    ):
        plain = {} if not metadata else _plain_metadata(metadata)
        if plain is not None:
            return PlainRequest(request_id or new_request_id(), task_type, tenant, plain)
    return None


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
    """A validated :class:`RoutingRequest` (raises ``pydantic.ValidationError`` on bad input).

    The common call (a task type, maybe a tenant, request id and plain metadata; no lists, limits or times)
    is checked here and built without pydantic (about 4x cheaper); anything else, valid or not, goes through
    pydantic, so every error is pydantic's. ``tests/client/test_requests.py`` holds the two paths equal.
    """
    if (
        candidates is None
        and exclude is None
        and max_cost_usd is None
        and max_latency_ms is None
        and not capabilities
        and objective is None
        and reply_to is None
        and created_at is None
    ):
        plain = plain_call(task_type, tenant, metadata, request_id)
        if plain is not None:
            return plain.full()
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
    "PlainRequest",
    "build_feedback",
    "build_request",
    "default_decision",
    "default_route_reason",
    "idempotency_key_for",
    "is_identifier",
    "new_request_id",
    "plain_call",
    "plain_request",
    "request_id_of_decision",
    "trusted",
    "utcnow",
]
