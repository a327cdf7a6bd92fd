"""A producer without a broker, for measuring the decide loop in process (``banditroute.bench.decide_path``):
record batches are made as the worker makes them (``kafka/native_batch.adopt``), built (checksum included) when
submitted and acknowledged at once."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, NamedTuple

from aiokafka.producer.message_accumulator import BatchBuilder

MAX_BATCH_BYTES = 512 * 1024


class Acknowledged(NamedTuple):
    """What a send's future holds: the base offset of the record batch."""

    offset: int


class AckingProducer:
    """What the decide loop calls on aiokafka's producer for its record batches; each submitted batch is
    built and acknowledged at once, with consecutive offsets per partition."""

    def __init__(self) -> None:
        # what kafka/native_batch.adopt reads of aiokafka's producer: here an uncompressed, non-idempotent one
        self._message_accumulator = SimpleNamespace(_batch_size=MAX_BATCH_BYTES, _compression_type=0)
        self._txn_manager = None
        self.next: dict[tuple[str, int], int] = {}
        self.records = 0
        """Records acknowledged so far."""

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(MAX_BATCH_BYTES, 0)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        builder._build()
        count = builder.record_count()
        base = self.next.get((topic, partition), 0)
        self.next[(topic, partition)] = base + count
        self.records += count
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(Acknowledged(base))
        return future
