"""The C record batch writer (``_native.c``) against aiokafka's builder: the same bytes for the same
records, the same answer when a batch is full, a TypeError for bad arguments (no broker)."""

from __future__ import annotations

import os
import random
import time
from typing import Any

import google_crc32c
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from banditroute import native
from banditroute.kafka import native_batch
from banditroute.kafka.outbox import PartitionBatches
from banditroute.kafka.producer_double import AckingProducer

_native = pytest.importorskip("banditroute._native", reason="the C extension was not built (no compiler)")

Args = tuple[int, int, int, int, int, int, int]


def pair(
    batch_size: int = 512 * 1024, transactional: int = 0, capacity: int = 0, codec: int = 0
) -> tuple[Any, Any]:
    args: Args = (2, codec, transactional, -1, -1, 0, batch_size)
    compress = native_batch.CODECS[codec] if codec else None
    return DefaultRecordBatchBuilder(*args), _native.Builder(*args, capacity, compress)


def blob(rng: random.Random, most: int) -> Any:
    """None, or bytes / bytearray / memoryview of a random length up to ``most``."""
    kind = rng.randrange(5)
    if kind == 0:
        return None
    data = rng.randbytes(rng.randrange(most + 1))
    return (bytes, bytes, bytearray, memoryview)[kind - 1](data)


def headers(rng: random.Random) -> list[tuple[str, bytes | None]]:
    return [
        (rng.choice(["banditroute-origin", "h", "ünïcode", ""]), rng.choice([None, b"", rng.randbytes(40)]))
        for _ in range(rng.choice([0, 0, 1, 3]))
    ]


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4])  # none, gzip, snappy, lz4, zstd
@pytest.mark.parametrize("seed", range(12))
def test_the_same_bytes_as_aiokafkas_builder(seed: int, codec: int) -> None:
    rng = random.Random(seed)
    batch_size = rng.choice([200, 4096, 512 * 1024])
    # the first buffer's size (a hint): none, the header's, smaller or larger than the batch, past its bound
    capacity = rng.choice([0, 61, 1000, 50_000, 10**9, -5])
    theirs, ours = pair(batch_size, transactional=seed % 2, capacity=capacity, codec=codec)
    base = 1_796_000_000_000 + rng.randrange(10**6)
    full_at = None
    taken = 0
    for offset in range(rng.randrange(1, 400)):
        # timestamps that go back and forth, varints of one to several bytes (offsets, deltas, lengths)
        ts = base + rng.choice([0, 1, -5, 70, 9000, -(10**6), 2**40])
        # random bytes, or text that compresses as decisions do
        value = (
            blob(rng, rng.choice([10, 200, 3000])) if rng.random() < 0.5 else b'{"model":"m%d"}' % offset * 9
        )
        record = (offset, ts, blob(rng, 64), value, headers(rng))
        a, b = theirs.append(*record), ours.append(*record)
        assert (a is None) == (b is None), offset
        if a is None:
            full_at = offset
            break
        assert b is True
        taken += 1
        assert theirs.size() == ours.size()
    if seed % 3 == 0:
        theirs.set_producer_state(12345, 7, 99)
        ours.set_producer_state(12345, 7, 99)
    built = ours.build()
    assert type(built) is bytearray
    assert built == theirs.build()
    if batch_size == 200:
        assert full_at is not None  # the size bound was met, at the same record both ways
    parsed = DefaultRecordBatch(bytes(built))
    assert parsed.validate_crc()
    assert parsed.compression_type == codec
    assert len(list(parsed)) == taken  # and the records read back (decompressed)


def test_keyword_arguments_as_aiokafkas_wrapper_passes_them() -> None:
    theirs, ours = pair()
    for builder in (theirs, ours):
        builder.append(0, 1_000, key=b"k", value=b"v", headers=[])
        builder.append(1, timestamp=1_001, key=None, value=b"w", headers=[("a", b"b")])
    assert ours.build() == theirs.build()


def test_a_batch_filled_to_its_bound_exactly_is_full_as_in_aiokafka() -> None:
    theirs, ours = pair(batch_size=79)  # the header (61) and one 9-byte record, twice, reach 79
    for builder in (theirs, ours):
        assert builder.append(0, 100, b"k", b"v", []) is not None
        assert builder.append(1, 100, b"k", b"v", []) is None
    assert ours.build() == theirs.build()


def test_an_empty_batch_is_written_as_aiokafka_writes_it() -> None:
    theirs, ours = pair()
    assert ours.build() == theirs.build()


def test_a_record_too_large_is_taken_first_and_refused_after() -> None:
    theirs, ours = pair(batch_size=100)
    big = b"x" * 500
    for builder in (theirs, ours):
        assert builder.append(0, 5, b"k", big, []) is not None  # the first record always goes in
        assert builder.append(1, 5, b"k", b"small", []) is None
    assert ours.build() == theirs.build()


