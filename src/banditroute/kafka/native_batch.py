"""Record batches written by a small C writer where it can stand in for aiokafka's (issue #16).

aiokafka's C record batch builder costs ~8,300 instructions per 950-byte decision in the decide path
(callgrind, ``bench.decide_path``): its ``append`` grows the batch's buffer by 1.125 at every record, and its
``build`` checksums the batch with a table-driven CRC-32C (~4 instructions a byte). ``_native.Builder``
(``_native.c``) writes the same bytes with the buffer grown by doubling and the checksum taken with the
CPU's CRC32 instruction where there is one (SSE 4.2; a sliced table elsewhere).

:func:`adopt` puts it inside an aiokafka ``BatchBuilder`` made by ``producer.create_batch()``, so everything
around the writer (the wrapper's ``append``, ``send_batch``, the produce request) stays aiokafka's. It does so
only where the writer is equivalent: an uncompressed batch, a producer that is neither idempotent nor
transactional (aiokafka then sets the batch's producer state through a type check of its own builder), and the
aiokafka release the private fields were checked against. The extension is optional: installed without a C
compiler, or with ``BANDITROUTE_NATIVE=0`` in the environment (:mod:`banditroute.native`), batches are
aiokafka's own.
"""

from __future__ import annotations

from typing import Any

from banditroute import native
from banditroute.kafka.aiokafka_release import checked


def available() -> bool:
    """Whether :func:`adopt` may put the C writer in: the extension built and not switched off, and aiokafka's
    fields checked."""
    return native.loaded() is not None and checked("kafka/native_batch.py (the C record batch writer)")


ENABLED = available()
"""Decided once at import (the environment of the process)."""
Builder: Any = getattr(native.loaded(), "Builder", None)


def adopt(batch: Any, producer: Any, capacity: int = 0) -> Any:
    """``batch`` (a new, empty ``BatchBuilder`` of ``producer``) with the C writer in place of aiokafka's when
    it is equivalent there (see the module's docstring), else ``batch`` as it is. ``capacity``: the bytes the
    batch is expected to reach, written then without its buffer moved on the way (a hint; 0: none)."""
    if not ENABLED or batch.record_count() or batch._closed:
        return batch
    accumulator = getattr(producer, "_message_accumulator", None)  # None: not aiokafka's producer
    if accumulator is None or accumulator._compression_type or producer._txn_manager is not None:
        return batch
    batch._builder = Builder(2, 0, 0, -1, -1, 0, accumulator._batch_size, capacity)
    return batch


__all__ = ["ENABLED", "adopt", "available"]
