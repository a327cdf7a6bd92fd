"""The local-mode publisher's queue without a broker: a producer double that acknowledges or fails each batch.

What the broker does with the records is tested on the real broker (tests/kafka/test_local_mode.py); here only
the queue: nothing lost when an acknowledgement fails (also while the shipper waits for a first record),
``max_pending`` refusing past the bound, ``flush`` waiting for every acknowledgement.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from banditroute.kafka.decision_publisher import DecisionPublisher

TOPIC = "t.decisions"


class BatchProducer:
    """What the publisher calls on aiokafka's producer; each shipped batch's future is acknowledged at once, or
    failed while ``fail`` is above zero."""

    def __init__(self) -> None:
        self.fail = 0
        self.stored: list[bytes] = []

    async def partitions_for(self, _topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(512 * 1024, 0)

    async def send_batch(self, builder: BatchBuilder, _topic: str, *, partition: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail > 0:
            self.fail -= 1
            future.set_exception(ConnectionError("broker went away"))
        else:
            self.stored.extend(record.value for record in _records(builder))
            future.set_result(None)
        return future


def _records(builder: BatchBuilder) -> Any:
    from aiokafka.record.default_records import DefaultRecordBatch

    return DefaultRecordBatch(bytearray(builder._build()))


async def test_a_failed_acknowledgement_is_shipped_again_with_nothing_else_queued() -> None:
    producer = BatchProducer()
    publisher = DecisionPublisher(producer, linger_s=0.001)
    await publisher.start([TOPIC])
    try:
        producer.fail = 3  # every batch of the first shipment fails (3 partitions at most)
        for i in range(30):
            assert publisher.offer(TOPIC, f"k{i}".encode(), f"v{i}".encode())
        assert await publisher.flush(5.0)  # the shipper, idle after the failure, ships the requeued records
        assert publisher.stats["send_failures"] >= 1
        assert sorted(producer.stored) == sorted(f"v{i}".encode() for i in range(30))
        assert publisher.pending == 0 and publisher.stats["published"] == 30
    finally:
        await publisher.stop(1.0)


async def test_bounded_queue_refuses_past_max_pending_then_takes_again() -> None:
    producer = BatchProducer()
    publisher = DecisionPublisher(producer, max_pending=10, linger_s=0.001)
    await publisher.start([TOPIC])
    try:
        accepted = [publisher.offer(TOPIC, b"k", f"v{i}".encode()) for i in range(15)]
        assert accepted == [True] * 10 + [False] * 5
        assert publisher.stats["refused_full"] == 5
        assert await publisher.flush(5.0)
        assert publisher.offer(TOPIC, b"k", b"later")
        assert await publisher.flush(5.0)
        assert len(producer.stored) == 11
    finally:
        await publisher.stop(1.0)


async def test_records_queued_in_bursts_are_all_shipped() -> None:
    """The shipper sleeps without a timer while the queue is empty and wakes on the next record."""
    producer = BatchProducer()
    publisher = DecisionPublisher(producer, linger_s=0.001, batch=7)
    await publisher.start([TOPIC])
    try:
        sent = 0
        for burst in (1, 6, 7, 20, 1):
            for _ in range(burst):
                publisher.offer(TOPIC, str(sent).encode(), str(sent).encode())
                sent += 1
            await asyncio.sleep(0.01)
            assert publisher.pending == 0  # shipped without a flush
        assert sorted(producer.stored, key=int) == [str(i).encode() for i in range(sent)]
    finally:
        await publisher.stop(1.0)
