"""The decide loop's pydantic-free request path accepts only what the pydantic contract accepts, with the same
fields (no broker: pure decoding)."""

from __future__ import annotations

import itertools
import random
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from banditroute.client import build_request
from banditroute.codec import decode, encode
from banditroute.events import RoutingRequest
from banditroute.kafka.fast_request import (
    _PARTS,
    UTC_TIME,
    fast_request,
    parsed_request,
    shaped_request,
    utc_time,
)

IDS: list[Any] = [
    "r1",
    "A",
    "a" * 128,
    "a" * 129,
    "",
    ".lead",
    "-lead",
    "with space",
    "tab\\t",
    "ok._:/@+=-x",
    "trail\n",
    "naïve",
    "x" * 64 + "é",
    5,
    None,
    True,
]
TOPICS: list[Any] = [None, "replies", "r.e_p-l", ".", "..", "a" * 249, "a" * 250, "bad topic", "x/y", 3, ""]
TIMES: list[Any] = [
    "2026-11-30T12:00:00Z",
    "2026-11-30T12:00:00+00:00",
    "2026-11-30T12:00:00.123Z",
    "2026-11-30T12:00:00.123456+00:00",
    "2026-11-30T12:00:00.1234567Z",
    "2026-11-30T12:00:00.12Z",
    "2026-11-30T12:00:00+01:00",
    "2026-11-30T12:00:00-00:00",
    "2026-11-30T12:00:00",
    "2026-11-30",
    "2026-11-30 12:00:00Z",
    "2026-11-30t12:00:00z",
    "2026-02-30T12:00:00Z",
    "2026-11-30T24:00:00Z",
    "2026-11-30T23:59:60Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "１２３４-11-30T12:00:00Z",
    "٢٠٢٦-11-30T12:00:00Z",
    "2026-11-30T12:00:00,123Z",
    "2026-W48-1T12:00:00Z",
    1764504000,
    None,
]
REQUEST: dict[str, Any] = {"schema_version": 1, "request_id": "r1", "task_type": "chat"}
VERSIONS: list[Any] = [1, 2, 0, True, 1.0, "1", None]
SDK_DEFAULTS: dict[str, Any] = {
    "candidates": None,
    "exclude": None,
    "objective": None,
    "metadata": {},
    "constraints": {"capabilities": [], "max_cost_usd": None, "max_latency_ms": None},
}
SDK_VARIANTS: list[tuple[str, Any]] = [
    ("candidates", []),
    ("candidates", ["m1"]),
    ("exclude", []),
    ("metadata", {"a": 1}),
    ("metadata", []),
    ("objective", {}),
    ("constraints", {}),
    ("constraints", {"capabilities": [], "max_cost_usd": 0, "max_latency_ms": None}),
    ("constraints", {"capabilities": ["x"], "max_cost_usd": None, "max_latency_ms": None}),
    ("constraints", {"capabilities": [], "max_cost_usd": None, "max_latency_ms": None, "extra": 1}),
    ("constraints", {"capabilities": [], "max_cost_usd": False, "max_latency_ms": None}),
]


def _payloads(rng: random.Random, n: int) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(n):
        doc: dict[str, Any] = {
            "schema_version": rng.choice(VERSIONS) if rng.random() < 0.2 else 1,
            "request_id": rng.choice(IDS) if rng.random() < 0.5 else f"req-{rng.randrange(10**6)}",
            "task_type": rng.choice(IDS) if rng.random() < 0.3 else "chat",
            "created_at": rng.choice(TIMES),
        }
        if rng.random() < 0.3:
            doc["tenant"] = rng.choice(IDS)
        if rng.random() < 0.3:
            doc["reply_to"] = rng.choice(TOPICS)
        if rng.random() < 0.3:  # the SDK's encoding: every field, mostly at its default
            doc.update(SDK_DEFAULTS)
            if rng.random() < 0.3:
                key, value = rng.choice(SDK_VARIANTS)
                doc[key] = value
        if rng.random() < 0.1:
            doc[rng.choice(["candidates", "metadata", "constraints", "extra", "objective"])] = rng.choice(
                [None, [], {}, ["m"], {"k": 1}]
            )
        if rng.random() < 0.05:
            doc.pop(rng.choice(sorted(doc)))
        # keys sorted as the SDK writes them (codec.encode), or in the order given (the shortest text)
        out.append(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS if rng.random() < 0.5 else 0))
    return out


