"""Bad events for every input topic, drawn in bulk from hypothesis strategies, and the oracle of their reason.

Each bad event starts from a valid document of its topic and is broken in one way (raw bytes, a non-object,
a missing/retyped/extra field, another schema version, truncation, invalid UTF-8, a non-finite number, a size
bound exceeded, an unknown model). The oracle runs the worker's own decode layer and checks on it; events the
oracle finds valid are dropped, so every event returned must be dead-lettered with the reason given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from banditroute.codec import DecodeError, decode, unknown_model_check
from banditroute.events import Feedback, ModelCatalogEvent, RoutingRequest, WireEvent

REQUESTS, FEEDBACK, CATALOG = "requests", "feedback", "catalog"
EVENT_OF: dict[str, type[WireEvent]] = {
    REQUESTS: RoutingRequest,
    FEEDBACK: Feedback,
    CATALOG: ModelCatalogEvent,
}
NOW = datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class BadEvent:
    topic: str  # logical name: requests, feedback or catalog
    key: bytes
    raw: bytes
    mutation: str


ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,30}", fullmatch=True)
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def base_doc(topic: str, ident: str, models: tuple[str, ...], model_index: int) -> dict[str, Any]:
    """A valid document of ``topic`` (before it is broken)."""
    model = models[model_index % len(models)]
    if topic == REQUESTS:
        return {
            "schema_version": 1,
            "request_id": f"bad-{ident}",
            "task_type": "chat",
            "candidates": list(models),
            "metadata": {"team": "fuzz"},
            "constraints": {"max_cost_usd": 1.0},
            "created_at": NOW,
        }
    if topic == FEEDBACK:
        return {
            "schema_version": 1,
            "request_id": f"bad-{ident}",
            "model": model,
            "quality": 0.5,
            "cost_usd": 0.001,
            "latency_ms": 120.0,
            "observed_at": NOW,
            "idempotency_key": f"k-{ident}",
        }
    return {
        "schema_version": 1,
        "action": "updated",
        "model": model,
        "price_in_per_1k_usd": 0.0,
        "price_out_per_1k_usd": 0.0,
        "latency_ms": 500.0,
        "updated_at": NOW,
    }


def _dumps(value: Any) -> bytes:
    """JSON bytes; the stdlib encoder, so integers beyond 64 bits can be sent too."""
    return json.dumps(value, separators=(",", ":")).encode()


NUMERIC = {REQUESTS: ("constraints", "max_cost_usd"), FEEDBACK: ("quality",), CATALOG: ("latency_ms",)}


def _with_literal(doc: dict[str, Any], path: tuple[str, ...], literal: str) -> bytes:
    marker = "__FUZZ_LITERAL__"
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = marker
    return _dumps(doc).replace(f'"{marker}"'.encode(), literal.encode())


MUTATIONS = (
    "bytes",
    "non_object",
    "drop",
    "retype",
    "extra",
    "version",
    "truncate",
    "bad_utf8",
    "non_finite",
    "limits",
    "unknown_model",
    "retype",
    "drop",
    "truncate",
    "oversize_rare",
)


@st.composite
def bad_events(draw: st.DrawFn, topic: str, models: tuple[str, ...], max_bytes: int) -> BadEvent:
    ident = draw(ids)
    doc = base_doc(topic, ident, models, draw(st.integers(0, 10)))
    kind = draw(st.sampled_from(MUTATIONS))
    raw: bytes
    if kind == "bytes":
        raw = draw(st.binary(max_size=48))
    elif kind == "non_object":
        raw = _dumps(draw(json_values.filter(lambda v: not isinstance(v, dict))))
    elif kind == "drop":
        doc.pop(draw(st.sampled_from(sorted(doc))))
        raw = _dumps(doc)
    elif kind == "retype":
        doc[draw(st.sampled_from(sorted(doc)))] = draw(json_values)
        raw = _dumps(doc)
    elif kind == "extra":
        doc[
            draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in EVENT_OF[topic].model_fields))
        ] = draw(json_values)
        raw = _dumps(doc)
    elif kind == "version":
        doc["schema_version"] = draw(st.integers(-5, 1000).filter(lambda v: v != 1) | json_values)
        raw = _dumps(doc)
    elif kind == "truncate":
        full = _dumps(doc)
        raw = full[: draw(st.integers(1, len(full) - 1))]
    elif kind == "bad_utf8":
        full = _dumps(doc)
        at = draw(st.integers(0, len(full)))
        raw = full[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"])) + full[at:]
    elif kind == "non_finite":
        literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400"]))
        raw = _with_literal(doc, NUMERIC[topic], literal)
    elif kind == "limits":
        field_name, value = draw(
            st.sampled_from(
                [
                    ("metadata", {f"k{i}": i for i in range(33)}),
                    ("metadata", {f"k{i}": "v" * 250 for i in range(20)}),
                    ("metadata", {"a": "v" * 257}),
                    ("candidates", [f"m{i}" for i in range(65)]),
                    ("request_id", "r" * 129),
                    ("idempotency_key", "k" * 129),
                    ("model", "m" * 129),
                    ("task_type", "t" * 129),
                    ("capabilities", [f"c{i}" for i in range(65)]),
                ]
            )
        )
        doc[field_name] = value
        raw = _dumps(doc)
    elif kind == "unknown_model":
        name = draw(ids.filter(lambda n: n not in models))
        if topic == REQUESTS:
            doc["candidates"] = [*models[:1], name]
        else:
            doc["model"] = name
        raw = _dumps(doc)
    elif kind == "oversize_rare" and draw(st.integers(0, 3)) > 0:  # keep big payloads to a few percent
        doc.pop("schema_version")
        raw = _dumps(doc)
    else:  # oversize: the payload bound
        doc["padding"] = "x" * draw(st.integers(max_bytes, max_bytes + 4096))
        raw = _dumps(doc)
    key = ident.encode() if topic != CATALOG or draw(st.booleans()) else b"catalog-key"
    return BadEvent(topic, key, raw, kind)


def expected_reason(topic: str, raw: bytes, models: tuple[str, ...], max_bytes: int) -> str | None:
    """The dead-letter reason the worker must give ``raw`` on ``topic`` (None: it is a valid event)."""
    result = decode(EVENT_OF[topic], raw, max_bytes=max_bytes)
    if isinstance(result, DecodeError):
        return result.reason.value
    if topic != CATALOG:
        problem = unknown_model_check(lambda: frozenset(models))(result)
        if problem is not None:
            return problem.reason.value
    return None


def draw_many(strategy: st.SearchStrategy[BadEvent], n: int, first_seed: int = 0) -> list[BadEvent]:
    """At least ``n`` events from ``strategy``, drawn in batches by seeded hypothesis runs (reproducible)."""
    out: list[BadEvent] = []
    run = first_seed
    while len(out) < n:

        @settings(
            max_examples=max(10, (n - len(out)) // 20 + 10),
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @seed(run)
        @given(st.lists(strategy, min_size=20, max_size=20))
        def collect(batch: list[BadEvent]) -> None:
            out.extend(batch)

        collect()
        run += 1
    return out[:n]


def bad_stream(
    topic: str,
    n: int,
    models: tuple[str, ...],
    max_bytes: int,
    *,
    first_seed: int = 0,
    accept: Callable[[BadEvent], bool] = lambda _e: True,
) -> list[tuple[BadEvent, str]]:
    """``n`` bad events of ``topic`` with their expected reasons (events that would decode are dropped)."""
    out: list[tuple[BadEvent, str]] = []
    run = first_seed
    while len(out) < n:
        for event in draw_many(bad_events(topic, models, max_bytes), n - len(out), first_seed=run):
            reason = expected_reason(topic, event.raw, models, max_bytes)
            if reason is not None and accept(event):
                out.append((event, reason))
        run += 1000
    return out[:n]
