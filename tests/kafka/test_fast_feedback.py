"""The join's pydantic-free feedback path accepts only what the pydantic contract and the unknown-model check
accept, with the same fields (no broker: pure decoding)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import orjson

from banditroute.codec import decode_record, encode, unknown_model_check
from banditroute.events import Feedback
from banditroute.kafka.fast_feedback import fast_feedback
from banditroute.messages import build_feedback

MODELS = frozenset({"small-fast", "mid-tier"})
IDS: list[Any] = [
    "r1",
    "a" * 128,
    "a" * 129,
    "d:" + "a" * 128,
    "",
    ".x",
    "with space",
    "trail\n",
    5,
    None,
    True,
]
FLOATS: list[Any] = [0.0, 0.5, 1.0, 1, 0, -0.0, -0.1, 1.5, 1e308, "0.5", True, None, 2**53, 1e-320]
TOKENS: list[Any] = [0, 1, 100_000_000, 100_000_001, -1, 1.0, True, "3", None]
TIMES: list[Any] = [
    "2026-11-30T12:00:00.654321Z",
    "2026-11-30T12:00:00Z",
    "2026-11-30T12:00:00+00:00",
    "2026-11-30T12:00:00.123Z",
    "2026-11-30T12:00:00.123456+00:00",
    "2026-11-30T12:00:00.000000Z",
    "2026-11-30T12:00:00.12Z",
    "2026-11-30T12:00:00+01:00",
    "2026-11-30T12:00:00",
    "2026-02-30T12:00:00Z",
    "2026-02-30T12:00:00.123456Z",
    "2026-11-30T12:60:00.123456Z",
    "2026-11-30T24:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    1764504000,
    None,
]


def _common(rng: random.Random) -> dict[str, Any]:
    """A feedback record as the SDK writes it (every field, the unused ones null)."""
    tokens = rng.random() < 0.3
    return {
        "schema_version": 1,
        "request_id": f"req-{rng.randrange(10**6)}",
        "decision_id": None,
        "model": rng.choice(sorted(MODELS)),
        "quality": rng.random(),
        "latency_ms": rng.uniform(0, 5000) if rng.random() < 0.7 else None,
        "cost_usd": None if tokens else rng.uniform(0, 0.01),
        "tokens_in": rng.randrange(5000) if tokens else None,
        "tokens_out": rng.randrange(5000) if tokens else None,
        "error": None,
        "observed_at": rng.choice(TIMES[:7]),
        "idempotency_key": f"k-{rng.randrange(10**6)}",
    }


def _payloads(rng: random.Random, n: int) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(n):
        doc = _common(rng)
        for _ in range(rng.choice([0, 0, 1, 1, 2])):  # mutate a field or two
            key = rng.choice(sorted(doc) + ["extra"])
            if key in ("request_id", "decision_id", "idempotency_key"):
                doc[key] = rng.choice(IDS)
            elif key == "model":
                doc[key] = rng.choice([*IDS, "gpt-unknown", "mid-tier"])
            elif key in ("quality", "latency_ms", "cost_usd"):
                doc[key] = rng.choice(FLOATS)
            elif key in ("tokens_in", "tokens_out"):
                doc[key] = rng.choice(TOKENS)
            elif key == "observed_at":
                doc[key] = rng.choice(TIMES)
            elif key == "schema_version":
                doc[key] = rng.choice([2, 0, True, 1.0, "1", None])
            elif key == "error":
                doc[key] = rng.choice(["timeout", "other", "bogus", None])
            else:
                doc[key] = rng.choice([None, 1, "x"])
        if rng.random() < 0.1:
            doc.pop(rng.choice(sorted(doc)))
        out.append(orjson.dumps(doc))
    return out


def _full(raw: bytes) -> Any:
    return decode_record(
        Feedback,
        raw,
        topic="feedback",
        partition=0,
        offset=0,
        max_bytes=65536,
        checks=(unknown_model_check(lambda: MODELS),),
    )


def test_whatever_the_fast_path_accepts_pydantic_accepts_with_the_same_fields() -> None:
    rng = random.Random(17)
    accepted = rejected_both = 0
    for raw in _payloads(rng, 4000):
        fast = fast_feedback(raw, 65536, MODELS)
        slow = _full(raw)
        if fast is None:
            rejected_both += not isinstance(slow, Feedback)
            continue
        assert isinstance(slow, Feedback), (raw, slow)
        dumped = slow.model_dump(mode="json", exclude_none=True)
        assert list(fast.items()) == list(dumped.items()), raw  # same fields, values and order
        accepted += 1
    assert accepted > 1500  # the common shape is really taken by the fast path
    assert rejected_both > 500  # and the generator really makes bad records (which go the full way)


def test_the_feedback_clients_send_takes_the_fast_path() -> None:
    at = datetime(2026, 12, 1, 6, 0, 0, 123456, tzinfo=UTC)
    for extra in (
        {"cost_usd": 0.002},
        {"tokens_in": 10, "tokens_out": 20},
        {"cost_usd": 0.0, "latency_ms": 12.5},
    ):
        raw = encode(build_feedback(request_id="r-1", model="mid-tier", quality=0.7, observed_at=at, **extra))
        fast = fast_feedback(raw, 65536, MODELS)
        slow = _full(raw)
        assert isinstance(slow, Feedback)
        assert fast == slow.model_dump(mode="json", exclude_none=True)


def test_errors_unknown_models_and_oversized_records_go_the_full_way() -> None:
    failed = encode(build_feedback(request_id="r-1", model="mid-tier", error="timeout"))
    assert fast_feedback(failed, 65536, MODELS) is None and isinstance(_full(failed), Feedback)
    unknown = encode(build_feedback(request_id="r-1", model="gpt-x", quality=0.5, cost_usd=0.1))
    assert fast_feedback(unknown, 65536, MODELS) is None
    assert _full(unknown).reason == "unknown_model"
    plain = encode(build_feedback(request_id="r-1", model="mid-tier", quality=0.5, cost_usd=0.1))
    assert fast_feedback(plain, len(plain) - 1, MODELS) is None
    assert fast_feedback(b"", 65536, MODELS) is None and fast_feedback(b"[1]", 65536, MODELS) is None
    assert fast_feedback(b'{"schema_version": 1,', 65536, MODELS) is None
