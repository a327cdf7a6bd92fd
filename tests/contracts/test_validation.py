"""Each bound of the contracts rejects what it should, and accepts its edge values."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from banditroute import native
from banditroute.codec import (
    DeadLetterCounter,
    DecodeError,
    DuplicateIdCheck,
    decode,
    encode,
    make_dead_letter,
    unknown_model_check,
)
from banditroute.contracts import examples
from banditroute.events import (
    DeadLetterReason,
    Feedback,
    ModelCatalogEvent,
    RoutingDecision,
    RoutingRequest,
)

EX = examples()
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _replace(event: Any, **changes: Any) -> Any:
    data = event.model_dump()
    data.update(changes)
    return type(event).model_validate(data)


@pytest.mark.parametrize(
    ("event", "changes"),
    [
        ("RoutingRequest", {"request_id": ""}),
        ("RoutingRequest", {"request_id": "a" * 129}),
        ("RoutingRequest", {"task_type": "has space"}),
        ("RoutingRequest", {"candidates": tuple(f"m{i}" for i in range(65))}),
        ("RoutingRequest", {"exclude": ("a", "a")}),
        ("RoutingRequest", {"metadata": {f"k{i}": 1 for i in range(33)}}),
        ("RoutingRequest", {"metadata": {"k": "v" * 257}}),
        ("RoutingRequest", {"metadata": {"k" * 65: 1}}),
        ("RoutingRequest", {"metadata": {"k": float("nan")}}),
        ("RoutingRequest", {"metadata": {f"k{i}": "v" * 250 for i in range(17)}}),
        ("RoutingRequest", {"created_at": datetime(2025, 1, 1)}),  # noqa: DTZ001 naive on purpose
        ("RoutingRequest", {"reply_to": "a" * 250}),
        ("RoutingRequest", {"reply_to": "."}),
        ("RoutingRequest", {"constraints": {"max_cost_usd": float("inf")}}),
        ("RoutingRequest", {"constraints": {"max_latency_ms": 0.0}}),
        ("RoutingRequest", {"objective": {"kind": "utility", "lam": -1.0}}),
        ("RoutingDecision", {"propensity": 0.0}),
        ("RoutingDecision", {"propensity": 1.0000001}),
        ("RoutingDecision", {"model": None}),
        ("RoutingDecision", {"decision_ms": -1.0}),
        ("RoutingDecision", {"state_version": -1}),
        ("RoutingDecision", {"fallbacks": tuple(f"m{i}" for i in range(65))}),
        ("Feedback", {"quality": -0.01}),
        ("Feedback", {"quality": 1.01}),
        ("Feedback", {"quality": None}),
        ("Feedback", {"latency_ms": float("nan")}),
        ("Feedback", {"cost_usd": -1e-9}),
        ("Feedback", {"tokens_in": -1}),
        ("Feedback", {"tokens_in": None}),
        ("Feedback", {"tokens_in": None, "tokens_out": None, "cost_usd": None}),
        ("Feedback", {"idempotency_key": "k" * 129}),
        ("ModelCatalogEvent", {"price_out_per_1k_usd": -0.1}),
        ("ModelCatalogEvent", {"context_window": 0}),
        ("ModelCatalogEvent", {"quality_prior": (1.0, float("inf"))}),
        ("ModelCatalogEvent", {"lifecycle": "beta"}),
        ("ModelCatalogEvent", {"capabilities": ("x", "x")}),
        ("DeadLetter", {"original": "not base64!"}),
        ("DeadLetter", {"error": ""}),
        ("DeadLetter", {"reason": "bad_vibes"}),
        ("DeadLetter", {"source_offset": -1}),
    ],
)
def test_bound_rejects(event: str, changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _replace(EX[event], **changes)


@pytest.mark.parametrize(
    ("event", "changes"),
    [
        ("RoutingRequest", {"request_id": "a" * 128, "candidates": tuple(f"m{i}" for i in range(64))}),
        ("RoutingRequest", {"metadata": {f"k{i}": i for i in range(32)}}),
        ("RoutingRequest", {"reply_to": "a" * 249}),
        ("RoutingDecision", {"propensity": 1.0}),
        ("RoutingDecision", {"model": None, "reasons": {"no_eligible": "all models over budget"}}),
        ("Feedback", {"quality": 0.0, "cost_usd": 0.0}),
        ("Feedback", {"quality": None, "error": "rate_limited"}),
        ("Feedback", {"request_id": None}),
        (
            "ModelCatalogEvent",
            {"action": "retired", "price_in_per_1k_usd": None, "price_out_per_1k_usd": None},
        ),
    ],
)
def test_edge_values_accepted(event: str, changes: dict[str, Any]) -> None:
    value = _replace(EX[event], **changes)
    assert decode(type(value), encode(value)) == value


def test_timestamps_normalise_to_utc_and_serialise_with_z() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    req = _replace(EX["RoutingRequest"], created_at=datetime(2025, 1, 1, 5, 30, tzinfo=ist))
    assert req.created_at.utcoffset() == timedelta(0)
    assert b'"created_at":"2025-01-01T00:00:00Z"' in encode(req)


def test_models_are_frozen() -> None:
    with pytest.raises(ValidationError):
        EX["RoutingRequest"].request_id = "other"  # type: ignore[misc]


def test_wire_requires_schema_version_even_though_python_defaults_it() -> None:
    raw = encode(EX["Feedback"]).replace(b'"schema_version":1,', b"")
    assert b"schema_version" not in raw
    result = decode(Feedback, raw)
    assert isinstance(result, DecodeError)
    assert result.reason == DeadLetterReason.VALIDATION_ERROR
    assert "schema_version" in result.error


def test_size_check_happens_before_parsing() -> None:
    result = decode(RoutingRequest, b"{" * 5000, max_bytes=100)
    assert isinstance(result, DecodeError) and result.reason == DeadLetterReason.PAYLOAD_TOO_LARGE
    result = decode(RoutingRequest, b"[" * 5000)
    assert isinstance(result, DecodeError) and result.reason == DeadLetterReason.MALFORMED_JSON


def test_errors_name_field_and_allowed_values() -> None:
    raw = encode(EX["Feedback"]).replace(b'"quality":0.9', b'"quality":1.5')
    result = decode(Feedback, raw)
    assert isinstance(result, DecodeError)
    assert "quality" in result.error and "1" in result.error and "1.5" in result.error


def test_decode_never_raises_on_junk() -> None:
    junk = [
        b"\x00",
        b"\x00" * 10,
        b"{}" * 3,
        b'{"schema_version":true}',
        b'{"schema_version":1.0}',
        b"\xed\xa0\x80",
    ]
    for raw in junk:
        assert isinstance(decode(ModelCatalogEvent, raw), DecodeError)
    assert isinstance(decode(RoutingDecision, None), DecodeError)


def test_make_dead_letter_truncates_original() -> None:
    raw = b"x" * 70_000
    dl = make_dead_letter(raw, "in", 0, 7, "payload_too_large", "too big", NOW)
    assert dl.original_size == 70_000 and dl.original_truncated and len(dl.original_bytes) == 65536
    assert decode(type(dl), encode(dl)) == dl


def test_counter_counts_per_reason() -> None:
    counter = DeadLetterCounter()
    assert set(counter.snapshot()) == {r.value for r in DeadLetterReason}
    counter.record(DeadLetterReason.MALFORMED_JSON)
    counter.record("malformed_json", 2)
    counter.record("unknown_model")
    assert counter.get("malformed_json") == 3 and counter.total == 4
    assert counter.nonzero() == {"malformed_json": 3, "unknown_model": 1}
    with pytest.raises(ValueError):
        counter.record("no_such_reason")


def test_hooks() -> None:
    check = unknown_model_check(lambda: {"a"})
    req = _replace(EX["RoutingRequest"], candidates=("a", "b"), exclude=None)
    problem = check(req)
    assert problem is not None and problem.reason == DeadLetterReason.UNKNOWN_MODEL and "'b'" in problem.error
    # feedback has a model and no candidates field: the model alone is checked
    assert check(_replace(EX["Feedback"], model="a")) is None
    problem = check(_replace(EX["Feedback"], model="zz"))
    assert (
        problem is not None and problem.reason == DeadLetterReason.UNKNOWN_MODEL and "'zz'" in problem.error
    )
    dup = DuplicateIdCheck(capacity=4)
    ids = ["r1", "r2", "r1", "r3", "r4", "r1"]
    results = [dup(_replace(EX["RoutingRequest"], request_id=i)) for i in ids]
    # r1 is seen again at index 2; by index 5 it has been forgotten (two generations of 2)
    assert [r is not None for r in results] == [False, False, True, False, False, False]


def test_duplicate_check_of_a_value_is_the_check_of_its_event() -> None:
    rng = random.Random(16)
    by_event, by_value = DuplicateIdCheck(capacity=64), DuplicateIdCheck(capacity=64)
    for _ in range(5000):
        rid = f"r{rng.randrange(200)}"  # repeats within and beyond the window, through generation swaps
        problem = by_event(_replace(EX["RoutingRequest"], request_id=rid))
        same = by_value.check(rid)
        assert (problem is None) == (same is None)
        if problem is not None and same is not None:
            assert (problem.reason, problem.error) == (same.reason, same.error)
    assert len(by_event) == len(by_value)


@pytest.mark.parametrize("extension", ["1", "0"], ids=["c", "python"])
def test_duplicate_check_window_and_memory_bound(extension: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.DISABLE_ENV, extension)  # the C tables (when built) and the Python ones
    dup = DuplicateIdCheck(capacity=1000)
    ids = [f"req-{i}" for i in range(10_000)]
    for i, rid in enumerate(ids):
        assert dup(_replace(EX["RoutingRequest"], request_id=rid)) is None
        assert len(dup) <= 1000
        if i >= 500:  # anything within the last capacity // 2 is caught
            back = ids[i - 499]
            problem = dup(_replace(EX["RoutingRequest"], request_id=back))
            assert problem is not None and problem.reason == DeadLetterReason.DUPLICATE_ID
    assert dup(_replace(EX["RoutingRequest"], request_id=ids[0])) is None  # long gone: not a duplicate
    with pytest.raises(ValueError):
        DuplicateIdCheck(capacity=1)


def test_duplicate_check_in_c_answers_as_the_python_one(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("banditroute._native", reason="the C extension was not built (no compiler)")
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    python = DuplicateIdCheck(capacity=64)
    monkeypatch.setenv(native.DISABLE_ENV, "1")
    c = DuplicateIdCheck(capacity=64)
    assert python.table is None and c.table is not None
    rng = random.Random(31)
    caught = 0
    for _ in range(20_000):
        rid = f"r{rng.randrange(300)}"  # repeats within and beyond the window, through many generation swaps
        a, b = python.check(rid), c.check(rid)
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert (a.reason, a.error) == (b.reason, b.error)
            caught += 1
        assert len(python) == len(c)
    assert 1_000 < caught < 19_000  # both answers occur