def test_no_timestamp_is_now_in_milliseconds() -> None:
    _theirs, ours = pair()
    before = int(time.time() * 1000)
    ours.append(0, None, b"k", b"v", [])
    after = int(time.time() * 1000)
    (record,) = list(DefaultRecordBatch(bytes(ours.build())))
    assert before <= record.timestamp <= after


@pytest.mark.parametrize(
    ("call", "aiokafka_too"),
    [
        # a float offset or timestamp: aiokafka's C builder truncates it, its pure-Python one and ours refuse it
        (lambda b: b.append(1.0, 5, b"k", b"v", []), False),
        (lambda b: b.append(0, 5.5, b"k", b"v", []), False),
        (lambda b: b.append(0, 5, "k", b"v", []), True),  # key not bytes
        (lambda b: b.append(0, 5, b"k", 7, []), True),  # value not bytes
        (lambda b: b.append(0, 5, b"k", b"v", [(b"name", b"v")]), True),  # header name not str
        (lambda b: b.append(0, 5, b"k", b"v", [("name", "text")]), True),  # header value not bytes
        (lambda b: b.append(0, 5, b"k", b"v", None), True),  # headers not a sequence
        (lambda b: b.append(0, 5, b"k", b"v", (h for h in [("a", b"b")])), True),  # nor a list or tuple
    ],
)
def test_bad_arguments_raise_a_type_error_and_write_nothing(call: Any, aiokafka_too: bool) -> None:
    theirs, ours = pair()
    with pytest.raises(TypeError):
        call(ours)
    if aiokafka_too:
        with pytest.raises(TypeError):
            call(theirs)
        # nothing half-written either way: both still take a record and build the same bytes
        for builder in (theirs, ours):
            builder.append(0, 5, b"k", b"v", [])
        assert ours.build() == theirs.build()
    else:
        ours.append(0, 5, b"k", b"v", [])
        assert len(list(DefaultRecordBatch(bytes(ours.build())))) == 1


def test_builds_once_and_writes_nothing_after() -> None:
    _theirs, ours = pair()
    ours.append(0, 5, b"k", b"v", [])
    ours.build()
    with pytest.raises(RuntimeError):
        ours.build()
    with pytest.raises(RuntimeError):
        ours.append(1, 5, b"k", b"v", [])


def test_refuses_what_it_does_not_write() -> None:
    with pytest.raises(OverflowError):
        _native.Builder(2, 0, 0, -1, 2**15, 0, 1024)  # a producer epoch is an int16
    with pytest.raises(OverflowError):
        _native.Builder(2, 0, 0, -1, -1, 0, 1024).set_producer_state(1, 0, 2**31)  # a sequence an int32
    with pytest.raises(ValueError, match="needs its compress function"):
        _native.Builder(2, 1, 0, -1, -1, 0, 1024)  # gzip, without its function
    with pytest.raises(ValueError, match="compressed record batch only"):
        _native.Builder(2, 0, 0, -1, -1, 0, 1024, 0, native_batch.CODECS[1])
    with pytest.raises(TypeError, match="callable"):
        _native.Builder(2, 4, 0, -1, -1, 0, 1024, 0, b"zstd")
    with pytest.raises(ValueError, match="unknown compression codec 5"):
        _native.Builder(2, 5, 0, -1, -1, 0, 1024, 0, native_batch.CODECS[4])
    with pytest.raises(ValueError, match="magic 2"):
        _native.Builder(1, 0, 0, -1, -1, 0, 1024)


def test_a_codec_output_larger_than_the_records_is_written_whole() -> None:
    """The buffer grows to take it (aiokafka's C builder takes a codec's output whatever its size)."""
    ours = _native.Builder(2, 4, 0, -1, -1, 0, 1024, 0, lambda records: records * 50 + b"!")
    for offset in range(3):
        ours.append(offset, 5, b"k", b"v" * 30, [])
    records_size = ours.size() - 61
    built = ours.build()
    assert len(built) == 61 + records_size * 50 + 1 and ours.size() == len(built)
    batch = DefaultRecordBatch(bytes(built))
    assert batch.validate_crc() and batch.compression_type == 4
    assert int.from_bytes(built[8:12], "big") == len(built) - 12  # the batch length after the compression


def test_a_failing_codec_leaves_the_batch_to_be_built_again() -> None:
    calls: list[bytes] = []

    def flaky(records: bytes) -> Any:
        calls.append(records)
        if len(calls) == 1:
            raise OSError("codec failed")
        if len(calls) == 2:
            return 42  # not bytes
        return native_batch.CODECS[4](records)

    theirs, _ = pair(codec=4)
    ours = _native.Builder(2, 4, 0, -1, -1, 0, 512 * 1024, 0, flaky)
    for builder in (theirs, ours):
        builder.append(0, 5, b"k", b"v" * 100, [])
    with pytest.raises(OSError, match="codec failed"):
        ours.build()
    with pytest.raises(TypeError):
        ours.build()
    assert ours.build() == theirs.build()
    assert calls[0] == calls[1] == calls[2]  # the same records every time


