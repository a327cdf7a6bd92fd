"""On the real broker: a consumer marked ``raw_records`` (kafka/raw_fetch.py, the decide loop's) gets the records
aiokafka's own path gives, and the same position after every poll, where the generated batches of
tests/test_raw_fetch.py do not reach: gzip-compressed batches read from a position inside them, transactions
committed and aborted (their markers are control batches), fetches cut inside a batch, null values and headers;
under read_committed (aborted batches skipped) the marker leaves the consumer to aiokafka."""

from __future__ import annotations

import random
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from banditroute.kafka import raw_fetch
from tests.kafka.helpers import create_topics, producer

pytestmark = pytest.mark.kafka

Polls = list[tuple[list[tuple[int, bytes | None, bytes | None, list[Any]]], int]]


async def _fill(bootstrap: str, topic: str, rng: random.Random) -> None:
    async with (
        producer(bootstrap, compression_type="gzip") as plain,
        producer(bootstrap, compression_type="gzip", transactional_id=f"{topic}-tx") as tx,
    ):
        for _ in range(16):
            sender = tx if rng.random() < 0.5 else plain
            if sender is tx:
                await tx.begin_transaction()
            for i in range(rng.randint(1, 25)):
                value = rng.choice([None, b"", b"v" * rng.randint(1, 400)])
                headers = [("h", b"x")] if rng.random() < 0.3 else None
                await sender.send(topic, value, key=f"k{i}".encode(), partition=0, headers=headers)
            if sender is tx:
                await (tx.abort_transaction() if rng.random() < 0.5 else tx.commit_transaction())
            else:
                await plain.flush()


async def _read(
    bootstrap: str, topic: str, start: int, limits: list[int], deserializer: Any, isolation: str
) -> Polls:
    """Every non-empty poll from ``start`` to the end: its records and the position after it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        value_deserializer=deserializer,
        isolation_level=isolation,
        max_partition_fetch_bytes=1500,  # fetches end inside batches
    )
    await consumer.start()
    tp = TopicPartition(topic, 0)
    polls: Polls = []
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        end = (await consumer.end_offsets([tp]))[tp]
        for i in range(2000):
            got = await consumer.getmany(tp, timeout_ms=1000, max_records=limits[i % len(limits)])
            records = [(r.offset, r.key, r.value, list(r.headers)) for r in got.get(tp, [])]
            position = await consumer.position(tp)
            if records:
                polls.append((records, position))
            if position >= end:
                break
    finally:
        await consumer.stop()
    return polls


async def test_raw_records_are_aiokafka_records_on_the_broker(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    assert raw_fetch.install()
    topic = f"{unique_prefix}.requests"
    await create_topics(kafka_bootstrap, [topic])
    rng = random.Random(15)
    await _fill(kafka_bootstrap, topic, rng)
    for start in (0, rng.randint(1, 60), rng.randint(60, 150)):
        limits = [rng.choice([1, 3, 17, 500]) for _ in range(4)]
        for isolation in ("read_uncommitted", "read_committed"):
            mine = await _read(kafka_bootstrap, topic, start, limits, raw_fetch.raw_records, isolation)
            theirs = await _read(kafka_bootstrap, topic, start, limits, None, isolation)
            assert mine == theirs, (start, limits, isolation)
            assert mine  # every read found records