def reads(request: Any) -> tuple[Any, ...]:
    """The fields the decide logic and the decide loop read of a request."""
    limits = request.constraints
    return (
        request.request_id,
        request.task_type,
        request.tenant,
        request.reply_to,
        request.candidates,
        request.exclude,
        request.objective,
        request.metadata,
        (limits.max_cost_usd, limits.max_latency_ms, tuple(limits.capabilities)),
    )


def test_whatever_the_fast_path_accepts_pydantic_accepts_with_the_same_fields() -> None:
    rng = random.Random(16)
    accepted = 0
    for raw in _payloads(rng, 3000):
        fast = fast_request(raw, 65536)
        if fast is None:
            continue
        slow = decode(RoutingRequest, raw)
        assert isinstance(slow, RoutingRequest), (raw, slow)
        assert reads(fast) == reads(slow), raw  # what deciding reads of it
        full = fast.full()
        assert full == slow and full.model_dump() == slow.model_dump(), raw
        assert full.model_fields_set == slow.model_fields_set and encode(full) == encode(slow)
        accepted += 1
    assert accepted > 120  # the common shape is really taken by the fast path


def test_the_requests_clients_send_take_the_fast_path() -> None:
    for tenant, reply_to in itertools.product([None, "acme"], [None, "acme.replies"]):
        raw = encode(build_request("summarise", tenant=tenant, reply_to=reply_to))
        fast = fast_request(raw, 65536)
        slow = decode(RoutingRequest, raw)
        assert fast is not None and fast.full() == slow and reads(fast) == reads(slow)


def test_other_shapes_and_oversized_records_go_the_full_way() -> None:
    raw = encode(build_request("chat", candidates=["m1"]))
    assert fast_request(raw, 65536) is None
    plain = encode(build_request("chat"))
    assert fast_request(plain, len(plain) - 1) is None
    assert fast_request(b"", 65536) is None and fast_request(b"[1]", 65536) is None
    assert fast_request(b'{"schema_version": 1, "request_id": "a",', 65536) is None


# bytes a mutation puts in: JSON punctuation and escapes, whitespace, literals, digits of other scripts, non-ASCII
_MUTATIONS: list[bytes] = [
    *(bytes([b]) for b in range(256)),
    b" ",
    b"\t",
    b"\\",
    b'\\"',
    b"\\u0041",
    b"\\u00e9",
    b"\\/",
    b"\\n",
    b'"',
    b",",
    b":",
    b"{}",
    b"[]",
    b"null",
    b"true",
    b"1.0",
    b"1e0",
    b"-0",
    b"Z",
    b"+00:00",
    b"+01:00",
    b".123456",
    b"24",
    b"60",
    "é".encode(),
    "１".encode(),
    "٢".encode(),
    b'"schema_version":1,',
    b'"request_id":"x",',
    b'"tenant":null,',
    b'"extra":1,',
]


def _mutated(rng: random.Random, raw: bytes) -> bytes:
    """``raw`` with one to three byte-level edits: a replaced, inserted, deleted or copied run."""
    text = bytearray(raw)
    for _ in range(rng.choice([1, 1, 2, 3])):
        op, at = rng.random(), rng.randrange(len(text) + 1)
        if op < 0.35 and at < len(text):
            text[at : at + 1] = rng.choice(_MUTATIONS)
        elif op < 0.6:
            text[at:at] = rng.choice(_MUTATIONS)
        elif op < 0.8 and at < len(text):
            del text[at : at + rng.randrange(1, 4)]
        else:  # a run copied elsewhere: duplicate keys, values, separators
            start = rng.randrange(len(text))
            text[at:at] = text[start : start + rng.randrange(1, 40)]
    return bytes(text)


def test_byte_level_edits_of_request_texts_never_make_the_fast_path_disagree_with_pydantic() -> None:
    """Texts the generators above never write (whitespace, escapes, duplicate keys, other digits, literals in
    place of strings, truncations): whatever the fast path accepts, pydantic accepts with the same fields."""
    rng = random.Random(12)
    texts: list[bytes] = []
    for tenant, reply_to in itertools.product([None, "acme"], [None, "acme.replies"]):
        request = build_request("summarise", tenant=tenant, reply_to=reply_to)
        texts.append(encode(request))  # the SDK's text
        short = {"schema_version": 1, "request_id": request.request_id, "task_type": "summarise"}
        short["created_at"] = rng.choice(["2026-11-30T12:00:00Z", "2026-11-30T12:00:00.123+00:00"])
        short |= {k: v for k, v in (("tenant", tenant), ("reply_to", reply_to)) if v is not None}
        texts.append(orjson.dumps(short))  # the shortest text
    accepted = 0
    for _ in range(20_000):
        raw = _mutated(rng, rng.choice(texts))
        fast = fast_request(raw, 65536)
        if fast is None:
            continue
        slow = decode(RoutingRequest, raw)
        assert isinstance(slow, RoutingRequest), (raw, slow)
        full = fast.full()
        assert reads(fast) == reads(slow) and full == slow, raw
        assert full.model_fields_set == slow.model_fields_set and encode(full) == encode(slow), raw
        accepted += 1
    assert accepted > 1000  # edits that keep the text valid (an id's character, a digit) are still taken


