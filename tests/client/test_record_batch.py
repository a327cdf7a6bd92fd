"""The local-mode publisher's record batches, without a broker: byte for byte what aiokafka's own builder writes
for the same records, readable (checksum included) by aiokafka's record batch reader. That the broker takes them
is tested on the real broker (tests/kafka/test_local_mode.py publishes every decision through them)."""

from __future__ import annotations

import random

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from banditroute.kafka.record_batch import MAX_BATCH_BYTES, RecordBatchWriter, encode_headers, zigzag_varint

HEADERS = [("banditroute-origin", b"local")]


def _records(seed: int, count: int) -> list[tuple[bytes, bytes, int]]:
    """Keys and values of many lengths (varints of one to three bytes), timestamps moving both ways."""
    rng = random.Random(seed)
    start = 1_800_000_000_000
    return [
        (
            rng.randbytes(rng.choice((0, 1, 32, 63, 64, 200))),
            rng.randbytes(rng.choice((0, 1, 63, 64, 950, 8191, 8192, 20_000))),
            start + rng.randint(-5_000, 20_000),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_bytes", [MAX_BATCH_BYTES, 30_000])
def test_the_batch_is_what_aiokafkas_builder_writes(seed: int, max_bytes: int) -> None:
    records = _records(seed, 120)
    theirs = BatchBuilder(max_bytes, 0)
    ours = RecordBatchWriter(encode_headers(HEADERS), max_bytes)
    stage = bytearray(30_000)
    refused = 0
    for i, (key, value, at) in enumerate(records):
        taken = theirs.append(timestamp=at, key=key, value=value, headers=HEADERS) is not None
        stage[: len(value)] = value  # the value's buffer is reused after each seal, as the publisher's is
        with memoryview(stage) as view:
            assert ours.add(key, view[: len(value)], at) is taken, i
            ours.seal()
        refused += not taken
        assert ours.size() == theirs.size() and ours.record_count() == theirs.record_count()
    assert refused > 0  # the size bound was met, and nothing was taken after it
    stage[:] = bytes(len(stage))
    built = ours._build()
    assert built == bytes(theirs._build())
    assert ours._build() is built  # a retry sends the same bytes
    read = DefaultRecordBatch(bytearray(built))
    assert read.validate_crc()
    kept = records[: ours.record_count()]
    assert [(r.key, r.value, r.timestamp, r.headers) for r in read] == [
        (key or b"", value or b"", at, HEADERS) for key, value, at in kept
    ]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_bytes", [MAX_BATCH_BYTES, 30_000])
def test_records_added_together_are_those_added_one_by_one(seed: int, max_bytes: int) -> None:
    """``add_many`` (one timestamp per call, a few records at a time) writes what ``add`` of each record writes,
    refusing at the same record; both read back through aiokafka's reader."""
    rng = random.Random(seed)
    records = _records(seed, 150)
    one = RecordBatchWriter(encode_headers(HEADERS), max_bytes)
    many = RecordBatchWriter(encode_headers(HEADERS), max_bytes)
    i = 0
    while i < len(records):
        group = records[i : i + rng.choice((1, 2, 7, 40))]
        at = group[0][2]  # the publisher stamps a packing with one time
        added = many.add_many([key for key, _, _ in group], [value for _, value, _ in group], at)
        taken = [one.add(key, value, at) for key, value, _ in group]
        assert added == sum(taken) and taken == [True] * added + [False] * (len(taken) - added), i
        assert many.size() == one.size() and many.record_count() == one.record_count()
        assert many.closed() == one.closed()
        i += len(group)
        if one.closed():
            break
    closed = many.closed()
    assert many.add_many([b"k"], [b"v"], 1) == (0 if closed else 1)
    assert one.add(b"k", b"v", 1) is not closed
    assert many.add_many([], [], 5) == 0
    built = many._build()
    assert built == one._build()
    read = DefaultRecordBatch(bytearray(built))
    assert read.validate_crc() and len(list(read)) == many.record_count()


def test_producer_state_and_what_the_producer_sees() -> None:
    ours = RecordBatchWriter()
    theirs = BatchBuilder(MAX_BATCH_BYTES, 0)
    for batch in (ours, theirs):
        assert batch.append(timestamp=None, key=b"k", value=b"v") is None or batch is theirs
    assert ours.record_count() == 0 and not ours.closed()  # aiokafka's send() path is refused, nothing added
    assert ours.add(b"k", b"v", 1000)
    theirs = BatchBuilder(MAX_BATCH_BYTES, 0)
    theirs.append(timestamp=1000, key=b"k", value=b"v", headers=[])
    for batch in (ours, theirs):
        batch._set_producer_state(7, 2, 40)  # what an idempotent producer does before sending
    assert ours._build() == bytes(theirs._build())
    assert ours.closed() and not ours.add(b"k", b"v", 1000)
    with pytest.raises(RuntimeError):
        ours._set_producer_state(7, 2, 41)


def test_zigzag_varints() -> None:
    assert [zigzag_varint(v) for v in (0, -1, 1, -2, 63, 64, 8191, 8192)] == [
        b"\x00",
        b"\x01",
        b"\x02",
        b"\x03",
        b"\x7e",
        b"\x80\x01",
        b"\xfe\x7f",
        b"\x80\x80\x01",
    ]
    assert encode_headers([]) == b"\x00"
