"""Accept the common routing request without pydantic: the decide loop's fast path.

Most requests carry only ``schema_version``, ``request_id``, ``task_type``, ``created_at`` and perhaps
``tenant`` and ``reply_to`` (the SDK also writes the other fields at their defaults). For exactly those, :func:`fast_request` checks the same rules as the pydantic
contract (:class:`~banditroute.events.RoutingRequest` in strict JSON mode, through
:func:`banditroute.codec.decode`) and builds the request without validating it again. It only ever *accepts*:
anything else (another field, another timestamp form, a value it does not recognise as valid) returns None and
the caller decodes the record the full way, which also writes the dead letter with its reason. The test
``tests/kafka/test_fast_request.py`` holds it to that contract on generated inputs: whatever it accepts,
pydantic accepts with the same fields.

The two texts seen most are read without parsing JSON at all (:func:`shaped_request`): the SDK's (every field,
sorted keys, as ``codec.encode`` writes it) and the shortest one (the four required fields in the contract's
order, then perhaps ``tenant`` and ``reply_to``). The text's constant head is compared as bytes and one regular
expression per text matches the rest of the record, with only JSON strings that need no escaping (identifiers,
topics and timestamps have no such characters), so a match reads exactly as ``orjson`` would read it; any
other text takes the parsed path (:func:`parsed_request`). With the optional C extension
(:mod:`banditroute.native`) the same groups are matched in C (``_short_groups``, ``_sdk_groups``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

import orjson

from banditroute import native
from banditroute.events import SCHEMA_VERSION, Constraints, RoutingRequest
from banditroute.messages import PlainRequest, is_identifier, known_identifier, plain_request

_SIMPLE = frozenset({"schema_version", "request_id", "task_type", "created_at", "tenant", "reply_to"})
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
UTC_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{3}(?:[0-9]{3})?)?(?:Z|\+00:00)"
)
"""A UTC timestamp in the forms the SDK writes (what the fast paths accept; anything else goes to pydantic).
ASCII digits (``fromisoformat`` refuses other scripts' digits, which ``\\d`` would match)."""
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

    __slots__ = ("request_id", "task_type", "tenant", "reply_to", "rid", "_created", "_given")
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
        given: Collection[str],
        rid: bytes,
    ) -> None:
        self.request_id = request_id
        self.task_type = task_type
        self.tenant = tenant
        self.reply_to = reply_to
        self.rid = rid
        """The request id's UTF-8 bytes (the record key it should have; JSON-safe: an identifier)."""
        self._created = created
        self._given = given

    def full(self) -> RoutingRequest:
        """The request model (what pydantic builds from the record, fields given included)."""
        return plain_request(
            self.request_id, self.task_type, self.tenant, {}, self._created, self.reply_to, set(self._given)
        )


_PARTS = {
    b"<ID>": rb"([A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,127})",  # events.Identifier (1-128 characters)
    # UTC_TIME with each [0-9]{n} written as n times \d: the same text (in a bytes pattern \d is [0-9]), matched
    # in line instead of by a counted repeat each
    b"<TIME>": b'"('
    + re.sub(rb"\[0-9\]\{(\d)\}", lambda m: rb"\d" * int(m[1]), UTC_TIME.pattern.encode())
    + b')"',
    b"<REPLY>": rb"([A-Za-z0-9._-]{1,249})",  # _TOPIC ("." and ".." are checked after the match)
}


def _text(pattern: bytes) -> re.Pattern[bytes]:
    for name, part in _PARTS.items():
        pattern = pattern.replace(name, part)
    return re.compile(pattern)


_SDK_HEAD = b'{"candidates":null,"constraints":{"capabilities":[],"max_cost_usd":null,"max_latency_ms":null},"created_at":'
_SDK_TEXT = _text(
    rb'<TIME>,"exclude":null,"metadata":\{\},"objective":null,"reply_to":(?:null|"<REPLY>"),'
    rb'"request_id":"<ID>","schema_version":1,"task_type":"<ID>","tenant":(?:null|"<ID>")\}'
)
"""A request as the SDK writes it (``codec.encode``: every field, keys sorted, the defaults of the fields the
fast path takes only at their defaults) after its constant head (``_SDK_HEAD``); groups: created_at, reply_to,
request_id, task_type, tenant."""
_SHORT_HEAD = b'{"schema_version":1,"request_id":"'
_SHORT_TEXT = _text(
    rb'<ID>","task_type":"<ID>","created_at":<TIME>(?:,"tenant":"<ID>")?(?:,"reply_to":"<REPLY>")?\}'
)
"""The shortest request text after its constant head (``_SHORT_HEAD``); groups: request_id, task_type,
created_at, tenant, reply_to."""
_SDK_AT = len(_SDK_HEAD)
_SHORT_AT = len(_SHORT_HEAD)
_SDK_GIVEN = frozenset(RoutingRequest.model_fields)
_SHORT_GIVEN = {
    (tenant, reply_to): frozenset(
        {"schema_version", "request_id", "task_type", "created_at"}
        | ({"tenant"} if tenant else set())
        | ({"reply_to"} if reply_to else set())
    )
    for tenant in (False, True)
    for reply_to in (False, True)
}
"""The fields a short text gives, by whether it has a tenant and a reply topic."""
_SHORT_GIVEN_ONLY = _SHORT_GIVEN[(False, False)]
"""The fields of a short text with neither (the usual one: no look-up by a key made per request)."""


