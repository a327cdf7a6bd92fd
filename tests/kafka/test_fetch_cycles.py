"""On the real broker: records a consumer fetched and then dropped unread (a paused partition, a seek: what the
worker's decisions reader does several times a second) are freed at once, not left as cyclic garbage for the
collector, which the worker runs rarely (kafka/fetch_cycles.py)."""

from __future__ import annotations

import gc

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from banditroute.kafka import fetch_cycles
from banditroute.memory_probe import cyclic_garbage
from tests.kafka.helpers import create_topics, producer

pytestmark = pytest.mark.kafka

BATCHES = 40
PER_BATCH = 50
READS = 60


async def test_dropped_fetches_leave_no_cyclic_garbage(kafka_bootstrap: str, unique_prefix: str) -> None:
    fetch_cycles.install()  # as the worker and the client do
    topic = f"{unique_prefix}.decisions"
    await create_topics(kafka_bootstrap, [topic])
    async with producer(kafka_bootstrap) as prod:
        for b in range(BATCHES):  # one record batch each: a fetch brings whole batches
            for i in range(PER_BATCH):
                await prod.send(topic, b"x" * 200, key=f"{b}/{i}".encode(), partition=0)
            await prod.flush()
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=64 * 1024
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        consumer.pause(tp)
        read = 0
        gc.collect()
        gc.disable()
        try:
            for _ in range(READS):
                # as the decisions reader reads between its own decisions (kafka/partition_reader.py): a few
                # records of a paused partition, the rest of the fetch dropped; then a seek past some more
                consumer.resume(tp)
                batch = await consumer.getmany(tp, timeout_ms=5000, max_records=3)
                consumer.pause(tp)
                read += len(batch.get(tp, []))
                consumer.seek(tp, await consumer.position(tp) + 7)
            freed = cyclic_garbage()
        finally:
            gc.enable()
    finally:
        await consumer.stop()
    assert read >= READS  # every read found records (the fetch was dropped with more in it)
    # only aiokafka's objects count: the collection also frees what other threads of this process dropped in
    # the meantime (a state view's plans and blocks, when an earlier test's plans thread ended during it)
    fetched = {name: n for name, n in freed.items() if name.startswith(("aiokafka.", "kafka."))}
    per_read = sum(fetched.values()) / READS
    # before the fix, each dropped fetch left ~8 objects (the PartitionRecords, its generator, a record, the
    # records list...) and the fetch response buffer they hold: 4 of them aiokafka's (~4.0 per read)
    assert per_read < 1.0, (fetched, freed.most_common(10))
