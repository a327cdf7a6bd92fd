"""Record batches written by a small C writer where it can stand in for aiokafka's (issue #16).

aiokafka's C record batch builder costs ~8,300 instructions per 950-byte decision in the decide path
(callgrind, ``bench.decide_path``): its ``append`` grows the batch's buffer by 1.125 at every record, and its
``build`` checksums the batch with a table-driven CRC-32C (~4 instructions a byte). ``_native.Builder``
(``_native.c``) writes the same bytes with the buffer grown by doubling and the checksum taken with the
CPU's CRC32 instruction where there is one (SSE 4.2; a sliced table elsewhere).

:func:`adopt` puts it inside an aiokafka ``BatchBuilder`` made by ``producer.create_batch()``, so everything
around the writer (the wrapper's ``append``, ``send_batch``, the produce request) stays aiokafka's. It does so
only where the writer is equivalent: a producer that is neither idempotent nor transactional (aiokafka then sets
the batch's producer state through a type check of its own builder), and the aiokafka release the private fields
were checked against. A compressed batch is compressed at ``build()`` by aiokafka's own codec function
(:data:`CODECS`), so it is the same batch, byte for byte, as aiokafka's C builder writes (its pure-Python builder
sends a batch uncompressed when compression does not make it smaller). The extension is optional: installed
without a C compiler, or with ``BANDITROUTE_NATIVE=0`` in the environment (:mod:`banditroute.native`), batches
are aiokafka's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiokafka import codec

from banditroute import native
from banditroute.kafka.aiokafka_release import checked


def available() -> bool:
    """Whether :func:`adopt` may put the C writer in: the extension built and not switched off, and aiokafka's
    fields checked."""
    return native.loaded() is not None and checked("kafka/native_batch.py (the C record batch writer)")


ENABLED = available()
"""Decided once at import (the environment of the process)."""
Builder: Any = getattr(native.loaded(), "Builder", None)
CODECS: dict[int, Callable[[bytes], bytes]] = {
    1: codec.gzip_encode,
    2: codec.snappy_encode,
    3: codec.lz4_encode,
    4: codec.zstd_encode,
}
"""A record batch's compression bits → the function aiokafka's builder compresses its records with."""


def adopt(batch: Any, producer: Any, capacity: int = 0) -> Any:
    """``batch`` (a new, empty ``BatchBuilder`` of ``producer``) with the C writer in place of aiokafka's when
    it is equivalent there (see the module's docstring), else ``batch`` as it is. ``capacity``: the bytes the
    batch is expected to reach, written then without its buffer moved on the way (a hint; 0: none)."""
    if not ENABLED or batch.record_count() or batch._closed:
        return batch
    accumulator = getattr(producer, "_message_accumulator", None)  # None: not aiokafka's producer
    if accumulator is None or producer._txn_manager is not None:
        return batch
    compression = accumulator._compression_type or 0
    compress = CODECS.get(compression)
    if compression and compress is None:  # a codec this module does not know: aiokafka's own builder
        return batch
    batch._builder = Builder(2, compression, 0, -1, -1, 0, accumulator._batch_size, capacity, compress)
    return batch


__all__ = ["CODECS", "ENABLED", "adopt", "available"]
