"""Wire events: the pydantic models every producer and consumer of banditroute topics agrees on.

Conventions: snake_case fields, ``*_id`` identifiers, ``*_at`` timezone-aware UTC timestamps (serialised as
ISO 8601 with ``Z``), ``*_ms`` durations in milliseconds, ``*_usd`` amounts in US dollars. Every size a sender
controls is bounded; NaN and infinities are rejected everywhere.

Versioning policy: every event carries ``schema_version`` (currently ``1``) and it is REQUIRED on the wire. A
message without it is a ``validation_error``; a message with any other value is dead-lettered with reason
``unsupported_schema_version``. A compatible change (a new optional field) keeps the version; an incompatible
one bumps it, and consumers accept a new version only once they are upgraded to read it. The Python models
default the field to ``1`` for producers' convenience; :func:`banditroute.codec.decode` enforces its presence.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    model_validator,
)

SCHEMA_VERSION = 1
"""The schema version this code reads and writes."""

MAX_LIST = 64
"""Longest list (candidates, fallbacks, capabilities, ...) a sender may send."""
MAX_METADATA_KEYS = 32
MAX_METADATA_BYTES = 4096
MAX_MESSAGE_CHARS = 1024
MAX_TOKENS = 100_000_000
"""Upper bound on a token count in one call (far above any real context window)."""
MAX_ORIGINAL_BYTES = 65536
"""Dead letters keep at most this many bytes of the original payload."""


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _iso_z(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


UtcDatetime = Annotated[
    AwareDatetime,
    AfterValidator(_to_utc),
    PlainSerializer(_iso_z, return_type=str, when_used="json"),
]
"""A timezone-aware timestamp, normalised to UTC; naive datetimes are rejected."""

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]*$"
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_ID_PATTERN)]
"""An id or name: 1-128 chars, starts with a letter/digit, then letters, digits and ``._:/@+=-``."""
ModelName = Identifier
DecisionId = Annotated[str, StringConstraints(min_length=1, max_length=136, pattern=_ID_PATTERN)]
"""A decision id: the router writes ``d:<request_id>`` (deterministic, so a request decided twice shows)."""
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Message = Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS)]


def _not_dots(value: str) -> str:
    if value in (".", ".."):
        raise ValueError("a topic name cannot be '.' or '..'")
    return value


TopicName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$"),
    AfterValidator(_not_dots),
]
"""A Kafka topic name: 1-249 chars of letters, digits, ``.``, ``_``, ``-``; not ``.`` or ``..``."""

NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
PosFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
UnitFloat = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
SafeInt = Annotated[int, Field(ge=-(2**53), le=2**53)]
"""An integer exactly representable as a JSON number in every language (|n| <= 2**53)."""
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
MetadataValue = Annotated[str, StringConstraints(max_length=256)] | bool | SafeInt | FiniteFloat


class WireEvent(BaseModel):
    """Shared configuration: immutable, unknown fields rejected, finite floats only.

    Python construction is lax (lists become tuples, strings become enums); wire input is validated in strict
    JSON mode by :func:`banditroute.codec.decode` (no "5" for 5, no 1 for true).
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra=lambda schema, _cls: _require_schema_version(schema),
    )

    schema_version: Literal[1] = Field(
        default=1,
        description="Event schema version; required on the wire. Unknown versions are dead-lettered "
        "with reason unsupported_schema_version.",
    )


def _require_schema_version(schema: dict[str, Any]) -> None:
    required = schema.setdefault("required", [])
    if isinstance(required, list) and "schema_version" not in required:
        required.insert(0, "schema_version")


