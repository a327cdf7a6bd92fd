"""The ceiling of the decide path: a raw consume -> orjson -> produce relay with no routing.

It runs the same loop shape as :class:`banditroute.kafka.decide_service.DecideService` (``getmany`` batches,
one record batch per output partition, commit after the batch is acknowledged, the same consumer and producer
settings; it does not pipeline the commit of one batch with the next, the router does), but its "decision" is
a small dict built from the parsed request (``pad_bytes`` adds a ``"pad"`` field of that many characters, so that
the relay writes records as large as the router's: ``python -m banditroute.bench.record_size``).
``banditroute bench e2e`` runs it (``python -m banditroute.bench.relay``) to measure what the router costs on top
of Kafka itself.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from banditroute.kafka.decide_service import CONSUMER_TUNING, PRODUCER_TUNING
from banditroute.kafka.outbox import PartitionBatches


async def relay(
    bootstrap: str, prefix: str, stop: asyncio.Event, max_batch: int = 2000, pad_bytes: int = 0
) -> int:
    consumer = AIOKafkaConsumer(
        f"{prefix}.requests",
        bootstrap_servers=bootstrap,
        group_id=f"{prefix}.relay",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_batch,
        **CONSUMER_TUNING,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **PRODUCER_TUNING)
    await producer.start()
    await consumer.start()
    topic = f"{prefix}.decisions"
    relayed = 0
    pad = "x" * pad_bytes
    sizes: dict[tuple[str, int], int] = {}  # each partition's last batch size, as the decide loop keeps them
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=max_batch)
            if not batch:
                continue
            out = PartitionBatches(producer, sizes=sizes)
            offsets: dict[TopicPartition, int] = {}
            now = time.time()
            for tp, records in batch.items():
                for record in records:
                    request = orjson.loads(record.value)
                    decision = {
                        "request_id": request["request_id"],
                        "task_type": request["task_type"],
                        "at": now,
                    }
                    if pad:  # one test per record: the reference stays the plain relay otherwise
                        decision["pad"] = pad
                    await out.add(topic, record.partition, record.key, orjson.dumps(decision))
                    relayed += 1
                offsets[tp] = records[-1].offset + 1
            await asyncio.gather(*await out.submit())
            await consumer.commit(offsets)
    finally:
        await producer.flush()
        await consumer.stop()
        await producer.stop()
    return relayed


__all__ = ["relay"]
