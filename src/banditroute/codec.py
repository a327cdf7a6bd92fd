"""The one codec: orjson bytes <-> wire events, with dead letters for everything that does not decode.

:func:`decode` never raises for bad input; it returns the event or a :class:`DecodeError` naming a
:class:`~banditroute.events.DeadLetterReason` and a message a sender can act on. :func:`decode_record` does the
same for a Kafka record and returns a :class:`~banditroute.events.DeadLetter` instead of the error, after
running optional semantic checks (hooks for unknown models and duplicate ids). The worker's faust topics carry
raw bytes and decode with it explicitly.
"""

from __future__ import annotations

import base64
import ctypes
import json
import threading
from array import array
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from banditroute import native
from banditroute.events import (
    MAX_MESSAGE_CHARS,
    MAX_ORIGINAL_BYTES,
    SCHEMA_VERSION,
    DeadLetter,
    DeadLetterReason,
    WireEvent,
)

DEFAULT_MAX_BYTES = 128 * 1024
"""Largest message accepted by default; checked before parsing."""

E = TypeVar("E", bound=WireEvent)


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Why a message could not be used: a machine ``reason`` and a human ``error``."""

    reason: DeadLetterReason
    error: str


Check = Callable[[WireEvent], DecodeError | None]
"""A semantic check run on a decoded event; returns a DecodeError to dead-letter it."""


# --------------------------------------------------------------------------------------------------------------
# encode / decode


def encode(event: BaseModel) -> bytes:
    """Serialise a model to compact JSON bytes with sorted keys (deterministic)."""
    return orjson.dumps(event.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)


def decode(
    event_type: type[E], raw: bytes | bytearray | memoryview | None, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> E | DecodeError:
    """Decode ``raw`` as ``event_type``; never raises for bad input.

    Order: empty check, size check (before parsing), JSON parse, object check, schema_version, validation.
    """
    name = event_type.__name__
    if raw is None or len(raw) == 0:
        return DecodeError(DeadLetterReason.EMPTY_PAYLOAD, f"empty message: expected a JSON object ({name})")
    if len(raw) > max_bytes:
        return DecodeError(
            DeadLetterReason.PAYLOAD_TOO_LARGE,
            f"message is {len(raw)} bytes; at most {max_bytes} are allowed",
        )
    data = bytes(raw)
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return _diagnose_json(data, exc)
    if not isinstance(obj, dict):
        return DecodeError(
            DeadLetterReason.VALIDATION_ERROR,
            f"expected a JSON object ({name}), got a JSON {_json_type(obj)}",
        )
    if "schema_version" not in obj:
        return DecodeError(
            DeadLetterReason.VALIDATION_ERROR,
            f"schema_version: field required; this consumer reads schema_version {SCHEMA_VERSION}",
        )
    version = obj["schema_version"]
    if type(version) is not int:
        return DecodeError(
            DeadLetterReason.VALIDATION_ERROR,
            f"schema_version: must be an integer, got {_json_type(version)}; this consumer reads {SCHEMA_VERSION}",
        )
    if version != SCHEMA_VERSION:
        return DecodeError(
            DeadLetterReason.UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version {_clip(repr(version), 40)} is not supported; this consumer reads {SCHEMA_VERSION}",
        )
    try:
        return event_type.model_validate_json(data, strict=True)
    except ValidationError as exc:
        return DecodeError(DeadLetterReason.VALIDATION_ERROR, describe_validation_error(exc))


def decode_record(
    event_type: type[E],
    raw: bytes | bytearray | memoryview | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
    checks: Iterable[Check] = (),
    now: datetime | None = None,
) -> E | DeadLetter:
    """Decode one Kafka record into ``event_type`` or a :class:`DeadLetter` for the dead-letter topic."""
    result = decode(event_type, raw, max_bytes=max_bytes)
    if not isinstance(result, DecodeError):
        for check in checks:
            problem = check(result)
            if problem is not None:
                result = problem
                break
        else:
            return result
    return make_dead_letter(
        raw,
        topic,
        partition,
        offset,
        result.reason,
        result.error,
        now or datetime.now(UTC),
        event_type=event_type.__name__,
    )


def make_dead_letter(
    raw: bytes | bytearray | memoryview | None,
    topic: str,
    partition: int,
    offset: int,
    reason: DeadLetterReason | str,
    error: str,
    now: datetime,
    *,
    event_type: str | None = None,
) -> DeadLetter:
    """Build the dead letter for a record; the original is kept (up to 64 KiB) as base64."""
    data = bytes(raw) if raw is not None else b""
    kept = data[:MAX_ORIGINAL_BYTES]
    return DeadLetter(
        original=base64.b64encode(kept).decode("ascii"),
        original_size=len(data),
        original_truncated=len(kept) < len(data),
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        event_type=event_type,
        reason=DeadLetterReason(reason),
        error=_clip(error or "unspecified error", MAX_MESSAGE_CHARS),
        dead_lettered_at=now,
    )


# --------------------------------------------------------------------------------------------------------------
# error messages


class _NonFinite(ValueError):
    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.token = token


def _reject_constant(token: str) -> Any:
    raise _NonFinite(token)


def _diagnose_json(data: bytes, exc: orjson.JSONDecodeError) -> DecodeError:
    """Turn an orjson failure into a precise reason: non-finite numbers, bad UTF-8, or malformed JSON."""
    detail = str(exc)
    if "infinity" in detail.lower():
        return DecodeError(
            DeadLetterReason.NON_FINITE_NUMBER,
            f"a number is too large for a 64-bit float (it overflows to infinity): {detail}",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as uexc:
        return DecodeError(DeadLetterReason.MALFORMED_JSON, f"message is not valid UTF-8 (byte {uexc.start})")
    try:
        json.loads(text, parse_constant=_reject_constant)
    except _NonFinite as nexc:
        return DecodeError(
            DeadLetterReason.NON_FINITE_NUMBER, f"{nexc.token} is not allowed: JSON numbers must be finite"
        )
    except (ValueError, RecursionError):
        pass
    return DecodeError(DeadLetterReason.MALFORMED_JSON, f"malformed JSON: {_clip(detail, 300)}")


def describe_validation_error(exc: ValidationError, *, limit: int = 5) -> str:
    """Summarise a pydantic error as ``field: problem (got value)`` items joined by ``; ``."""
    parts: list[str] = []
    errors = exc.errors(include_url=False)
    union_locs: set[str] = set()
    for err in errors:
        # a value that fits no member of a union yields one error per member, tagged by the member's type
        path = [str(p) for p in err["loc"]]
        if path and (path[-1] in _UNION_TAGS or path[-1].startswith(_UNION_TAG_PREFIXES)):
            loc = ".".join(path[:-1])
            if loc not in union_locs:
                union_locs.add(loc)
                got = err.get("input")
                parts.append(f"{loc}: value of type {_json_type(got)} matches none of the allowed types")
    errors = [e for e in errors if ".".join(str(p) for p in e["loc"][:-1]) not in union_locs]
    for err in errors[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(event)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        got = err.get("input")
        if err["type"] == "missing":
            parts.append(f"{loc}: field required")
        elif err["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown field (not in the schema)")
        elif isinstance(got, str | int | float | bool) or got is None:
            parts.append(f"{loc}: {msg} (got {_clip(repr(got), 60)})")
        else:
            parts.append(f"{loc}: {msg}")
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    return _clip("; ".join(parts), MAX_MESSAGE_CHARS)


_UNION_TAGS = frozenset({"str", "int", "float", "bool"})
_UNION_TAG_PREFIXES = ("constrained-", "function-")


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------------------------
# semantic hooks (used by the worker)


def _field(event: WireEvent, name: str) -> Any:
    """``event.name``, or None when the event type has no such field. A pydantic model's ``getattr`` of a missing
    name raises inside ``__getattr__``; that cost ~5 % of the worker's main thread per feedback record."""
    fields = getattr(type(event), "model_fields", None)
    if fields is not None and name not in fields:
        return None
    return getattr(event, name, None)


