"""On the real broker: a PartitionReader starts each partition where its own group committed, else where the seed
group (faust's, which read the topic before the reader did) committed, else at the earliest offset; it commits
what its handler returned from."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from banditroute.kafka.partition_reader import PartitionReader
from tests.kafka.helpers import create_topics, producer

pytestmark = pytest.mark.kafka


async def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets])
        await consumer.commit({TopicPartition(topic, p): o for p, o in offsets.items()})
    finally:
        await consumer.stop()


async def _read(bootstrap: str, topic: str, group: str, seed: str) -> list[tuple[int, int]]:
    """(partition, offset) of every record a reader of both partitions reads up to the end."""
    seen: list[tuple[int, int]] = []

    async def handle(records: list[object]) -> None:
        seen.extend((r.partition, r.offset) for r in records)  # type: ignore[attr-defined]

    reader = PartitionReader(
        handle, bootstrap=bootstrap, topic=topic, group_id=group, security={}, seed_group=seed
    )
    task = asyncio.ensure_future(reader.run())
    try:
        await reader.assign([0, 1])
        await asyncio.wait_for(reader.caught_up.wait(), 30)
    finally:
        await reader.assign(())  # after the batch in hand is handled and committed
        reader.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
    return seen


async def test_reader_starts_at_own_then_seed_then_earliest(kafka_bootstrap: str, unique_prefix: str) -> None:
    topic = f"{unique_prefix}.fb"
    await create_topics(kafka_bootstrap, [topic], partitions=2)
    async with producer(kafka_bootstrap) as prod:
        for partition in (0, 1):
            for i in range(10):
                await prod.send(topic, f"{partition}/{i}".encode(), partition=partition)
        await prod.flush()
    seed, own = f"{unique_prefix}-faust", f"{unique_prefix}-own"
    await _commit(kafka_bootstrap, seed, topic, {0: 4})  # faust read partition 0 up to 4, nothing of 1
    first = await _read(kafka_bootstrap, topic, own, seed)
    assert sorted(first) == [(0, o) for o in range(4, 10)] + [(1, o) for o in range(10)]
    # the reader's own commit wins over the seed from then on: nothing is read again
    async with producer(kafka_bootstrap) as prod:
        await prod.send(topic, b"0/10", partition=0)
        await prod.flush()
    assert await _read(kafka_bootstrap, topic, own, seed) == [(0, 10)]