def fast_request(raw: bytes, max_bytes: int) -> FastRequest | None:
    """The request in ``raw`` if it has the common shape and is valid; None means "decode it the full way"."""
    if not raw or len(raw) > max_bytes:
        return None
    request = shaped_request(raw)
    return request if request is not None else parsed_request(raw)


def _regex_groups(pattern: re.Pattern[bytes]) -> Callable[[bytes, int], tuple[Any, ...] | None]:
    """``pattern.fullmatch(raw, at).groups()``, or None where it does not match."""

    def groups(raw: bytes, at: int) -> tuple[Any, ...] | None:
        match = pattern.fullmatch(raw, at)
        return None if match is None else match.groups()

    return groups


_EXTENSION = native.loaded()
_short_groups: Callable[[bytes, int], tuple[Any, ...] | None] = (
    _regex_groups(_SHORT_TEXT) if _EXTENSION is None else _EXTENSION.short_groups
)
"""The groups of ``_SHORT_TEXT`` matched from a position: by ``_native.c`` (no match object, ~10 times fewer
instructions than the expression's engine) when the extension is there, else by the expression."""
_sdk_groups: Callable[[bytes, int], tuple[Any, ...] | None] = (
    _regex_groups(_SDK_TEXT) if _EXTENSION is None else _EXTENSION.sdk_groups
)
"""The same for ``_SDK_TEXT``."""


def shaped_request(raw: bytes) -> FastRequest | None:
    """The request in ``raw`` if its text is the SDK's or the shortest one and valid, else None (see the
    module's docstring)."""
    # the constant head compared as bytes, the pattern matched from its end (a pattern step per character
    # costs more than the compare)
    if raw.startswith(_SHORT_HEAD):
        groups = _short_groups(raw, _SHORT_AT)
        if groups is None:
            return None
        request_id, task_type, created, tenant, reply_to = groups
        given = (
            _SHORT_GIVEN_ONLY
            if tenant is None and reply_to is None
            else _SHORT_GIVEN[(tenant is not None, reply_to is not None)]
        )
    elif raw.startswith(_SDK_HEAD):
        groups = _sdk_groups(raw, _SDK_AT)
        if groups is None:
            return None
        created, reply_to, request_id, task_type, tenant = groups
        given = _SDK_GIVEN
    else:
        return None
    if reply_to is not None and (reply_to == b"." or reply_to == b".."):
        return None
    try:
        created_at = datetime.fromisoformat(created.decode())
    except ValueError:  # e.g. 2026-02-30 or hour 24
        return None
    task = _NAMES.get(task_type)
    if task is None:
        task = _name(task_type)
    if tenant is not None:
        tenant = _NAMES.get(tenant) or _name(tenant)
    request = _new_request(FastRequest)  # FastRequest(...) without the call into __init__
    request.request_id = request_id.decode()
    request.task_type = task
    request.tenant = tenant
    request.reply_to = None if reply_to is None else reply_to.decode()
    request.rid = request_id
    request._created = created_at if created_at.tzinfo is UTC else created_at.astimezone(UTC)
    request._given = given
    return request


_new_request = object.__new__


_NAMES: dict[bytes, str] = {}
"""Task type and tenant names read so far, one string each: a request's name is then the string every table
keyed by it already holds (its hash kept, compared by identity) and is not decoded again."""
MAX_NAMES = 4096


def _name(text: bytes) -> str:
    if len(_NAMES) >= MAX_NAMES:
        _NAMES.clear()
    name = _NAMES[text] = text.decode()
    return name


def parsed_request(raw: bytes) -> FastRequest | None:
    """The request in ``raw`` (parsed as JSON) if it has the common shape and is valid, else None."""
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
    return FastRequest(request_id, task_type, tenant, reply_to, created_at, obj, request_id.encode())