def unknown_model_check(known_models: Callable[[], Container[str]]) -> Check:
    """Dead-letter events naming a model not in ``known_models()`` (``model`` field, and request candidates)."""

    def check(event: WireEvent) -> DecodeError | None:
        known = known_models()
        names: list[str] = []
        model = _field(event, "model")
        if isinstance(model, str):
            names.append(model)
        candidates = _field(event, "candidates")
        if isinstance(candidates, tuple):
            names.extend(c for c in candidates if isinstance(c, str))
        for name in names:
            if name not in known:
                return DecodeError(DeadLetterReason.UNKNOWN_MODEL, f"model {name!r} is not in the catalog")
        return None

    return check


class DuplicateIdCheck:
    """Dead-letters an event whose ``field`` value was seen among the last ``capacity`` events (in memory).

    Remembered are 64-bit hashes of the values, in two generations of ``capacity // 2``: a value is caught if
    it came within the last ``capacity // 2`` events and may be caught up to ``capacity`` back. Each generation
    is a preallocated open-addressing table of hashes (an ``array`` of int64, at most half full, linear
    probing); when the current one is full the older one is wiped and takes its place. So the memory is fixed
    from the start (16 bytes per remembered id, 2 MiB for 100,000) instead of filling up over the first
    ``capacity`` events, which a soak would see as growth (a set of hashes cost ~60 bytes per id, an
    ``OrderedDict`` of the ids ~250). A false duplicate needs two ids with the same 64-bit hash within the
    window: about ``capacity / 2**64`` per event, 5e-15 for 100,000. With the optional C extension
    (:mod:`banditroute.native`) the same tables are kept and probed in C (``_native.IdTable``), one call per check.
    """

    def __init__(
        self,
        field: str = "request_id",
        *,
        capacity: int = 100_000,
        reason: DeadLetterReason = DeadLetterReason.DUPLICATE_ID,
    ) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self.field = field
        self.capacity = capacity
        self.reason = reason
        self._generation = capacity // 2
        size = 1 << max(3, (2 * self._generation - 1).bit_length())  # at most half full
        self._mask = size - 1
        self._count = 0
        self._previous_count = 0
        extension = native.loaded()
        self.table: Any = None if extension is None else extension.IdTable(size, self._generation)
        """The same two tables in C (``_native.c``: one call per check), when the extension is there (the
        decide loop's C lane checks its requests in them directly)."""
        self._seen: Callable[[str], bool] | None = None if self.table is None else self.table.seen
        empty = bytes(8 * size) if self.table is None else b""
        self._current = array("q", empty)
        self._previous = array("q", empty)

    def __call__(self, event: WireEvent) -> DecodeError | None:
        value = getattr(event, self.field, None)
        if not isinstance(value, str):
            return None
        return self.check(value)

    def check(self, value: str) -> DecodeError | None:
        """:meth:`__call__` for the field's value itself (the decide loop's request path has it at hand)."""
        seen = self._seen
        if seen is not None:
            if seen(value):
                return DecodeError(self.reason, f"{self.field} {value!r} was already received")
            return None
        digest = hash(value) or 1  # 0 marks an empty slot
        mask = self._mask
        start = digest & mask
        table = self._previous
        i = start
        while (held := table[i]) != 0:
            if held == digest:
                return DecodeError(self.reason, f"{self.field} {value!r} was already received")
            i = (i + 1) & mask
        table = self._current  # searched last: ``i`` ends at its first free slot
        i = start
        while (held := table[i]) != 0:
            if held == digest:
                return DecodeError(self.reason, f"{self.field} {value!r} was already received")
            i = (i + 1) & mask
        table[i] = digest
        self._count += 1
        if self._count >= self._generation:
            self._previous, self._current = self._current, self._previous
            address, length = self._current.buffer_info()
            ctypes.memset(address, 0, length * self._current.itemsize)
            self._previous_count, self._count = self._count, 0
        return None

    def __len__(self) -> int:
        """How many values are remembered now."""
        if self.table is not None:
            return len(self.table)
        return self._count + self._previous_count


