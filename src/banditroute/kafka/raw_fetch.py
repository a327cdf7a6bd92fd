"""Hand a consumer's fetched records over a record batch at a time, as the record batch's own records.

aiokafka 0.14 returns every fetched record through a generator (``PartitionRecords._unpack_records``): one
resumption, one ``_consumer_record`` call and one ``ConsumerRecord`` (a dataclass of 11 fields, its headers
copied into a tuple) per record, and ``FetchResult.getall`` appends them one by one. py-spy put that at 8-9 % of
the worker's decide thread during a drain (``banditroute bench e2e``), ~3 µs per record timed alone; a record
batch's records themselves are made by aiokafka's C extension.

A consumer made with ``value_deserializer=raw_records`` (and no key deserializer, reading uncommitted records: the
decide loop's) is read by :func:`install`'s ``getall`` a record batch at a time: the batch's CRC is checked and
control batches are skipped as aiokafka does, and its records (aiokafka's C ``DefaultRecord``: ``offset``,
``key``, ``value``, ``timestamp``, ``headers``; no ``topic`` or ``partition``, which the caller has from the
``TopicPartition`` they were polled under) are taken as a list slice. The positions are those aiokafka's
generator would leave: after the last record taken, or a batch's ``next_offset`` once a batch is read past its
end. Any other consumer, and ``getone``'s path, are left to aiokafka. Without :func:`install`, ``raw_records``
is only an identity deserializer (the records are aiokafka's own), so the marker is always safe to set.

It repeats what aiokafka's private fetch code does (``PartitionRecords._unpack_records``, ``FetchResult.getall``)
and reads its private fields, so :func:`install` patches only the release it was checked against
(:data:`AIOKAFKA_VERSION`; the package allows any 0.14.x): under another one, aiokafka's own path stays, with a
warning, rather than every poll failing on a renamed field or returning records aiokafka's would not.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import aiokafka.errors as errors
from aiokafka.consumer import fetcher

from banditroute.kafka.aiokafka_release import CHECKED, checked

AIOKAFKA_VERSION = CHECKED
"""The aiokafka release this module was checked against (tests/test_raw_fetch.py); :func:`install` patches no
other."""

_GETALL = fetcher.FetchResult.getall
_GETONE = fetcher.FetchResult.getone


def raw_records(value: bytes | None) -> bytes | None:
    """The marker of a consumer read a batch at a time (as a deserializer it returns the value as it is)."""
    return value


def _is_raw(records: Any) -> bool:
    return (
        records is not None
        and records._value_deserializer is raw_records
        and records._key_deserializer is None
        and records._isolation_level == fetcher.READ_UNCOMMITTED
    )


class _Rest:
    """What is left of the record batch being read: its records from ``at`` on, and its ``next_offset``."""

    __slots__ = ("at", "next_offset", "rows")

    def __init__(self, rows: list[Any], next_offset: int) -> None:
        self.rows = rows
        self.at = 0
        self.next_offset = next_offset


def _take(records: Any, max_records: int | None) -> tuple[list[Any], bool]:
    """Up to ``max_records`` records of a ``PartitionRecords`` (all if None), and whether it is read out.

    ``records.next_fetch_offset`` moves as aiokafka's generator moves it: past each record taken, to a batch's
    ``next_offset`` once the next record is asked for and the batch has none left."""
    out: list[Any] = []
    rest: _Rest | None = records.__dict__.get("_raw_rest")
    memory = records._records
    while max_records is None or len(out) < max_records:
        if rest is None:
            if records.__dict__.get("_raw_done") or not memory.has_next():
                records._raw_rest = None
                return out, True
            batch = memory.next_batch()
            if records._check_crcs and not batch.validate_crc():
                records._raw_done = True  # as aiokafka's generator: it ends with the error (refetched later)
                records._raw_rest = None
                raise errors.CorruptRecordException(f"Invalid CRC - {records._tp}")
            if batch.is_control_batch:
                records.next_fetch_offset = batch.next_offset
                continue
            start = records.next_fetch_offset
            rows = list(batch)
            if rows and rows[0].offset < start:  # e.g. a compressed batch fetched from before the position
                rows = [row for row in rows if row.offset >= start]
            rest = _Rest(rows, batch.next_offset)
        rows, at = rest.rows, rest.at
        if at < len(rows):
            end = len(rows) if max_records is None else min(len(rows), at + max_records - len(out))
            out += rows[at:end] if at or end < len(rows) else rows
            rest.at = end
            records.next_fetch_offset = rows[end - 1].offset + 1
            continue
        records.next_fetch_offset = rest.next_offset
        rest = None
    records._raw_rest = rest
    return out, False


def _getall(self: Any, max_records: int | None = None) -> list[Any]:
    records = self._partition_records
    if not _is_raw(records):
        theirs: list[Any] = _GETALL(self, max_records)
        return theirs
    if not self.check_assignment(self._topic_partition):
        return []
    out, done = _take(records, max_records)
    self._update_position()
    if done:
        self._partition_records = None
    return out


def _getone(self: Any) -> Any:
    records = self._partition_records
    if not _is_raw(records):
        return _GETONE(self)
    taken = _getall(self, 1)
    return taken[0] if taken else None


def install(aiokafka_version: str = aiokafka.__version__) -> bool:
    """Read consumers marked with :func:`raw_records` a record batch at a time (once per process; idempotent).
    Returns whether it is installed: not under an aiokafka release other than :data:`AIOKAFKA_VERSION` (a
    warning, and aiokafka's own path: see the module's docstring)."""
    if not checked("kafka/raw_fetch.py (the decide loop's batch reads)", aiokafka_version):
        return False
    fetcher.FetchResult.getall = _getall
    fetcher.FetchResult.getone = _getone
    return True


def installed() -> bool:
    return fetcher.FetchResult.getall is _getall


__all__ = ["AIOKAFKA_VERSION", "install", "installed", "raw_records"]
