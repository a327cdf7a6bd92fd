"""The client's Kafka clients: its producer and the reader of its private reply topic.

:class:`~banditroute.router_client.RouterClient` keeps the request-reply logic; the aiokafka calls are here
(``kafka/`` owns every Kafka client).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from banditroute.kafka.admin import admin_client, create_topics, new_topic
from banditroute.kafka.admin import ensure_topics as admin_ensure_topics
from banditroute.kafka.record_batch import MAX_BATCH_BYTES
from banditroute.kafka.topics import partitions_of
from banditroute.settings import Settings
from banditroute.topics import layout

log = logging.getLogger("banditroute.client")

REPLY_RETENTION_MS = 60 * 60 * 1000


def topic_layout(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """Full topic name -> (partitions, topic configs) for the default topics (``topics.DEFAULT_TOPICS``)."""
    return layout(settings.topic, settings.partitions, settings.state_partitions)


async def ensure_topics(settings: Settings, suffixes: Iterable[str], *, timeout_s: float = 10.0) -> None:
    """Create the named default topics if missing, with the worker's layout (bounded by ``timeout_s``).

    A topic created concurrently by a worker or another client is fine; any other refusal raises
    :class:`~banditroute.kafka.admin.TopicCreationError` with the broker's message."""
    wanted = topic_layout(settings)
    names = [settings.topic(s) for s in suffixes]
    topics = [new_topic(n, *wanted[n]) for n in names]
    await asyncio.wait_for(
        admin_ensure_topics(settings.kafka_bootstrap, settings.aiokafka_security(), topics), timeout_s
    )


async def create_client_topics(
    settings: Settings, client_id: str, suffixes: Iterable[str], reply_topic: str | None
) -> None:
    """Create the default topics ``suffixes`` (worker layout) and the private ``reply_topic`` where missing."""
    topics = topic_layout(settings)
    wanted = [new_topic(n, *topics[n]) for n in map(settings.topic, suffixes)]
    if reply_topic is not None:
        # max.message.bytes: the worker's batches of replies, whatever the broker's default (it refuses less)
        configs = {"retention.ms": str(REPLY_RETENTION_MS), "max.message.bytes": str(MAX_BATCH_BYTES)}
        wanted.append(new_topic(reply_topic, 1, configs))
    async with admin_client(
        settings.kafka_bootstrap, settings.aiokafka_security(), client_id=client_id
    ) as admin:
        await create_topics(admin, wanted)


async def produce_records(settings: Settings, topic: str, records: Iterable[tuple[bytes, bytes]]) -> None:
    """Produce ``(key, value)`` records with the default partitioner and wait for every acknowledgement."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, linger_ms=5, **settings.aiokafka_security()
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def delete_topic(settings: Settings, topic: str) -> None:
    async with admin_client(settings.kafka_bootstrap, settings.aiokafka_security()) as admin:
        await admin.delete_topics([topic])


async def start_producer(settings: Settings, client_id: str, request_timeout_s: float) -> AIOKafkaProducer:
    """A started producer for requests, feedback and (local mode) decisions."""
    from banditroute.kafka import backoff

    backoff.install()  # no busy metadata loop while the broker is down (see kafka/backoff.py)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        linger_ms=1,
        request_timeout_ms=max(1000, int(request_timeout_s * 1000)),
        max_batch_size=512 * 1024,
        **settings.aiokafka_security(),
    )
    await producer.start()
    return producer


class ReplyReader:
    """Reads every record produced to ``topic`` after :meth:`start` and hands each value to ``on_value``."""

    def __init__(self, settings: Settings, client_id: str, topic: str) -> None:
        self.topic = topic
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=20,
            **settings.aiokafka_security(),
        )

    async def start(self) -> None:
        consumer = self._consumer
        await consumer.start()
        parts = await partitions_of(consumer, self.topic, require_leader=True)
        while not parts:  # a just-created topic takes a moment to appear in metadata and elect a leader
            await asyncio.sleep(0.05)
            parts = await partitions_of(consumer, self.topic, require_leader=True)
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the position now: every reply produced after start() is read
            await consumer.position(tp)

    async def run(self, on_value: Callable[[bytes | None], None]) -> None:
        consumer = self._consumer
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep reading through transient broker errors
                log.warning("reading replies failed: %s", exc)
                await asyncio.sleep(0.2)
                continue
            for records in batch.values():
                for record in records:
                    on_value(record.value)

    async def stop(self) -> None:
        await self._consumer.stop()


__all__ = [
    "REPLY_RETENTION_MS",
    "ReplyReader",
    "create_client_topics",
    "delete_topic",
    "ensure_topics",
    "produce_records",
    "start_producer",
    "topic_layout",
]
