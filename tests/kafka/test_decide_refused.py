"""On the real broker: a record batch of decisions the broker refuses (here: larger than the decisions topic's
``max.message.bytes``) stops the decide loop, and no requests offset is committed past a request whose decision
the broker did not acknowledge (the committer waits for every send of a step, in order, before its commit)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from banditroute.agents.decide import DecideLogic
from banditroute.client import build_request
from banditroute.codec import encode
from banditroute.kafka.admin import admin_client, create_topics, new_topic
from tests.kafka.helpers import producer
from tests.kafka.test_priority_lane import (
    PARTITIONS,
    committed_only_decided,
    decisions,
    service_for,
    start,
)

pytestmark = pytest.mark.kafka

FIRST = 2 * PARTITIONS
"""Requests of the first wave: a record batch of one or two decisions per partition, which the broker takes."""
FLOOD = 800
"""Requests of the second wave: their record batches hold tens of decisions, which the broker refuses."""


async def send_requests(bootstrap: str, topic: str, prefix: str, n: int) -> list[Any]:
    """Produce ``n`` chat requests keyed by their ids; returns (key, partition, offset) of each."""
    async with producer(bootstrap, acks="all") as prod:
        futures = []
        for i in range(n):
            rid = f"{prefix}-{i}"
            futures.append(
                await prod.send(topic, encode(build_request("chat", request_id=rid)), key=rid.encode())
            )
        sent = await asyncio.gather(*futures)
    return [
        SimpleNamespace(key=f"{prefix}-{i}".encode(), partition=m.partition, offset=m.offset)
        for i, m in enumerate(sent)
    ]


async def test_no_commit_passes_a_decision_the_broker_refused(
    kafka_bootstrap: str,
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    prefix = unique_prefix
    async with admin_client(kafka_bootstrap) as admin:
        await create_topics(
            admin,
            [
                new_topic(f"{prefix}.requests", PARTITIONS),
                new_topic(f"{prefix}.deadletter", PARTITIONS),
                # room for a few decisions per record batch, not for tens
                new_topic(f"{prefix}.decisions", PARTITIONS, {"max.message.bytes": "6000"}),
            ],
        )
    service = service_for(tmp_path, prefix, kafka_bootstrap, DecideLogic)
    task = await start(service)
    try:
        first = await send_requests(kafka_bootstrap, f"{prefix}.requests", "first", FIRST)
        deadline = time.monotonic() + 60
        while len(await decisions(kafka_bootstrap, prefix)) < FIRST:
            assert time.monotonic() < deadline and not task.done(), "the first wave was not decided"
            await asyncio.sleep(0.2)
        flood = await send_requests(kafka_bootstrap, f"{prefix}.requests", "flood", FLOOD)
        done, _ = await asyncio.wait({task}, timeout=60)
        assert done, "the decide loop went on although the broker refused its decisions"
        with pytest.raises(Exception):  # noqa: B017, PT011 - the refused send, or the committer's stop
            task.result()
    finally:
        service.stop()
        if not task.done():
            await task
    at = await committed_only_decided(kafka_bootstrap, prefix, first + flood)
    # the first wave is committed (the check above is not vacuous), the refused part of the flood is not
    assert sum(at.values()) >= FIRST
    assert len(await decisions(kafka_bootstrap, prefix)) < FIRST + FLOOD
