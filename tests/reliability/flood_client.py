"""The flooding client of ``test_flood.py``, in a process of its own (another client, as in a deployment).

``python -m tests.reliability.flood_client BOOTSTRAP PREFIX N SEED`` produces ``N`` requests, each with its own
random task type and no tenant, as fast as it can, and answers every tenth of their decisions with feedback;
it prints one JSON line ``{"seen": ..., "answered": ...}`` once all ``N`` decisions were read (or after 400 s).

Run in the test's own event loop, the flood's tight produce loop held that loop for up to a second at a time,
and the normal workload's round trips, measured in the same loop, counted that wait as the router's.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.kafka.router_world import feedback_for

ANSWER_EVERY = 10
DEADLINE_S = 400.0


async def flood_requests(bootstrap: str, prefix: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1)
    await producer.start()
    try:
        now = datetime.now(UTC).isoformat()
        for i in range(n):
            rid = f"flood-{i}-{uuid.uuid4().hex[:8]}"
            doc = {
                "schema_version": 1,
                "request_id": rid,
                "task_type": f"junk-{uuid.uuid4().hex}",
                "created_at": now,
            }
            await producer.send(f"{prefix}.requests", key=rid.encode(), value=orjson.dumps(doc))
        await producer.flush()
    finally:
        await producer.stop()


async def answer_flood(bootstrap: str, prefix: str, n: int, rng: np.random.Generator) -> tuple[int, int]:
    """Feedback for every tenth flood decision; returns (flood decisions seen, feedback sent)."""
    consumer = AIOKafkaConsumer(
        f"{prefix}.decisions",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1)
    await consumer.start()
    await producer.start()
    seen = sent = 0
    deadline = time.monotonic() + DEADLINE_S
    try:
        while seen < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                for rec in records:
                    if not rec.value or not rec.key or not rec.key.startswith(b"flood-"):
                        continue
                    seen += 1
                    if seen % ANSWER_EVERY == 0:
                        fb = feedback_for(orjson.loads(rec.value), rng)
                        await producer.send(f"{prefix}.feedback", key=rec.key, value=orjson.dumps(fb))
                        sent += 1
        await producer.flush()
    finally:
        await consumer.stop()
        await producer.stop()
    return seen, sent


async def main(bootstrap: str, prefix: str, n: int, seed: int) -> None:
    answering = asyncio.create_task(answer_flood(bootstrap, prefix, n, np.random.default_rng(seed)))
    await flood_requests(bootstrap, prefix, n)
    seen, sent = await answering
    print(orjson.dumps({"seen": seen, "answered": sent}).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
