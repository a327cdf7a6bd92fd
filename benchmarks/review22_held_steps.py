"""review22: acknowledged steps held by the decide committer wait for the acknowledgement of the round it is
settling when the interval passes (docs/guarantees.md, "The decide loop's commit interval").

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:PORT python benchmarks/review22_held_steps.py

Runs ``DecideService._commit_in_order`` alone on a real consumer (its commits go to the broker) with two steps:
the first acknowledged at once, the second (10 ms later) after 1 s; interval 50 ms. Prints each commit's time
and offsets: on main, one commit at about +1.0 s, covering both."""

import asyncio
import os
import time
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from banditroute.codec import DeadLetterCounter
from banditroute.kafka.decide_service import DecideService

B = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


async def main():
    topic = f"r22b1-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=B)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    svc = DecideService(
        None,
        bootstrap=B,
        requests_topic=topic,
        decisions_topic=topic,
        deadletter_topic=topic,
        group_id=topic,
        security={},
        max_payload_bytes=65536,
        dead_letters=DeadLetterCounter(),
        commit_interval_ms=50,
        own_thread=False,
    )
    consumer = AIOKafkaConsumer(bootstrap_servers=B, group_id=topic, enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    commits = []
    orig = svc._commit_and_hand_over

    async def timed(c, offsets, handoffs):
        await orig(c, offsets, handoffs)
        commits.append((time.monotonic(), dict(offsets)))

    svc._commit_and_hand_over = timed
    loop = asyncio.get_running_loop()
    q = asyncio.Queue(4)
    committer = asyncio.create_task(svc._commit_in_order(consumer, q))
    t0 = time.monotonic()
    acked = loop.create_future()
    acked.set_result(None)
    q.put_nowait(([acked], {tp: 10}, None))  # step 1: acknowledged at once
    await asyncio.sleep(0.01)
    slow = loop.create_future()
    q.put_nowait(([slow], {tp: 20}, None))  # step 2: its acknowledgement takes 1 s
    loop.call_later(1.0, slow.set_result, None)
    await asyncio.sleep(1.5)
    q.put_nowait(None)
    await committer
    for at, off in commits:
        print(f"commit at +{at - t0:.3f} s: {off}")
    await consumer.stop()


asyncio.run(main())
