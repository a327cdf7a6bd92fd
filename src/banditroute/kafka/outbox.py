"""One raw aiokafka producer for what the join publishes, with an explicit "wait until acknowledged".

faust's own producer path costs milliseconds per awaited send under load (measured: ~1 ms per outcome, and
its ``send_soon`` buffer drains one message at a time). The join needs two ordered, acknowledged steps per
batch (join state, then outcomes), so it sends through this outbox and drains it at each step.

Records with a known partition (:meth:`Outbox.send_to`: changelog writes, outcomes) are appended to one record
batch per partition and submitted at :meth:`Outbox.drain`, which skips the per-message future and accumulator
work of ``producer.send`` (py-spy: that was half of the join's cost per decision).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from banditroute.kafka.aiokafka_release import checked
from banditroute.kafka.fast_produce import install as install_fast_produce
from banditroute.kafka.fast_send import install as install_fast_send
from banditroute.kafka.native_batch import adopt

install_fast_produce()  # every producer of the process: the decide loop's, the join's (kafka/fast_produce.py)
install_fast_send()  # every connection's requests written without two whole copies (kafka/fast_send.py)

Headers = list[tuple[str, bytes]]
"""Kafka record headers: (name, value) pairs (aiokafka's record builder wants a list)."""
NO_HEADERS: Headers = []


DIRECT_APPENDS = checked("kafka/outbox.py (record_writer: the decide loop's appends)")
"""Whether :func:`record_writer` may hand out the writer (it reads the ``BatchBuilder``'s private fields)."""


def record_writer(builder: Any) -> Any | None:
    """The record batch writer inside aiokafka's ``BatchBuilder`` (its C ``append(offset, timestamp, key,
    value, headers)``), for a caller appending many records without the wrapper's two Python calls and keyword
    arguments per record; None when the wrapper does more than pass the record on (a serializer, or the batch
    closed), or under an aiokafka release the fields were not checked against (:data:`DIRECT_APPENDS`). The caller does what the wrapper's ``append`` does around it: passes ``_relative_offset`` and
    adds one to it after each record taken, and calls ``close()`` when the writer returns None (full)."""
    if (
        not DIRECT_APPENDS
        or builder._closed
        or builder._key_serializer is not None
        or builder._value_serializer is not None
    ):
        return None
    return builder._builder


class PartitionBatches:
    """Per-(topic, partition) record batches of one poll, submitted with ``send_batch``."""

    __slots__ = ("producer", "builders", "futures", "shipped", "before_ship", "sizes")

    def __init__(
        self,
        producer: AIOKafkaProducer,
        before_ship: Callable[[str, int], None] | None = None,
        sizes: dict[tuple[str, int], int] | None = None,
    ) -> None:
        self.producer = producer
        self.before_ship = before_ship
        """Called with (topic, partition) before each batch or record is handed to the producer."""
        self.sizes = sizes
        """Per (topic, partition), the bytes of the last batch shipped there (kept by the caller from poll to
        poll, for the caller's own topics): a new batch's buffer is made that large at once, where a batch
        otherwise doubles it from 1 KiB, moving what it holds each time (callgrind, ``bench.decide_path``: 615
        fewer of ~24,900 instructions a request, 77 buffer moves where there were 572)."""
        self.builders: dict[tuple[str, int], Any] = {}
        self.futures: list[asyncio.Future[Any]] = []
        self.shipped: list[tuple[str, int, int, asyncio.Future[Any]]] = []
        """(topic, partition, records, future) of every submitted batch, in order: a batch's acknowledgement
        carries its base offset, so record i of it is at base + i."""

    def builder(self, topic: str, partition: int) -> Any:
        """That partition's open record batch (aiokafka's ``BatchBuilder``; made if there is none): its
        ``append`` is :meth:`try_append` without the look-up, for a caller appending many records to one
        partition. It stays the partition's batch until :meth:`add` ships it full or :meth:`submit`."""
        builder = self.builders.get((topic, partition))
        if builder is None:
            builder = self.builders[(topic, partition)] = self._new_batch(topic, partition)
        return builder

    def _new_batch(self, topic: str, partition: int) -> Any:
        sizes = self.sizes
        capacity = 0 if sizes is None else sizes.get((topic, partition), 0)
        return adopt(self.producer.create_batch(), self.producer, capacity)

    def try_append(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers = NO_HEADERS,
    ) -> bool:
        """Append without awaiting; False when that partition's batch is full (then :meth:`add` it)."""
        builder = self.builder(topic, partition)
        return builder.append(timestamp=None, key=key, value=value, headers=headers) is not None

    async def add(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers = NO_HEADERS,
    ) -> None:
        if self.try_append(topic, partition, key, value, headers):
            return
        slot = (topic, partition)
        builder = self.builders[slot]
        # full: ship it and start another; a record too large for an empty batch goes alone via send()
        if builder.record_count():
            await self._ship(topic, partition, builder)
            builder = self.builders[slot] = self._new_batch(topic, partition)
        if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            del self.builders[slot]
            if self.before_ship is not None:
                self.before_ship(topic, partition)
            future = await self.producer.send(
                topic, key=key, value=value, partition=partition, headers=headers or None
            )
            self.futures.append(future)
            self.shipped.append((topic, partition, 1, future))

    async def _ship(self, topic: str, partition: int, builder: Any) -> None:
        count = builder.record_count()
        if self.sizes is not None:
            self.sizes[(topic, partition)] = builder.size()
        if self.before_ship is not None:
            self.before_ship(topic, partition)
        future = await self.producer.send_batch(builder, topic, partition=partition)
        self.futures.append(future)
        self.shipped.append((topic, partition, count, future))

    async def submit(self) -> list[asyncio.Future[Any]]:
        for (topic, partition), builder in self.builders.items():
            if builder.record_count():
                await self._ship(topic, partition, builder)
        self.builders.clear()
        return self.futures


PRUNE_PENDING_AT = 10_000
"""Acknowledgements awaited by a long run of sends without a drain are checked and dropped past this many."""


class Outbox:
    """Send now, :meth:`drain` to wait for every acknowledgement since the last drain."""

    def __init__(
        self, bootstrap: str, security: dict[str, Any], linger_ms: int = 1, acks: int | str = "all"
    ) -> None:
        self.bootstrap = bootstrap
        self.security = security
        self.linger_ms = linger_ms
        self.acks = acks
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[asyncio.Future[Any]] = []
        self._batches: PartitionBatches | None = None
        self._lock = asyncio.Lock()

    async def _ensure(self) -> AIOKafkaProducer:
        if self._producer is None:
            async with self._lock:
                if self._producer is None:
                    producer = AIOKafkaProducer(
                        bootstrap_servers=self.bootstrap,
                        linger_ms=self.linger_ms,
                        acks=self.acks,
                        max_batch_size=512 * 1024,  # one record batch per partition per join batch
                        **self.security,
                    )
                    await producer.start()
                    self._producer = producer
        return self._producer

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        """Hand one record to the producer; returns its acknowledgement (also awaited by :meth:`drain`)."""
        producer = await self._ensure()
        future: asyncio.Future[Any] = await producer.send(
            topic, value=value, key=key, partition=partition, headers=headers
        )
        self._pending.append(future)
        if len(self._pending) >= PRUNE_PENDING_AT:
            self._prune()
        return future

    def _prune(self) -> None:
        """Drop the acknowledgements already in; raises the error of a send that failed."""
        waiting = []
        for future in self._pending:
            if future.done():
                future.result()
            else:
                waiting.append(future)
        self._pending = waiting

    async def send_to(self, topic: str, key: bytes | None, value: bytes | None, partition: int) -> None:
        """Like :meth:`send` to a given partition, batched: submitted at the next :meth:`drain`."""
        if self._batches is None:
            self._batches = PartitionBatches(await self._ensure())
        await self._batches.add(topic, partition, key, value)

    async def drain(self) -> int:
        """Submit the batched records, then wait until everything sent so far is acknowledged; raises if any
        send failed."""
        if self._batches is not None:
            batches, self._batches = self._batches, None
            self._pending.extend(await batches.submit())
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
        return len(pending)

    async def stop(self) -> None:
        if self._producer is not None:
            try:
                await self.drain()
            finally:
                await self._producer.stop()
                self._producer = None
