"""``outbox.record_writer``: aiokafka's record batch writer behind a ``BatchBuilder``, used by the decide loop's run
without the wrapper, or None where the wrapper does more than pass the record on. No broker."""

from __future__ import annotations

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from banditroute.kafka import outbox
from banditroute.kafka.outbox import record_writer

HEADERS = [("banditroute-decider", b"0123456789abcdef")]


def _records(builder: BatchBuilder) -> list[tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    return [(r.offset, r.key, r.value, r.headers) for r in DefaultRecordBatch(bytearray(builder._build()))]


def test_the_writer_appends_what_the_wrapper_appends_until_the_batch_is_full() -> None:
    by_wrapper, by_writer = BatchBuilder(2048, 0), BatchBuilder(2048, 0)
    writer = record_writer(by_writer)
    assert writer is not None
    taken = 0
    while True:
        key, value = b"r%d" % taken, b"v" * (50 + taken)
        wrapped = by_wrapper.append(timestamp=None, key=key, value=value, headers=HEADERS) is not None
        written = writer.append(by_writer._relative_offset, None, key, value, HEADERS) is not None
        assert wrapped == written
        if not written:
            by_writer.close()
            break
        by_writer._relative_offset += 1
        taken += 1
    assert taken > 3
    assert record_writer(by_writer) is None  # closed: the wrapper answers None from now on
    assert _records(by_writer) == _records(by_wrapper)
    assert [offset for offset, *_ in _records(by_writer)] == list(range(taken))


def test_no_writer_where_the_wrapper_serializes() -> None:
    assert record_writer(BatchBuilder(2048, 0, key_serializer=bytes)) is None
    assert record_writer(BatchBuilder(2048, 0, value_serializer=bytes)) is None


def test_no_writer_under_another_aiokafka_release(monkeypatch: pytest.MonkeyPatch) -> None:
    assert record_writer(BatchBuilder(2048, 0)) is not None
    monkeypatch.setattr(outbox, "DIRECT_APPENDS", False)  # what checked() answers for another release
    assert record_writer(BatchBuilder(2048, 0)) is None