class _Part(BaseModel):
    """Shared configuration of nested sub-models."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _unique(values: tuple[str, ...] | None, field: str) -> None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError(f"{field} must not contain duplicates")


# --------------------------------------------------------------------------------------------------------------
# Routing requests


class Constraints(_Part):
    """Hard limits a chosen model must satisfy."""

    max_cost_usd: NonNegFloat | None = Field(
        default=None, description="Largest acceptable expected cost of the call in USD (>= 0)."
    )
    max_latency_ms: PosFloat | None = Field(
        default=None, description="Largest acceptable expected latency in milliseconds (> 0)."
    )
    capabilities: tuple[Identifier, ...] = Field(
        default=(),
        max_length=MAX_LIST,
        description="Capabilities the model must all have (e.g. json_mode, vision); at most 64, no duplicates.",
        json_schema_extra={"uniqueItems": True},
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        _unique(self.capabilities, "capabilities")
        return self


class Objective(_Part):
    """Per-request override of the routing objective."""

    kind: Literal["utility", "budget"] = Field(
        default="utility",
        description="utility: maximise quality - lam * cost_usd - mu * latency_s; "
        "budget: maximise quality subject to the tenant's spend budget.",
    )
    lam: NonNegFloat | None = Field(
        default=None, description="Price of one USD in quality units (>= 0); null uses the configured value."
    )
    mu: NonNegFloat | None = Field(
        default=None,
        description="Price of one second of latency in quality units (>= 0); null uses the configured value.",
    )


def _check_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    if len(metadata) > MAX_METADATA_KEYS:
        raise ValueError(f"metadata has {len(metadata)} keys; at most {MAX_METADATA_KEYS} are allowed")
    try:
        size = len(orjson.dumps(metadata))
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"metadata cannot be encoded: {exc}") from exc
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {size} bytes when encoded; at most {MAX_METADATA_BYTES} are allowed")
    return metadata


Metadata = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], MetadataValue],
    AfterValidator(_check_metadata),
]


class RoutingRequest(WireEvent):
    """A client asks the router to pick a model for one call. Topic: ``banditroute.requests``."""

    request_id: Identifier = Field(description="Client-chosen id, unique per request; the topic key.")
    task_type: Identifier = Field(description="Kind of task (e.g. summarise, code); each learns separately.")
    tenant: Identifier | None = Field(default=None, description="Tenant or team the request belongs to.")
    candidates: tuple[ModelName, ...] | None = Field(
        default=None,
        max_length=MAX_LIST,
        description="Allow list: only these models may be chosen (at most 64, no duplicates); null = all.",
        json_schema_extra={"uniqueItems": True},
    )
    exclude: tuple[ModelName, ...] | None = Field(
        default=None,
        max_length=MAX_LIST,
        description="Deny list: these models must not be chosen (at most 64, no duplicates).",
        json_schema_extra={"uniqueItems": True},
    )
    constraints: Constraints = Field(
        default_factory=Constraints, description="Hard limits on cost, latency and capabilities."
    )
    objective: Objective | None = Field(
        default=None, description="Override of the routing objective; null uses the configured one."
    )
    metadata: Metadata = Field(
        default_factory=dict,
        description="Free-form flat labels: at most 32 keys (1-64 chars), values string (<= 256 chars), "
        "integer, number or boolean; at most 4096 bytes encoded.",
    )
    created_at: UtcDatetime = Field(description="When the client created the request (UTC, ISO 8601).")
    reply_to: TopicName | None = Field(
        default=None, description="Topic to which the decision is also sent, for request-reply clients."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        _unique(self.candidates, "candidates")
        _unique(self.exclude, "exclude")
        return self


# --------------------------------------------------------------------------------------------------------------
# Routing decisions


class CandidateScore(_Part):
    """How one eligible model scored in a decision."""

    model: ModelName = Field(description="Model name.")
    sampled_utility: FiniteFloat = Field(description="Utility drawn from the posterior for this decision.")
    mean_utility: FiniteFloat = Field(description="Posterior mean utility at decision time.")


class PolicyRef(_Part):
    """Which policy made a decision."""

    name: Identifier = Field(description="Policy name (e.g. thompson).")
    version: Identifier = Field(description="Policy version or configuration hash.")


class DecisionReasons(_Part):
    """Why the decision came out as it did."""

    filtered: dict[ModelName, ShortText] = Field(
        default_factory=dict,
        max_length=MAX_LIST,
        description="Models removed before sampling, with the reason for each (at most 64).",
    )
    circuit_open: tuple[ModelName, ...] = Field(
        default=(), max_length=MAX_LIST, description="Models skipped because their circuit breaker was open."
    )
    exploration: bool = Field(
        default=False, description="True when the chosen model was not the one with the best mean utility."
    )
    no_eligible: ShortText | None = Field(
        default=None, description="Set when no model was eligible and the request was rejected: why."
    )
    rules: tuple[Identifier, ...] = Field(
        default=(), max_length=MAX_LIST, description="Names of routing rules that applied."
    )
    capped: Identifier | None = Field(
        default=None,
        description="The cap on client-named keys that applied (policy.yaml `limits`): `max_task_types` (routed "
        "with the default task policy and the shared state), `max_tenants_per_task_type` (the task type's "
        "state shared by tenants), `tenant_requests_per_s` or `unknown_task_type` (rejected).",
    )


class RoutingDecision(WireEvent):
    """The model picked for one request (or a rejection). Topic: ``banditroute.decisions``."""

    decision_id: DecisionId = Field(
        description="Id of this decision, `d:<request_id>`; a request decided twice (after a crash) repeats it."
    )
    request_id: Identifier = Field(description="The request decided; the topic key.")
    task_type: Identifier = Field(description="Task type of the request.")
    tenant: Identifier | None = Field(default=None, description="Tenant of the request.")
    model: ModelName | None = Field(description="Chosen model; null only when the request was rejected.")
    fallbacks: tuple[ModelName, ...] = Field(
        default=(), max_length=MAX_LIST, description="Models to try, in order, if the chosen one fails."
    )
    propensity: float = Field(
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Probability in (0, 1] that the policy picks this model; for off-policy evaluation.",
    )
    candidates: tuple[CandidateScore, ...] = Field(
        default=(), max_length=MAX_LIST, description="Eligible models and their scores."
    )
    policy: PolicyRef = Field(description="Policy that made the decision.")
    state_version: Count = Field(description="Version of the learned state used to decide.")
    reasons: DecisionReasons = Field(default_factory=DecisionReasons, description="Explanation.")
    decided_at: UtcDatetime = Field(description="When the decision was made (UTC).")
    decision_ms: NonNegFloat = Field(description="Time spent deciding, in milliseconds.")
    worker_id: Identifier | None = Field(default=None, description="Worker that decided.")
    is_default_route: bool = Field(
        default=False, description="True when the client fell back to its static default route."
    )
    shadow: bool = Field(default=False, description="True for a shadow policy's would-be decision.")
    state_key: Annotated[str, StringConstraints(min_length=1, max_length=260)] | None = Field(
        default=None,
        description="The learnt state the decision used, which its outcome updates: the task type, "
        "`<tenant>|<task type>` for per-tenant state, or `~shared` for task types past `max_task_types`.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.model is None and self.reasons.no_eligible is None:
            raise ValueError(
                "model may be null only when reasons.no_eligible says why the request was rejected"
            )
        if self.model is not None and self.reasons.no_eligible is not None:
            raise ValueError("reasons.no_eligible must be null when a model was chosen")
        return self


# --------------------------------------------------------------------------------------------------------------
# Feedback


class FeedbackError(StrEnum):
    """Why a call failed."""

    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    PROVIDER_ERROR = "provider_error"
    INVALID_OUTPUT = "invalid_output"
    CONTENT_FILTER = "content_filter"
    OTHER = "other"


class Feedback(WireEvent):
    """The outcome of a routed call. Topic: ``banditroute.feedback``, keyed by request_id."""

    request_id: Identifier | None = Field(default=None, description="Request the outcome is for.")
    decision_id: DecisionId | None = Field(default=None, description="Decision the outcome is for.")
    model: ModelName = Field(description="Model that actually served the call (may be a fallback).")
    quality: UnitFloat | None = Field(
        default=None, description="Quality score in [0, 1]; required unless error is set."
    )
    latency_ms: NonNegFloat | None = Field(default=None, description="Observed latency in milliseconds.")
    cost_usd: NonNegFloat | None = Field(
        default=None, description="Observed cost in USD; or give tokens_in and tokens_out to price it."
    )
    tokens_in: int | None = Field(
        default=None, ge=0, le=MAX_TOKENS, description="Prompt tokens, priced from the catalog."
    )
    tokens_out: int | None = Field(
        default=None, ge=0, le=MAX_TOKENS, description="Completion tokens, priced from the catalog."
    )
    error: FeedbackError | None = Field(default=None, description="Set when the call failed.")
    observed_at: UtcDatetime = Field(description="When the outcome was observed (UTC).")
    idempotency_key: Identifier = Field(description="Sender-chosen key; repeats are dropped as duplicates.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.request_id is None and self.decision_id is None:
            raise ValueError("give request_id or decision_id (or both)")
        if (self.tokens_in is None) != (self.tokens_out is None):
            raise ValueError("give both tokens_in and tokens_out, or neither")
        if self.error is None:
            if self.quality is None:
                raise ValueError("quality is required when error is not set")
            if self.cost_usd is None and self.tokens_in is None:
                raise ValueError("give cost_usd or tokens_in and tokens_out when error is not set")
        return self


# --------------------------------------------------------------------------------------------------------------
# Model catalog


class ModelCatalogEvent(WireEvent):
    """A model was added, updated or retired. Topic: ``banditroute.catalog`` (compacted, keyed by model)."""

    action: Literal["added", "updated", "retired"] = Field(description="What happened to the model.")
    model: ModelName = Field(description="Model name; the topic key.")
    price_in_per_1k_usd: NonNegFloat | None = Field(
        default=None, description="USD per 1000 prompt tokens; required unless action is retired."
    )
    price_out_per_1k_usd: NonNegFloat | None = Field(
        default=None, description="USD per 1000 completion tokens; required unless action is retired."
    )
    cost_per_call_usd: NonNegFloat | None = Field(
        default=None, description="Expected cost of one call in USD."
    )
    capabilities: tuple[Identifier, ...] = Field(
        default=(),
        max_length=MAX_LIST,
        description="Capabilities of the model (at most 64, no duplicates).",
        json_schema_extra={"uniqueItems": True},
    )
    context_window: int | None = Field(
        default=None, gt=0, le=MAX_TOKENS, description="Context window in tokens."
    )
    latency_ms: NonNegFloat | None = Field(default=None, description="Expected latency in milliseconds.")
    enabled: bool = Field(default=True, description="False takes the model out of routing.")
    lifecycle: Literal["active", "canary", "shadow"] = Field(
        default="active", description="active: routed; canary: routed to a small share; shadow: never served."
    )
    quality_prior: tuple[PosFloat, PosFloat] | None = Field(
        default=None, description="Beta prior [alpha, beta] on quality, both > 0."
    )
    rate_limit_rps: PosFloat | None = Field(
        default=None, description="Provider limit in requests per second."
    )
    tokens_per_minute: int | None = Field(
        default=None, gt=0, le=10**12, description="Provider limit in tokens per minute."
    )
    updated_at: UtcDatetime = Field(description="When this catalog entry changed (UTC).")

    @model_validator(mode="after")
    def _check(self) -> Self:
        _unique(self.capabilities, "capabilities")
        if self.action != "retired" and (
            self.price_in_per_1k_usd is None or self.price_out_per_1k_usd is None
        ):
            raise ValueError(
                f"price_in_per_1k_usd and price_out_per_1k_usd are required when action is {self.action}"
            )
        return self


# --------------------------------------------------------------------------------------------------------------
# Dead letters


class DeadLetterReason(StrEnum):
    """Machine codes for why a message was dead-lettered."""

    EMPTY_PAYLOAD = "empty_payload"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    MALFORMED_JSON = "malformed_json"
    NON_FINITE_NUMBER = "non_finite_number"
    VALIDATION_ERROR = "validation_error"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    UNKNOWN_MODEL = "unknown_model"
    DUPLICATE_ID = "duplicate_id"
    UNKNOWN_REQUEST = "unknown_request"
    DUPLICATE_FEEDBACK = "duplicate_feedback"
    MODEL_MISMATCH = "model_mismatch"
    LATE_FEEDBACK = "late_feedback"
    INTERNAL_ERROR = "internal_error"
    UNDECODABLE_STATE = "undecodable_state"


def _check_b64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("original must be standard base64") from exc
    return value


class DeadLetter(WireEvent):
    """A message that could not be used, with why. Topic: ``banditroute.deadletter``, keyed by source topic."""

    original: Annotated[
        str, StringConstraints(max_length=4 * MAX_ORIGINAL_BYTES // 3 + 4), AfterValidator(_check_b64)
    ] = Field(description="The original message bytes, standard base64 (truncated to 65536 bytes).")
    original_size: Count = Field(description="Size of the original message in bytes.")
    original_truncated: bool = Field(default=False, description="True when original holds only a prefix.")
    source_topic: TopicName = Field(description="Topic the message was read from.")
    source_partition: Count = Field(description="Partition the message was read from.")
    source_offset: Count = Field(description="Offset of the message.")
    event_type: Identifier | None = Field(default=None, description="Event type the message was read as.")
    reason: DeadLetterReason = Field(description="Machine code of the failure.")
    error: Message = Field(description="What was wrong: which field, what was found, what is allowed.")
    dead_lettered_at: UtcDatetime = Field(description="When the message was dead-lettered (UTC).")

    @property
    def original_bytes(self) -> bytes:
        """The (possibly truncated) original payload."""
        return base64.b64decode(self.original)


Event = RoutingRequest | RoutingDecision | Feedback | ModelCatalogEvent | DeadLetter

EVENT_TYPES: dict[str, type[WireEvent]] = {
    cls.__name__: cls for cls in (RoutingRequest, RoutingDecision, Feedback, ModelCatalogEvent, DeadLetter)
}
"""Every wire event by name; the names are also the file names in ``streams/schemas/``."""

__all__ = [
    "EVENT_TYPES",
    "MAX_LIST",
    "MAX_MESSAGE_CHARS",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_KEYS",
    "MAX_ORIGINAL_BYTES",
    "SCHEMA_VERSION",
    "CandidateScore",
    "Constraints",
    "DeadLetter",
    "DeadLetterReason",
    "DecisionReasons",
    "Event",
    "Feedback",
    "FeedbackError",
    "ModelCatalogEvent",
    "Objective",
    "PolicyRef",
    "RoutingDecision",
    "RoutingRequest",
    "UtcDatetime",
    "WireEvent",
]
