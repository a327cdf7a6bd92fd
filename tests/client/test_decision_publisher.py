"""The local-mode publisher's queue without a broker: a producer double that acknowledges or fails each batch.

What the broker does with the records is tested on the real broker (tests/kafka/test_local_mode.py); here only
the queue: nothing lost when an acknowledgement fails (also while the shipper waits for a first record),
``max_pending`` refusing past the bound, ``flush`` waiting for every acknowledgement.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from banditroute.kafka.decision_publisher import PACK_AT, STAGE_BYTES, DecisionPublisher
from banditroute.kafka.topics import partition_for

TOPIC = "t.decisions"


class BatchProducer:
    """What the publisher calls on aiokafka's producer; each shipped batch's future is acknowledged at once, or
    failed while ``fail`` is above zero."""

    def __init__(self) -> None:
        self.fail = 0
        self.stored: list[bytes] = []
        self.placed: list[tuple[str, int, bytes]] = []
        """(topic, partition, key) of every stored record."""
        self.batches = 0

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
            for record in _records(builder):
                self.stored.append(record.value)
                self.placed.append((_topic, partition, record.key))
            self.batches += 1
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
            for _ in range(200):  # 1 ms of linger; a loaded machine may hold the loop back longer
                await asyncio.sleep(0.01)
                if publisher.pending == 0:
                    break
            assert publisher.pending == 0  # shipped without a flush
        assert sorted(producer.stored, key=int) == [str(i).encode() for i in range(sent)]
    finally:
        await publisher.stop(1.0)


async def test_every_record_lands_once_where_the_default_partitioner_puts_its_key() -> None:
    """Records of many sizes, more than a staging buffer and a packing's worth, on two topics: each stored
    once, in the partition Kafka's default partitioner gives its key, unchanged; a full batch is cut."""
    producer = BatchProducer()
    publisher = DecisionPublisher(producer, linger_s=0.001)
    await publisher.start([TOPIC, "t.shadow"])
    rng = random.Random(3)
    offered: dict[bytes, bytes] = {}
    try:
        for i in range(3 * PACK_AT + 7):
            key = f"request-{i}-{rng.random()}".encode()
            value = bytes(rng.getrandbits(8) for _ in range(rng.choice([10, 900, 5_000]))) + key
            assert publisher.offer(TOPIC if i % 5 else "t.shadow", key, value)
            offered[key] = value
            if i % 100 == 0:
                await asyncio.sleep(0)  # the shipper runs between some of them
        big = [(f"big-{i}".encode(), bytes(STAGE_BYTES // 2)) for i in range(20)]  # fills the stage
        for key, value in big:
            assert publisher.offer(TOPIC, key, value)
            offered[key] = value
        assert await publisher.flush(5.0)
    finally:
        await publisher.stop(1.0)
    assert sorted(producer.stored) == sorted(offered.values())
    for topic, partition, key in producer.placed:
        assert partition == partition_for(key, 3), (topic, key)
        assert (topic == "t.shadow") == (key.startswith(b"request-") and int(key.split(b"-")[1]) % 5 == 0)
    assert publisher.pending == 0 and publisher.stats["published"] == len(offered)
    per_partition = Counter(p for _t, p, key in producer.placed if key.startswith(b"big-"))
    assert max(per_partition.values()) * STAGE_BYTES // 2 > 512 * 1024  # so a full batch was cut


async def test_offers_from_other_threads_under_the_lock_are_all_shipped() -> None:
    """Threads offering while the loop ships (the synchronous client's path): nothing lost or repeated, and
    the shipper, asleep with nothing queued, is woken from those threads."""
    producer = BatchProducer()
    publisher = DecisionPublisher(producer, linger_s=0.001)
    await publisher.start([TOPIC])

    def offer_many(thread: int) -> None:
        for i in range(2_000):
            with publisher.lock:
                assert publisher.offer(TOPIC, f"{thread}-{i}".encode(), f"{thread}-{i}".encode())
            if i % 500 == 0:
                threading.Event().wait(0.01)  # let the shipper empty everything, then wake it again

    try:
        await asyncio.gather(*(asyncio.to_thread(offer_many, t) for t in range(4)))
        assert await publisher.flush(5.0)
    finally:
        await publisher.stop(1.0)
    assert sorted(producer.stored) == sorted(f"{t}-{i}".encode() for t in range(4) for i in range(2_000))
    assert publisher.stats["published"] == 8_000
