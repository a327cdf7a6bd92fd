"""A catalogue of malformed messages, each with the dead-letter reason it must produce, plus valid events.

Shared by the unit test (tests/contracts/test_malformed.py) and the real-broker test
(tests/kafka/test_deadletter.py), which feed the same stream through the decode layer.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from banditroute.codec import Check, DuplicateIdCheck, encode, unknown_model_check
from banditroute.contracts import examples
from banditroute.events import EVENT_TYPES, DeadLetterReason, WireEvent

R = DeadLetterReason
EX: dict[str, dict[str, Any]] = {name: json.loads(encode(ev)) for name, ev in examples().items()}
KNOWN_MODELS = frozenset({"gpt-4o-mini", "claude-3-5-haiku", "llama-3.1-8b"})
INPUT_EVENTS = ("RoutingRequest", "Feedback", "ModelCatalogEvent")


@dataclass(frozen=True)
class Case:
    """One message for ``event`` (a name in EVENT_TYPES); ``reason`` None means it must decode."""

    name: str
    event: str
    raw: bytes
    reason: DeadLetterReason | None


def _doc(event: str, **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(EX[event])
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = doc
        for p in parents:
            target = target[p]
        if value is _DROP:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return doc


_DROP = object()


def _raw(event: str, **changes: Any) -> bytes:
    return orjson.dumps(_doc(event, **changes))


def _literal(event: str, field: str, literal: str) -> bytes:
    """The example with ``field`` (top level or a__b) set to a raw JSON literal such as NaN."""
    marker = "__LITERAL__"
    text = _raw(event, **{field: marker}).decode()
    return text.replace(f'"{marker}"', literal).encode()


def valid_events() -> list[Case]:
    """Distinct valid events for every input type."""
    out: list[Case] = []
    for i in range(8):
        out.append(
            Case(f"request-{i}", "RoutingRequest", _raw("RoutingRequest", request_id=f"req-valid-{i}"), None)
        )
    for i in range(5):
        fb = _raw("Feedback", request_id=f"req-valid-{i}", idempotency_key=f"fb-{i}", quality=i / 5)
        out.append(Case(f"feedback-{i}", "Feedback", fb, None))
    out.append(
        Case(
            "feedback-error",
            "Feedback",
            _raw(
                "Feedback",
                error="timeout",
                quality=None,
                tokens_in=None,
                tokens_out=None,
                idempotency_key="fb-err",
            ),
            None,
        )
    )
    out.append(Case("catalog-added", "ModelCatalogEvent", _raw("ModelCatalogEvent"), None))
    out.append(
        Case(
            "catalog-retired",
            "ModelCatalogEvent",
            _raw("ModelCatalogEvent", action="retired", price_in_per_1k_usd=None, price_out_per_1k_usd=None),
            None,
        )
    )
    return out


def malformed_cases() -> list[Case]:
    """Every kind of bad input with its expected reason (RoutingRequest unless named otherwise)."""
    rq, fb, cat = "RoutingRequest", "Feedback", "ModelCatalogEvent"
    good = _raw(rq, request_id="req-bad")
    cases = [
        Case("empty-bytes", rq, b"", R.EMPTY_PAYLOAD),
        Case("whitespace-only", rq, b"   \n", R.MALFORMED_JSON),
        Case("truncated", rq, good[:-7], R.MALFORMED_JSON),
        Case("unterminated-object", rq, b'{"schema_version":1,', R.MALFORMED_JSON),
        Case("trailing-garbage", rq, good + b"}}", R.MALFORMED_JSON),
        Case("single-quotes", rq, b"{'schema_version': 1}", R.MALFORMED_JSON),
        Case("not-utf8", rq, b"\xff\xfe{}", R.MALFORMED_JSON),
        Case("json-array", rq, b"[1, 2, 3]", R.VALIDATION_ERROR),
        Case("json-string", rq, b'"hello"', R.VALIDATION_ERROR),
        Case("json-null", rq, b"null", R.VALIDATION_ERROR),
        Case("json-number", rq, b"42", R.VALIDATION_ERROR),
        Case("nan-literal", rq, _literal(rq, "constraints__max_cost_usd", "NaN"), R.NON_FINITE_NUMBER),
        Case(
            "infinity-literal",
            rq,
            _literal(rq, "constraints__max_latency_ms", "Infinity"),
            R.NON_FINITE_NUMBER,
        ),
        Case("minus-infinity", rq, _literal(rq, "objective__lam", "-Infinity"), R.NON_FINITE_NUMBER),
        Case(
            "overflowing-number", rq, _literal(rq, "constraints__max_cost_usd", "1e999"), R.NON_FINITE_NUMBER
        ),
        Case(
            "payload-too-large", rq, _raw(rq, request_id="req-big", tenant="x" * 140_000), R.PAYLOAD_TOO_LARGE
        ),
        Case("schema-version-2", rq, _raw(rq, schema_version=2), R.UNSUPPORTED_SCHEMA_VERSION),
        Case("schema-version-999", rq, _raw(rq, schema_version=999), R.UNSUPPORTED_SCHEMA_VERSION),
        Case("schema-version-missing", rq, _raw(rq, schema_version=_DROP), R.VALIDATION_ERROR),
        Case("schema-version-string", rq, _raw(rq, schema_version="1"), R.VALIDATION_ERROR),
        Case("extra-field", rq, _raw(rq, priority="high"), R.VALIDATION_ERROR),
        Case("missing-request-id", rq, _raw(rq, request_id=_DROP), R.VALIDATION_ERROR),
        Case("wrong-type-task", rq, _raw(rq, task_type=123), R.VALIDATION_ERROR),
        Case("naive-timestamp", rq, _raw(rq, created_at="2025-01-15T12:00:00"), R.VALIDATION_ERROR),
        Case("bad-timestamp", rq, _raw(rq, created_at="yesterday"), R.VALIDATION_ERROR),
        Case("negative-max-cost", rq, _raw(rq, constraints__max_cost_usd=-0.5), R.VALIDATION_ERROR),
        Case(
            "too-many-metadata-keys",
            rq,
            _raw(rq, metadata={f"k{i}": i for i in range(33)}),
            R.VALIDATION_ERROR,
        ),
        Case(
            "metadata-too-big",
            rq,
            _raw(rq, metadata={f"k{i}": "v" * 250 for i in range(20)}),
            R.VALIDATION_ERROR,
        ),
        Case("nested-metadata", rq, _raw(rq, metadata={"a": {"b": 1}}), R.VALIDATION_ERROR),
        Case(
            "too-many-candidates", rq, _raw(rq, candidates=[f"m{i}" for i in range(65)]), R.VALIDATION_ERROR
        ),
        Case(
            "duplicate-candidates",
            rq,
            _raw(rq, candidates=["gpt-4o-mini", "gpt-4o-mini"]),
            R.VALIDATION_ERROR,
        ),
        Case("bad-reply-to", rq, _raw(rq, reply_to="replies for me!"), R.VALIDATION_ERROR),
        Case("dotdot-reply-to", rq, _raw(rq, reply_to=".."), R.VALIDATION_ERROR),
        Case("id-too-long", rq, _raw(rq, request_id="r" * 129), R.VALIDATION_ERROR),
        Case("id-control-char", rq, _raw(rq, request_id="req\n1"), R.VALIDATION_ERROR),
        Case("bad-objective-kind", rq, _raw(rq, objective__kind="speed"), R.VALIDATION_ERROR),
        Case("quality-above-one", fb, _raw(fb, quality=1.5), R.VALIDATION_ERROR),
        Case("quality-nan", fb, _literal(fb, "quality", "NaN"), R.NON_FINITE_NUMBER),
        Case("negative-cost", fb, _raw(fb, cost_usd=-0.01), R.VALIDATION_ERROR),
        Case("no-ids", fb, _raw(fb, request_id=None, decision_id=None), R.VALIDATION_ERROR),
        Case("unknown-error-kind", fb, _raw(fb, error="exploded"), R.VALIDATION_ERROR),
        Case("tokens-in-only", fb, _raw(fb, tokens_out=None), R.VALIDATION_ERROR),
        Case("bool-latency", fb, _raw(fb, latency_ms=True), R.VALIDATION_ERROR),
        Case("string-latency", fb, _raw(fb, latency_ms="840"), R.VALIDATION_ERROR),
        Case("missing-idempotency-key", fb, _raw(fb, idempotency_key=_DROP), R.VALIDATION_ERROR),
        Case("negative-price", cat, _raw(cat, price_in_per_1k_usd=-1.0), R.VALIDATION_ERROR),
        Case("zero-prior", cat, _raw(cat, quality_prior=[0.0, 1.0]), R.VALIDATION_ERROR),
        Case("unknown-action", cat, _raw(cat, action="deleted"), R.VALIDATION_ERROR),
        Case("added-without-price", cat, _raw(cat, price_out_per_1k_usd=None), R.VALIDATION_ERROR),
        # Semantic checks (hooks the worker supplies); need the valid events before them in the stream.
        Case("unknown-model", fb, _raw(fb, model="gpt-99", idempotency_key="fb-unknown"), R.UNKNOWN_MODEL),
        Case("duplicate-request-id", rq, _raw(rq, request_id="req-valid-0"), R.DUPLICATE_ID),
        Case(
            "duplicate-feedback",
            fb,
            _raw(fb, request_id="req-valid-0", idempotency_key="fb-0"),
            R.DUPLICATE_FEEDBACK,
        ),
    ]
    assert len({c.name for c in cases}) == len(cases)
    return cases


def interleaved() -> list[Case]:
    """Valid and malformed events mixed: valid[0], bad[0], valid[1], bad[1], ... (hook cases last)."""
    valid, bad = valid_events(), malformed_cases()
    out: list[Case] = []
    for i in range(max(len(valid), len(bad))):
        out += valid[i : i + 1] + bad[i : i + 1]
    # the duplicate checks need their originals first: move hook cases to the end
    hooks = {"unknown-model", "duplicate-request-id", "duplicate-feedback"}
    return [c for c in out if c.name not in hooks] + [c for c in out if c.name in hooks]


def make_checks() -> dict[str, list[Check]]:
    """The semantic checks per input event, as a worker would wire them (fresh state each call)."""
    known: Callable[[], frozenset[str]] = lambda: KNOWN_MODELS  # noqa: E731
    return {
        "RoutingRequest": [DuplicateIdCheck("request_id")],
        "Feedback": [
            unknown_model_check(known),
            DuplicateIdCheck("idempotency_key", reason=R.DUPLICATE_FEEDBACK),
        ],
        "ModelCatalogEvent": [],
    }


def event_type(name: str) -> type[WireEvent]:
    return EVENT_TYPES[name]
