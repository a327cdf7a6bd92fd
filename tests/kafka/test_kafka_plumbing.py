"""kafka/'s small helpers on the real broker: the topic reader, committed lag, keyed writes, topic admin."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import GroupCoordinatorNotAvailableError

from banditroute.kafka.admin import (
    admin_client,
    delete_topics_with_prefix,
    ensure_topics,
    new_topic,
    wait_for_topics,
)
from banditroute.kafka.lag import LagProbe
from banditroute.kafka.outbox import Outbox
from banditroute.kafka.topic_reader import TopicReader
from banditroute.kafka.topics import partition_for, read_topic, write_keyed
from banditroute.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


async def _send(bootstrap: str, topic: str, keys: list[str]) -> None:
    outbox = Outbox(bootstrap, {})
    try:
        for key in keys:
            await outbox.send(topic, key.encode(), orjson.dumps({"k": key}))
        assert await outbox.drain() == len(keys)
    finally:
        await outbox.stop()


async def _fetch_all(reader: TopicReader, want: int) -> list[str]:
    got: list[str] = []
    for _ in range(100):
        for records in (await reader.fetch(timeout_ms=100)).values():
            got.extend(orjson.loads(r.value)["k"] for r in records)
        if len(got) >= want:
            break
    return got


async def test_topic_reader_from_the_end_sees_only_newer_records_and_from_the_beginning_all(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    topic = f"{unique_prefix}.decisions"
    await ensure_topics(kafka_bootstrap, None, [new_topic(topic, 3)])
    await _send(kafka_bootstrap, topic, [f"old{i}" for i in range(9)])
    async with TopicReader(kafka_bootstrap, topic) as tail:
        await _send(kafka_bootstrap, topic, [f"new{i}" for i in range(6)])
        assert sorted(await _fetch_all(tail, 6)) == sorted(f"new{i}" for i in range(6))
        assert await tail.fetch(timeout_ms=300) == {}
    everything = await TopicReader(kafka_bootstrap, topic, start_at="beginning").start()
    try:
        assert len(await _fetch_all(everything, 15)) == 15
    finally:
        await everything.stop()
    with pytest.raises(LookupError, match="does not exist"):
        await TopicReader(kafka_bootstrap, f"{unique_prefix}.nosuch").start()


async def test_topic_reader_raw_hands_over_the_record_batches_own_records(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    topic = f"{unique_prefix}.decisions"
    await ensure_topics(kafka_bootstrap, None, [new_topic(topic, 2)])
    keys = [f"k{i}" for i in range(12)]
    await _send(kafka_bootstrap, topic, keys)
    reader = await TopicReader(kafka_bootstrap, topic, start_at="beginning", raw=True).start()
    try:
        got: dict[bytes, tuple[bytes, int]] = {}
        for _ in range(100):
            for records in (await reader.fetch(timeout_ms=100)).values():
                for record in records:
                    assert not hasattr(record, "topic")  # the batch's own record, not a ConsumerRecord
                    got[record.key] = (record.value, record.timestamp)
            if len(got) >= len(keys):
                break
    finally:
        await reader.stop()
    assert sorted(got) == sorted(key.encode() for key in keys)
    for key, (value, timestamp) in got.items():
        assert orjson.loads(value) == {"k": key.decode()}
        assert timestamp > 1_600_000_000_000  # milliseconds since the epoch


async def test_lag_probe_counts_what_a_group_has_not_committed(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    topic, group = f"{unique_prefix}.requests", f"{unique_prefix}.decide"
    await ensure_topics(kafka_bootstrap, None, [new_topic(topic, 2)])
    await _send(kafka_bootstrap, topic, [f"r{i}" for i in range(10)])
    groups = {group: [topic], f"{unique_prefix}.other": [f"{unique_prefix}.missing"]}
    async with LagProbe(kafka_bootstrap) as probe:
        for _ in range(100):  # a fresh broker has no group coordinator until __consumer_offsets exists
            try:
                first = await probe.lag(groups)
                break
            except GroupCoordinatorNotAvailableError:
                await asyncio.sleep(0.2)
        assert first == {(group, topic): 10}  # nothing committed; a missing topic left out
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            ends = await consumer.end_offsets([tp])
            await consumer.commit({tp: ends[tp]})  # partition 0 done, partition 1 not
        finally:
            await consumer.stop()
        assert await probe.lag(groups) == {(group, topic): 10 - ends[tp]}


async def test_write_keyed_places_records_like_the_tables_and_admin_helpers_wait_and_delete(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=unique_prefix)
    topic = settings.topic("state")
    waiting = asyncio.create_task(wait_for_topics(kafka_bootstrap, None, [topic], 30.0))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await ensure_topics(kafka_bootstrap, None, [new_topic(topic, 4)])
    await waiting
    keys = [orjson.dumps(f"task{i}") for i in range(8)]
    assert await write_keyed(settings, topic, [(k, None) for k in keys]) == 8
    placed = {bytes(r.key): r.partition async for r in read_topic(settings, topic)}
    assert placed == {k: partition_for(k, 4) for k in keys}
    with pytest.raises(ChildProcessError):
        await wait_for_topics(kafka_bootstrap, None, [f"{unique_prefix}.never"], 30.0, alive=lambda: False)
    with pytest.raises(TimeoutError):
        await wait_for_topics(kafka_bootstrap, None, [f"{unique_prefix}.never"], 0.3)
    assert await delete_topics_with_prefix(kafka_bootstrap, None, unique_prefix) == [topic]
    async with admin_client(kafka_bootstrap) as admin:
        assert topic not in await admin.list_topics()
