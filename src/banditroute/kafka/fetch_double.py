"""Fetch responses without a broker, for measuring the decide loop in process (``banditroute.bench.decide_path``):
a partition's records are one record batch as the broker returns it, read through aiokafka's own fetch path
(``PartitionRecords``, ``FetchResult.getall``, with whatever patches of them the process has installed), as a
consumer's ``getmany`` hands them over."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka.consumer import fetcher
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

Fetched = dict[tuple[str, int], tuple[int, bytes]]
"""A fetch response: per (topic, partition), the offset fetched from and the records' bytes."""


def record_batch(base: int, records: Sequence[tuple[bytes, bytes]], timestamp_ms: int) -> bytes:
    """One record batch of (key, value) records from offset ``base``, as the broker stores it."""
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 30)
    for i, (key, value) in enumerate(records):
        builder.append(i, timestamp_ms, key, value, [])
    # the broker sets the base offset: the first 8 bytes, outside the checksum
    return base.to_bytes(8, "big") + bytes(builder.build())[8:]


class Position:
    """A partition's fetch state, as a consumer's assignment holds it (what ``FetchResult`` reads)."""

    paused = False

    def __init__(self, position: int) -> None:
        self.position = position

    def consumed_to(self, offset: int) -> None:
        self.position = offset


class Assignment:
    """A consumer's assignment of one partition fetched from ``position`` (what ``FetchResult`` is given)."""

    active = True

    def __init__(self, position: int) -> None:
        self.state = Position(position)

    def state_value(self, _tp: TopicPartition) -> Position:
        return self.state


def read(fetched: Fetched, value_deserializer: Any = None, max_records: int = 2000) -> dict[Any, list[Any]]:
    """The records of a fetch response as ``consumer.getmany`` returns them, keyed by ``TopicPartition``, for a
    consumer made with ``value_deserializer``: at most ``max_records`` over all partitions, in order (the rest
    would wait for the next poll), and no partition without records."""
    out: dict[Any, list[Any]] = {}
    left = max_records
    for (topic, partition), (offset, raw) in fetched.items():
        if left <= 0:
            break
        tp = TopicPartition(topic, partition)
        records = fetcher.PartitionRecords(
            tp, MemoryRecords(raw), None, offset, None, value_deserializer, True, fetcher.READ_UNCOMMITTED
        )
        result = fetcher.FetchResult(
            tp, assignment=Assignment(offset), partition_records=records, backoff=0.1
        )
        records = result.getall(left)
        if records:
            out[tp] = records
            left -= len(records)
    return out


__all__ = ["Assignment", "Fetched", "Position", "read", "record_batch"]