@pytest.mark.parametrize("step", ["append", "build", "init"])
def test_a_codec_cannot_change_the_batch_it_compresses(step: str) -> None:
    """A codec is any callable: calling back into its builder is refused, and the batch is built as before."""
    ours: Any = None
    reentered: list[BaseException] = []

    def meddling(records: bytes) -> bytes:
        try:
            if step == "append":
                ours.append(9, 5, b"k", b"late", [])
            elif step == "build":
                ours.build()
            else:
                ours.__init__(2, 0, 0, -1, -1, 0, 10)
        except RuntimeError as e:
            reentered.append(e)
        return native_batch.CODECS[4](records)

    theirs, _ = pair(codec=4)
    ours = _native.Builder(2, 4, 0, -1, -1, 0, 512 * 1024, 0, meddling)
    for builder in (theirs, ours):
        builder.append(0, 5, b"k", b"v" * 100, [])
    assert ours.build() == theirs.build()
    assert len(reentered) == 1 and "being compressed" in str(reentered[0])
    with pytest.raises(RuntimeError):  # built: compressed records take nothing more
        ours.append(1, 5, b"k", b"v", [])


@pytest.mark.parametrize(
    ("size", "generation"),
    [(2**61, 1), (8, 2**62), (8, 5), (12, 2), (4, 1), (8, 0), (-8, 1)],
)
def test_id_tables_refuse_sizes_they_cannot_hold(size: int, generation: int) -> None:
    with pytest.raises((ValueError, MemoryError, OverflowError)):
        _native.IdTable(size, generation)


def test_an_id_table_that_fails_to_start_again_keeps_working() -> None:
    table = _native.IdTable(8, 4)
    assert table.seen("a") is False
    with pytest.raises(ValueError):
        table.__init__(8, 5)  # type: ignore[misc]
    assert table.seen("a") is True and len(table) == 1


def test_crc32c_is_castagnolis() -> None:
    assert _native.crc32c(b"123456789") == 0xE3069283  # the standard check value
    data = os.urandom(100_003)
    for cut in (0, 1, 7, 8, 9, 4096, 100_003):
        assert _native.crc32c(data[:cut]) == google_crc32c.value(data[:cut])


async def test_partition_batches_take_the_c_writer_only_where_it_is_equivalent() -> None:
    plain = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")  # never started: batches need no broker
    zstd = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", compression_type="zstd")
    idempotent = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", enable_idempotence=True)
    expected = (_native.Builder, _native.Builder, DefaultRecordBatchBuilder)
    writers = []
    for producer, kind in zip((plain, zstd, idempotent), expected, strict=True):
        out = PartitionBatches(producer)
        assert out.try_append("t", 0, b"k", b"v")
        writers.append(out.builders[("t", 0)]._builder)
        assert type(writers[-1]) is kind
    # the compressed batch is written compressed, as aiokafka's builder would write it
    built = DefaultRecordBatch(bytes(writers[1].build()))
    assert built.compression_type == DefaultRecordBatch.CODEC_ZSTD
    assert [r.value for r in built] == [b"v"]


def test_switched_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    assert native.loaded() is None
    assert not native_batch.available()
    monkeypatch.setenv(native.DISABLE_ENV, "1")
    assert native.loaded() is _native
    assert native_batch.available()


async def test_partition_batches_remember_each_partitions_last_batch_size() -> None:
    """A new batch's first buffer is as large as the last batch shipped to its partition (``sizes``, kept by the
    caller from poll to poll); the records and their bytes do not depend on it."""
    sizes: dict[tuple[str, int], int] = {}
    for poll in range(3):
        producer = AckingProducer()
        out = PartitionBatches(producer, sizes=sizes)
        for i in range(200 * (poll + 1)):
            await out.add("t", i % 2, b"k%d" % i, b"v" * 300)
        builders = dict(out.builders)
        await out.submit()
        assert sizes == {slot: builder.size() for slot, builder in builders.items()}
    assert sizes[("t", 0)] > 200 * 300  # 300 records of more than 300 bytes
    # a batch made with a hint larger than it needs is written as one made without
    theirs, ours = pair(capacity=sizes[("t", 0)])
    for builder in (theirs, ours):
        for i in range(0, 200, 2):
            builder.append(i // 2, 1_796_000_000_000, b"k%d" % i, b"v" * 300, [])
    assert ours.build() == theirs.build()
