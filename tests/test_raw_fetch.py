"""kafka/raw_fetch.py returns the records aiokafka's own fetch path returns (offset, key, value, in order) and
leaves the same positions after every call, on generated fetch responses (fixed seed): several record batches,
a batch starting before the fetch position, control batches, empty values and keys, a corrupt batch, and the
record limits the decide loop asks for."""

from __future__ import annotations

import random
from typing import Any

import aiokafka
import google_crc32c
import pytest
from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from banditroute.kafka import fetch_cycles, raw_fetch
from banditroute.kafka.fetch_double import Assignment

TP = TopicPartition("t.requests", 3)


def _batch(rng: random.Random, base: int, count: int, control: bool = False) -> bytes:
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 24)
    for i in range(count):
        key = rng.choice([None, b"", f"r-{base + i}".encode()])
        value = rng.choice([None, b"", rng.randbytes(rng.randint(1, 300))])
        builder.append(i, 1_796_000_000_000 + i, key, value, [("h", b"v")] if rng.random() < 0.2 else [])
    raw = bytearray(builder.build())
    raw[0:8] = base.to_bytes(8, "big")  # the broker's base offset (outside the checksum)
    if control:  # the attributes' control bit, checksummed again (aiokafka's builder writes no control batch)
        raw[22] |= 0x20
        raw[17:21] = google_crc32c.value(bytes(raw[21:])).to_bytes(4, "big")
    return bytes(raw)


def _response(rng: random.Random) -> tuple[int, bytes]:
    """A fetch response's records for one partition and the offset it was fetched from."""
    offset = rng.randint(0, 1000)
    fetched = offset - rng.choice([0, 0, 0, 3])  # sometimes a batch from before the position
    parts = []
    for _ in range(rng.randint(1, 5)):
        count = rng.randint(1, 40)
        parts.append(_batch(rng, fetched, count, control=rng.random() < 0.15))
        fetched += count + rng.choice([0, 0, 2])  # sometimes a gap (compaction)
    return offset, b"".join(parts)


def _result(offset: int, raw: bytes, deserializer: Any) -> tuple[Any, Assignment]:
    records = fetcher.PartitionRecords(
        TP, MemoryRecords(raw), None, offset, None, deserializer, True, fetcher.READ_UNCOMMITTED
    )
    assignment = Assignment(offset)
    return fetcher.FetchResult(TP, assignment=assignment, partition_records=records, backoff=0.1), assignment


def _calls(result: Any, assignment: Assignment, limits: list[int | None]) -> list[Any]:
    """What each call returns (records as (offset, key, value), or the error's type), the position after it and
    whether the result has more (the consumer drops a result that has no more: no call after that)."""
    seen: list[Any] = []
    for limit in limits:
        if not result.has_more():
            break
        try:
            if limit == 0:
                one = result.getone()
                got: Any = None if one is None else [(one.offset, one.key, one.value)]
            else:
                got = [(r.offset, r.key, r.value) for r in result.getall(limit)]
        except CorruptRecordException as exc:
            got = type(exc)
        seen.append((got, assignment.state.position, result.has_more()))
    return seen


@pytest.mark.parametrize("cycles", [False, True], ids=["aiokafka", "fetch_cycles"])
def test_same_records_and_positions_as_aiokafka(cycles: bool) -> None:
    # installed: under another aiokafka release this would compare aiokafka with itself (see the test below)
    assert raw_fetch.install()
    assert raw_fetch.install()  # idempotent
    if cycles:
        fetch_cycles.install()  # as the worker runs it
    rng = random.Random(16)
    for _ in range(400):
        offset, raw = _response(rng)
        if rng.random() < 0.1:  # a corrupt batch somewhere: the checksum no longer matches
            at = rng.randrange(61, len(raw))
            raw = raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1 :]
        limits = [rng.choice([None, 0, 1, 2, 7, 40, 2000]) for _ in range(rng.randint(1, 8))]
        mine = _calls(*_result(offset, raw, raw_fetch.raw_records), limits)
        theirs = _calls(*_result(offset, raw, None), limits)
        assert mine == theirs


def test_other_consumers_get_aiokafka_records() -> None:
    raw_fetch.install()
    rng = random.Random(1)
    result, _ = _result(0, _batch(rng, 0, 5), None)
    records = result.getall()
    assert [type(r).__name__ for r in records] == ["ConsumerRecord"] * 5
    assert all(r.topic == TP.topic and r.partition == TP.partition for r in records)


def test_without_install_the_marker_is_an_identity_deserializer() -> None:
    assert raw_fetch.raw_records(b"x") == b"x" and raw_fetch.raw_records(None) is None


def test_installed_only_under_the_aiokafka_release_it_was_checked_against(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # as in a process where nothing installed it yet (monkeypatch puts back whatever was there)
    monkeypatch.setattr(fetcher.FetchResult, "getall", raw_fetch._GETALL)
    monkeypatch.setattr(fetcher.FetchResult, "getone", raw_fetch._GETONE)
    assert not raw_fetch.install("0.14.1")  # a release whose private fetch code may differ: aiokafka's path
    assert not raw_fetch.installed()
    rng = random.Random(2)
    result, _ = _result(0, _batch(rng, 0, 3), raw_fetch.raw_records)
    assert [type(r).__name__ for r in result.getall()] == ["ConsumerRecord"] * 3
    assert (
        raw_fetch.AIOKAFKA_VERSION == aiokafka.__version__
    )  # an upgrade fails here until it is checked again
    assert raw_fetch.install() and raw_fetch.installed()