def test_timestamps_read_as_the_utc_datetime_pydantic_makes_of_them() -> None:
    for value in TIMES:
        parsed = utc_time(value)
        if parsed is None:
            continue
        assert parsed.tzinfo is UTC
        assert parsed == datetime.fromisoformat(value).astimezone(UTC)
        slow = decode(RoutingRequest, orjson.dumps({**REQUEST, "created_at": value}))
        assert isinstance(slow, RoutingRequest) and slow.created_at == parsed


def _sdk_payloads(rng: random.Random, n: int) -> list[bytes]:
    """Texts as the SDK writes them (every field, keys sorted), with generated values and some variants."""
    out: list[bytes] = []
    for _ in range(n):
        doc: dict[str, Any] = {
            **SDK_DEFAULTS,
            "schema_version": rng.choice(VERSIONS) if rng.random() < 0.1 else 1,
            "request_id": rng.choice(IDS) if rng.random() < 0.4 else f"{rng.getrandbits(128):032x}",
            "task_type": rng.choice(IDS) if rng.random() < 0.3 else "summarise",
            "tenant": rng.choice(IDS) if rng.random() < 0.4 else None,
            "reply_to": rng.choice(TOPICS) if rng.random() < 0.4 else None,
            "created_at": rng.choice(TIMES),
        }
        if rng.random() < 0.1:
            key, value = rng.choice(SDK_VARIANTS)
            doc[key] = value
        out.append(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
    return out


def test_a_request_text_read_without_parsing_reads_as_the_parsed_one() -> None:
    rng = random.Random(21)
    shaped = 0
    for raw in _payloads(rng, 3000) + _sdk_payloads(rng, 3000):
        fast = shaped_request(raw)
        if fast is None:
            continue
        parsed = parsed_request(raw)
        assert parsed is not None, raw
        assert reads(fast) == reads(parsed) and fast.full() == parsed.full(), raw
        assert fast.full().model_fields_set == parsed.full().model_fields_set, raw
        slow = decode(RoutingRequest, raw)
        assert isinstance(slow, RoutingRequest) and fast.full() == slow, raw
        assert fast.full().model_fields_set == slow.model_fields_set and encode(fast.full()) == encode(slow)
        shaped += 1
    for tenant, reply_to in itertools.product([None, "acme"], [None, "acme.replies"]):
        raw = encode(build_request("summarise", tenant=tenant, reply_to=reply_to))
        assert shaped_request(raw) is not None  # the SDK's text
    assert shaped > 150  # both texts are really taken without parsing


def test_the_texts_time_pattern_reads_the_timestamps_utc_time_reads() -> None:
    """The request texts' timestamp (``\\d`` for ``[0-9]{n}``) matches exactly where :data:`UTC_TIME` does,
    over the listed timestamps and one-byte edits of them."""
    time_text = re.compile(_PARTS[b"<TIME>"])
    rng = random.Random(3)
    values = [t for t in TIMES if isinstance(t, str)]
    for value in list(values):
        for _ in range(40):
            at = rng.randrange(len(value))
            values.append(value[:at] + rng.choice("0123456789:-.TZ+x١") + value[at + 1 :])
    for value in values:
        quoted = b'"' + value.encode() + b'"'
        assert (time_text.fullmatch(quoted) is None) == (UTC_TIME.fullmatch(value) is None), value


def test_a_request_read_either_way_keeps_its_id_bytes_and_shares_its_names() -> None:
    rng = random.Random(5)
    seen: dict[str, str] = {}
    for raw in _payloads(rng, 2000) + _sdk_payloads(rng, 2000):
        for fast in (shaped_request(raw), parsed_request(raw)):
            if fast is None:
                continue
            assert fast.rid == fast.request_id.encode(), raw
        fast = shaped_request(raw)
        if fast is not None:
            for name in (fast.task_type, fast.tenant):
                if name is not None:
                    assert seen.setdefault(name, name) is name, raw  # one string per name
