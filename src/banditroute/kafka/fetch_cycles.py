"""Fetched records that are dropped unread are freed at once, not by the cyclic collector (aiokafka 0.14).

aiokafka keeps a partition's fetched records in a ``PartitionRecords`` whose record iterator is a generator of
its own method: the generator's frame refers to the ``PartitionRecords``, which refers to the generator. The cycle
is broken only when the iterator runs to its end. When the consumer drops a fetch before that (a ``seek``, a
paused partition, a position that moved, a lost assignment), the ``PartitionRecords`` with its fetch response
buffer (up to ``max_partition_fetch_bytes``), its current record batch and record become cyclic garbage, which
only a collection frees (the generator's finalizer breaks the cycle then). The worker's decisions reader does this
several times a second: it pauses its partitions and seeks past its own decisions (kafka/partition_reader.py). With
the worker's rare collections (gc_tuning.py) a soak at ~1,000-1,800 requests/s held 3-6 MB of such buffers per
young collection and RSS rose 10-12 MiB a minute between collections (found with ``BANDITROUTE_MEMORY_PROBE_GC``,
memory_probe.py: ``vanished`` ``PartitionRecords`` and ``_unpack_records`` generators).

:func:`install` makes the iterator refer to its ``PartitionRecords`` through a weak proxy: no cycle, so a dropped
fetch is freed when its last reference goes, as everything else the consumer drops.
"""

from __future__ import annotations

import weakref
from typing import Any

import aiokafka
from aiokafka.consumer import fetcher

from banditroute.kafka.aiokafka_release import checked

_BASE: Any = fetcher.PartitionRecords
_installed = False


class _PartitionRecords(_BASE):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's ``PartitionRecords`` whose record generator holds it weakly (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the same generator function, on a proxy: it reads and sets next_fetch_offset and the rest through it
        self._records_iterator = _BASE._unpack_records(weakref.proxy(self))


def install(aiokafka_version: str = aiokafka.__version__) -> bool:
    """Replace aiokafka's ``PartitionRecords`` in its fetcher module once per process (idempotent). Returns
    whether it is installed: not under a release other than the checked one (kafka/aiokafka_release.py)."""
    global _installed
    if not checked("kafka/fetch_cycles.py (dropped fetches freed at once)", aiokafka_version):
        return False
    fetcher.PartitionRecords = _PartitionRecords
    _installed = True
    return True


def installed() -> bool:
    return _installed and fetcher.PartitionRecords is _PartitionRecords


__all__ = ["install", "installed"]
