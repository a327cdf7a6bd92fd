"""The heartbeat lease on the real broker: a group member's answered sync and heartbeats confirm it
(``kafka/fence.py``).
A member that lost its partitions without noticing is tests/reliability/test_stalled_worker.py."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer

from banditroute.kafka.fence import ANSWERED, Lease
from tests.kafka.helpers import create_topics

pytestmark = pytest.mark.kafka


async def test_answered_heartbeats_keep_a_group_members_lease(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    topic = f"{unique_prefix}.fenced"
    await create_topics(kafka_bootstrap, [topic])
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{unique_prefix}.fence",
        session_timeout_ms=6000,
        heartbeat_interval_ms=2000,
    )
    lease = Lease(lambda: consumer._coordinator, 6.0, Counter())
    assert lease.installed
    await consumer.start()
    try:
        deadline = time.monotonic() + 60
        while not consumer.assignment() and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200)
        assert consumer.assignment()
        coordinator = consumer._coordinator
        assert lease.valid(coordinator)  # the group's sync answered: no wait for the first heartbeat
        await asyncio.wait_for(lease.hold(), 0.1)
        generation, member, sent = coordinator.__dict__[ANSWERED]
        assert (generation, member) == (coordinator.generation, coordinator.member_id)
        await asyncio.sleep(2.5)  # heartbeats go on: the lease stays fresh
        assert coordinator.__dict__[ANSWERED][2] > sent and lease.valid(coordinator)
    finally:
        await consumer.stop()
