"""Accept the common routing request without pydantic: the decide loop's fast path.

Most requests carry only ``schema_version``, ``request_id``, ``task_type``, ``created_at`` and perhaps
``tenant`` and ``reply_to`` (the SDK also writes the other fields at their defaults). For exactly those, :func:`fast_request` checks the same rules as the pydantic
contract (:class:`~banditroute.events.RoutingRequest` in strict JSON mode, through
:func:`banditroute.codec.decode`) and builds the request without validating it again. It only ever *accepts*:
anything else (another field, another timestamp form, a value it does not recognise as valid) returns None and
the caller decodes the record the full way, which also writes the dead letter with its reason. The test
``tests/kafka/test_fast_request.py`` holds it to that contract on generated inputs: whatever it accepts,
pydantic accepts with the same fields.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from banditroute.events import SCHEMA_VERSION, Constraints, RoutingRequest
from banditroute.messages import PlainRequest, is_identifier, plain_request
from banditroute.messages import _known_identifier as known_identifier

_SIMPLE = frozenset({"schema_version", "request_id", "task_type", "created_at", "tenant", "reply_to"})
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
UTC_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{3}(?:[0-9]{3})?)?(?:Z|\+00:00)"
)
"""A UTC timestamp in the forms the SDK writes (what the fast paths accept; anything else goes to pydantic).
ASCII digits only: ``\\d`` would also match other scripts' digits, which ``fromisoformat`` refuses anyway, at
half again the cost per match."""
_DEFAULTS: dict[str, object] = {
    "candidates": None,
    "exclude": None,
    "objective": None,
    "metadata": {},
    "constraints": {"capabilities": [], "max_cost_usd": None, "max_latency_ms": None},
}
"""Fields the fast path takes only at these values (as ``codec.encode`` writes an SDK request's defaults)."""


def json_object(raw: bytes | None, max_bytes: int) -> dict[str, Any] | None:
    """The JSON object in ``raw`` (at most ``max_bytes``), or None for anything else."""
    if not raw or len(raw) > max_bytes:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return obj if type(obj) is dict else None


def utc_time(value: object) -> datetime | None:
    """``value`` as a UTC datetime if it is a timestamp in a form :data:`UTC_TIME` knows and valid, else None."""
    if type(value) is not str or UTC_TIME.fullmatch(value) is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:  # e.g. 2026-02-30 or hour 24
        return None
    # "Z" and "+00:00" parse to the UTC singleton itself; converting would only copy the datetime
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


class FastRequest:
    """A request of the common shape, checked against the contract, as the decide loop reads it: the fields
    deciding reads, without the :class:`RoutingRequest` model (:meth:`full` builds it: what pydantic makes of
    the same record)."""

    __slots__ = ("request_id", "task_type", "tenant", "reply_to", "_created", "_given")
    candidates: None = None
    exclude: None = None
    objective: None = None
    constraints: Constraints = PlainRequest.constraints
    metadata: dict[str, Any] = {}  # noqa: RUF012 - shared and never written: no metadata on the fast path

    def __init__(
        self,
        request_id: str,
        task_type: str,
        tenant: str | None,
        reply_to: str | None,
        created: datetime,
        given: dict[str, Any],
    ) -> None:
        self.request_id = request_id
        self.task_type = task_type
        self.tenant = tenant
        self.reply_to = reply_to
        self._created = created
        self._given = given

    def full(self) -> RoutingRequest:
        """The request model (what pydantic builds from the record, fields given included)."""
        return plain_request(
            self.request_id, self.task_type, self.tenant, {}, self._created, self.reply_to, set(self._given)
        )


def fast_request(raw: bytes, max_bytes: int) -> FastRequest | None:
    """The request in ``raw`` if it has the common shape and is valid; None means "decode it the full way"."""
    if not raw or len(raw) > max_bytes:  # json_object, inlined (once per request)
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    if not _SIMPLE.issuperset(obj):
        # the SDK encodes every field: accept the other fields only at their defaults
        for key in obj.keys() - _SIMPLE:
            if (
                key not in _DEFAULTS
                or obj[key] != _DEFAULTS[key]
                or type(obj[key]) is not type(_DEFAULTS[key])
            ):
                return None
    version = obj.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        return None
    request_id, task_type, created = obj.get("request_id"), obj.get("task_type"), obj.get("created_at")
    if not is_identifier(request_id) or type(task_type) is not str or not known_identifier(task_type):
        return None
    tenant, reply_to = obj.get("tenant"), obj.get("reply_to")
    if tenant is not None and not known_identifier(tenant):
        return None
    if reply_to is not None and (
        type(reply_to) is not str or _TOPIC.fullmatch(reply_to) is None or reply_to in (".", "..")
    ):
        return None
    created_at = utc_time(created)
    if created_at is None:
        return None
    # what model_validate would report as given: the fields of the record (``full``)
    return FastRequest(request_id, task_type, tenant, reply_to, created_at, obj)
