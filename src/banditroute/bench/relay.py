"""The ceiling of the decide path: a raw aiokafka consume -> orjson -> produce relay with no routing.

It runs the same loop shape as :class:`banditroute.kafka.decide_service.DecideService` (``getmany`` batches,
one record batch per output partition, commit after the batch is acknowledged, the same consumer and producer
settings; it does not pipeline the commit of one batch with the next, the router does),
but its "decision" is a small dict built from the parsed request. ``python -m banditroute.bench.relay
BOOTSTRAP PREFIX`` reads ``PREFIX.requests`` and writes ``PREFIX.decisions`` until SIGTERM; ``python -m
banditroute.bench.relay decide BOOTSTRAP PREFIX`` runs the worker's decide loop alone the same way (the
part of the worker between the relay and the full router: validation, routing, the decision event).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from banditroute.kafka.decide_service import CONSUMER_TUNING, PRODUCER_TUNING
from banditroute.kafka.outbox import PartitionBatches


async def relay(bootstrap: str, prefix: str, stop: asyncio.Event, max_batch: int = 2000) -> int:
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
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=max_batch)
            if not batch:
                continue
            out = PartitionBatches(producer)
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


async def decide_only(bootstrap: str, prefix: str, stop: asyncio.Event) -> None:
    """The worker's :class:`DecideService` alone (no faust app, no join or learn), on the same topics.

    The model catalog and policy come from ``BANDITROUTE_CONFIG_DIR``; the state view stays empty (priors).
    """
    import numpy as np

    from banditroute.agents.decide import DecideLogic, StateView
    from banditroute.codec import DeadLetterCounter
    from banditroute.config import Registry, RouterConfig
    from banditroute.kafka.decide_service import DecideService
    from banditroute.settings import Settings

    settings = Settings()
    registry = Registry(RouterConfig.load(settings.config_dir), settings.config_dir)
    service = DecideService(
        DecideLogic(registry, StateView(), np.random.default_rng(1), worker_id="bench-decide-only"),
        bootstrap=bootstrap,
        requests_topic=f"{prefix}.requests",
        decisions_topic=f"{prefix}.decisions",
        deadletter_topic=f"{prefix}.deadletter",
        group_id=f"{prefix}.decide",
        security={},
        max_payload_bytes=settings.max_payload_bytes,
        dead_letters=DeadLetterCounter(),
    )
    task = asyncio.create_task(service.run())
    await stop.wait()
    service.stop()
    await task


def main(argv: list[str]) -> None:
    """``relay BOOTSTRAP PREFIX`` or ``decide BOOTSTRAP PREFIX``."""
    mode, bootstrap, prefix = (argv[0], argv[1], argv[2]) if len(argv) == 3 else ("relay", argv[0], argv[1])

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if mode == "decide":
            await decide_only(bootstrap, prefix, stop)
        else:
            await relay(bootstrap, prefix, stop)

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1:])
