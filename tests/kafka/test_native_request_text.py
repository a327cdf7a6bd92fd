"""The request texts matched in C (``_native.short_groups`` / ``sdk_groups``) give what ``fast_request``'s
regular expressions give, group for group, on generated texts and on byte-edited ones (no broker)."""

from __future__ import annotations

import random
import re

import pytest

from banditroute.kafka import fast_request

_native = pytest.importorskip("banditroute._native", reason="the C extension was not built (no compiler)")

ID_BYTES = b"aZ09._:/@+=-" + b'"\\ ,}{~#' + bytes([0xC3, 0xA9, 0x00])
REPLY_BYTES = b"aZ09._-" + b":/@ "
EDIT_BYTES = b'",:{}[]0123456789aZ._-+=/@ \\TZnul' + bytes([0x80, 0xFF, 0x00])


def identifier(rng: random.Random) -> bytes:
    if rng.random() < 0.8:  # mostly valid, so that whole texts match often
        length = rng.choice([1, 2, 10, 127, 128, rng.randrange(1, 30)])
    else:
        length = rng.choice([0, 1, 129, 130, rng.randrange(1, 140)])
    if rng.random() < 0.9:  # mostly valid characters, so that the lengths are what is tested
        first = bytes([rng.choice(b"aZ09")])
        return (first + bytes(rng.choice(b"aZ09._:/@+=-") for _ in range(length - 1)))[:length]
    return bytes(rng.choice(ID_BYTES) for _ in range(length))


def reply(rng: random.Random) -> bytes:
    length = rng.choice([1, 249, rng.randrange(1, 40)]) if rng.random() < 0.8 else rng.choice([0, 250, 260])
    pool = b"aZ09._-" if rng.random() < 0.9 else REPLY_BYTES
    return bytes(rng.choice(pool) for _ in range(length))


def timestamp(rng: random.Random) -> bytes:
    if rng.random() < 0.8:  # the forms the expression takes (9999-99-99 too: the shape is what it checks)
        date = rng.choice([b"2026-11-30T12:34:56", b"9999-99-99T99:99:99"])
        return date + rng.choice([b"", b".123", b".123456"]) + rng.choice([b"Z", b"+00:00"])
    date = rng.choice([b"2026-11-30T12:34:56", b"2026-1-30T12:34:56", b"2026-11-30 12:34:56"])
    fraction = rng.choice([b"", b".12", b".1234", b".12345", b".1234567"])
    zone = rng.choice([b"Z", b"+01:00", b"z", b"", b"+00:0"])
    return date + fraction + zone


def short_text(rng: random.Random) -> bytes:
    text = (
        fast_request._SHORT_HEAD
        + identifier(rng)
        + b'","task_type":"'
        + identifier(rng)
        + b'","created_at":"'
        + timestamp(rng)
        + b'"'
    )
    if rng.random() < 0.5:
        text += b',"tenant":"' + identifier(rng) + b'"'
    if rng.random() < 0.5:
        text += b',"reply_to":"' + reply(rng) + b'"'
    return text + b"}"


def sdk_text(rng: random.Random) -> bytes:
    def maybe(part: bytes) -> bytes:
        return b"null" if rng.random() < 0.5 else b'"' + part + b'"'

    return (
        fast_request._SDK_HEAD
        + b'"'
        + timestamp(rng)
        + b'","exclude":null,"metadata":{},"objective":null,"reply_to":'
        + maybe(reply(rng))
        + b',"request_id":"'
        + identifier(rng)
        + b'","schema_version":1,"task_type":"'
        + identifier(rng)
        + b'","tenant":'
        + maybe(identifier(rng))
        + b"}"
    )


def edited(rng: random.Random, text: bytes) -> bytes:
    out = bytearray(text)
    for _ in range(rng.choice([0, 0, 0, 1, 2, 3])):
        at = rng.randrange(len(out) + 1)
        kind = rng.randrange(3)
        if kind == 0:
            out.insert(at, rng.choice(EDIT_BYTES))
        elif kind == 1 and at < len(out):
            del out[at]
        elif at < len(out):
            out[at] = rng.choice(EDIT_BYTES)
    if rng.random() < 0.05:
        out = out[: rng.randrange(len(out) + 1)]  # cut short
    return bytes(out)


def expected(pattern: re.Pattern[bytes], raw: bytes, at: int) -> tuple[bytes | None, ...] | None:
    match = pattern.fullmatch(raw, at)
    return None if match is None else match.groups()


@pytest.mark.parametrize("seed", range(4))
def test_the_same_groups_as_the_expressions(seed: int) -> None:
    rng = random.Random(seed)
    matched = {"short": 0, "sdk": 0}
    for i in range(15_000):
        raw = edited(rng, short_text(rng) if i % 2 else sdk_text(rng))
        short_at = fast_request._SHORT_AT if rng.random() < 0.97 else rng.randrange(len(raw) + 3)
        sdk_at = fast_request._SDK_AT if rng.random() < 0.97 else rng.randrange(len(raw) + 3)
        got = _native.short_groups(raw, short_at)
        assert got == expected(fast_request._SHORT_TEXT, raw, short_at), raw
        matched["short"] += got is not None
        got = _native.sdk_groups(raw, sdk_at)
        assert got == expected(fast_request._SDK_TEXT, raw, sdk_at), raw
        matched["sdk"] += got is not None
    # both answers occur often, so the agreement says something
    assert all(300 < n < 6_500 for n in matched.values()), matched


def test_any_bytes_like_text_and_bad_arguments() -> None:
    raw = fast_request._SHORT_HEAD + b'r1","task_type":"t","created_at":"2026-11-30T00:00:00Z"}'
    want = (b"r1", b"t", b"2026-11-30T00:00:00Z", None, None)
    assert _native.short_groups(raw, fast_request._SHORT_AT) == want
    assert _native.short_groups(bytearray(raw), fast_request._SHORT_AT) == want
    assert _native.short_groups(memoryview(raw), fast_request._SHORT_AT) == want
    with pytest.raises(TypeError):
        _native.short_groups("text", 0)
    with pytest.raises(TypeError):
        _native.sdk_groups(raw)


def test_shaped_request_reads_the_same_request_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = (
        fast_request._SHORT_HEAD + b'r1","task_type":"t","created_at":"2026-11-30T00:00:00Z","tenant":"acme"}'
    )
    by_c = fast_request.shaped_request(raw)
    monkeypatch.setattr(fast_request, "_short_groups", fast_request._regex_groups(fast_request._SHORT_TEXT))
    by_expression = fast_request.shaped_request(raw)
    assert by_c is not None and by_expression is not None
    assert by_c.full() == by_expression.full()
    assert (by_c.rid, by_c.tenant) == (by_expression.rid, by_expression.tenant) == (b"r1", "acme")