# --------------------------------------------------------------------------------------------------------------
# dead-letter counting


class DeadLetterCounter:
    """Counts dead letters per reason, for metrics; every known reason starts at zero."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {reason.value: 0 for reason in DeadLetterReason}

    def record(self, reason: DeadLetterReason | str, n: int = 1) -> None:
        """Add ``n`` dead letters with ``reason``."""
        key = DeadLetterReason(reason).value
        with self._lock:
            self._counts[key] += n

    def get(self, reason: DeadLetterReason | str) -> int:
        """Count for one reason."""
        return self._counts[DeadLetterReason(reason).value]

    @property
    def total(self) -> int:
        """Count over all reasons."""
        with self._lock:
            return sum(self._counts.values())

    def snapshot(self) -> dict[str, int]:
        """A copy of the counts by reason code."""
        with self._lock:
            return dict(self._counts)

    def nonzero(self) -> Mapping[str, int]:
        """Only the reasons seen at least once."""
        return {k: v for k, v in self.snapshot().items() if v}


__all__ = [
    "DEFAULT_MAX_BYTES",
    "Check",
    "DeadLetterCounter",
    "DecodeError",
    "DuplicateIdCheck",
    "decode",
    "decode_record",
    "describe_validation_error",
    "encode",
    "make_dead_letter",
    "unknown_model_check",
]
