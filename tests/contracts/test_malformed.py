"""The malformed catalogue: each bad message yields its expected reason and an actionable error."""

from __future__ import annotations

import pytest

from banditroute.codec import DecodeError, decode, decode_record
from banditroute.events import DeadLetter
from tests.contracts.catalogue import event_type as type_of
from tests.contracts.catalogue import interleaved, make_checks, malformed_cases, valid_events

HOOK_CASES = {"unknown-model", "duplicate-request-id", "duplicate-feedback"}


@pytest.mark.parametrize(
    "case", [c for c in malformed_cases() if c.name not in HOOK_CASES], ids=lambda c: c.name
)
def test_each_malformed_case_gives_its_reason(case) -> None:  # type: ignore[no-untyped-def]
    result = decode(type_of(case.event), case.raw)
    assert isinstance(result, DecodeError)
    assert result.reason == case.reason, result.error
    assert 0 < len(result.error) <= 1024


def test_catalogue_is_broad() -> None:
    cases = malformed_cases()
    assert len(cases) >= 30
    assert len({c.reason for c in cases}) >= 8


def test_interleaved_stream_reconciles_with_hooks() -> None:
    checks = make_checks()
    stream = interleaved()
    got = []
    for offset, case in enumerate(stream):
        result = decode_record(
            type_of(case.event),
            case.raw,
            topic=f"in.{case.event}",
            partition=0,
            offset=offset,
            checks=checks[case.event],
        )
        got.append(result.reason if isinstance(result, DeadLetter) else None)
        if isinstance(result, DeadLetter):
            assert result.source_offset == offset
            assert result.event_type == case.event
            assert result.original_truncated == (len(case.raw) > 65536)
            assert result.original_bytes == case.raw[:65536]
    assert got == [c.reason for c in stream]
    assert sum(r is None for r in got) == len(valid_events())
