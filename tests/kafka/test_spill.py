"""On the real broker: the decide loop's spill topic (the priority lane's overflow, the worker's setting).

With the lane bounded to a few requests, a backlog of new task types does not stop reading: the overflow is
copied to ``<prefix>.requests-low`` and decided when the loop is idle, established requests behind it are
decided first, every request is decided exactly once, and both topics' committed offsets reach their ends. A
crash (the loop cancelled mid-way) loses nothing: the next owner decides every request. Requests waiting in the
spill topic get a share of every step, so traffic of new task types that never lets the lane empty does not hold
them back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from banditroute.agents.decide import DecideLogic
from banditroute.client import build_request
from banditroute.codec import encode
from banditroute.events import RoutingRequest
from banditroute.kafka import decide_service
from banditroute.kafka.decide_service import DecideService
from banditroute.kafka.spill import task_type_of
from banditroute.served import Decided, Served
from tests.kafka.helpers import create_topics, producer
from tests.kafka.router_world import read_all
from tests.kafka.test_priority_lane import (
    CHAT,
    JUNK,
    PARTITIONS,
    SlowOnJunk,
    decisions,
    prefill,
    service_for,
    start,
    start_until_chat_decided,
)

pytestmark = pytest.mark.kafka

LANE = 50
BUSY_LANE = 300
SPILLED = 50
STREAM_S = 3.0


@pytest.fixture(autouse=True)
def small_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lane of LANE requests, so that most of the backlog overflows into the spill topic."""
    monkeypatch.setattr(decide_service, "LANE_WITH_SPILL", (LANE, 1 << 20))


class SlowUntilStopped(SlowOnJunk):
    """``SlowOnJunk`` until ``fast`` is set."""

    fast = False

    def decide_encoded(self, request: RoutingRequest) -> tuple[Decided, Served | None]:
        return DecideLogic.decide_encoded(self, request) if self.fast else super().decide_encoded(request)


def spilling_service(
    tmp_path: Path, prefix: str, bootstrap: str, logic_type: type[DecideLogic]
) -> DecideService:
    return service_for(tmp_path, prefix, bootstrap, logic_type, spill_topic=f"{prefix}.requests-low")


async def prefill_with_spill(bootstrap: str, prefix: str) -> list[Any]:
    await create_topics(bootstrap, [f"{prefix}.requests-low"], PARTITIONS)
    await prefill(bootstrap, prefix)
    return await read_all(bootstrap, f"{prefix}.requests")


async def committed(bootstrap: str, prefix: str) -> dict[str, dict[int, int]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=f"{prefix}.decide", enable_auto_commit=False
    )
    await consumer.start()
    try:
        return {
            topic: {
                p: await consumer.committed(TopicPartition(f"{prefix}.{topic}", p)) or 0
                for p in range(PARTITIONS)
            }
            for topic in ("requests", "requests-low")
        }
    finally:
        await consumer.stop()


async def ends(bootstrap: str, topic: str) -> dict[int, int]:
    at = {p: 0 for p in range(PARTITIONS)}
    for r in await read_all(bootstrap, topic):
        at[r.partition] = r.offset + 1
    return at


async def until_all_decided(bootstrap: str, prefix: str, total: int) -> list[Any]:
    deadline = time.monotonic() + 90
    while True:
        seen = await decisions(bootstrap, prefix)
        if len({r.key for r in seen}) >= total:
            return seen
        assert time.monotonic() < deadline, f"{len(seen)} of {total} decided"
        await asyncio.sleep(0.5)


async def test_a_backlog_past_the_lane_is_spilled_decided_once_and_committed(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    prefix = unique_prefix
    requests = await prefill_with_spill(kafka_bootstrap, prefix)
    total = len(requests)
    service = spilling_service(tmp_path, prefix, kafka_bootstrap, DecideLogic)
    task = await start(service)
    try:
        seen = await until_all_decided(kafka_bootstrap, prefix, total)
        wanted = {
            "requests": await ends(kafka_bootstrap, f"{prefix}.requests"),
            "requests-low": await ends(kafka_bootstrap, f"{prefix}.requests-low"),
        }
        deadline = time.monotonic() + 30
        while await committed(kafka_bootstrap, prefix) != wanted:
            assert time.monotonic() < deadline, "the decide loop did not commit both topics to their ends"
            await asyncio.sleep(0.2)
    finally:
        service.stop()
        await task
    ids = Counter(orjson.loads(r.value)["request_id"] for r in seen)
    assert len(ids) == total and set(ids.values()) == {1}, "a request was lost or decided twice"
    spilled = sum(wanted["requests-low"].values())
    assert service.spilled_total == spilled > JUNK  # most of the backlog went through the spill topic
    assert service.lane.parked_total + spilled == 2 * JUNK  # chat was never parked nor spilled
    # the chat requests were read past the overflow and decided before most of the junk ahead of them
    last_chat = {r.partition: r.offset for r in seen if r.key.startswith(b"chat-")}
    earlier_after = sum(
        1
        for r in seen
        if r.key.startswith(b"junk-")
        and int(r.key.split(b"-")[1]) < JUNK
        and r.offset > last_chat[r.partition]
    )
    assert len(last_chat) == PARTITIONS and earlier_after >= JUNK // 2
    assert sum(1 for r in seen if r.key.startswith(b"chat-")) == CHAT


async def test_a_crash_while_spilling_loses_no_request(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    prefix = unique_prefix
    requests = await prefill_with_spill(kafka_bootstrap, prefix)
    total = len(requests)
    service = spilling_service(tmp_path, prefix, kafka_bootstrap, SlowOnJunk)
    task = await start_until_chat_decided(service)
    try:
        assert service.spilled_total > 0, "nothing spilled: the test lost its point"
    finally:
        task.cancel()  # a crash: no drain, no graceful stop
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(await decisions(kafka_bootstrap, prefix)) < total, "everything decided before the crash"
    restarted = spilling_service(tmp_path, prefix, kafka_bootstrap, DecideLogic)
    task = await start(restarted)
    try:
        seen = await until_all_decided(kafka_bootstrap, prefix, total)
    finally:
        restarted.stop()
        await task
    # every request has a decision; one copied twice (crash between the copy and the commit) may be decided
    # twice or dead-lettered as a duplicate, never lost
    assert {r.key for r in seen} == {r.key for r in requests}


async def test_without_the_spill_topic_the_loop_decides_everything_with_the_old_bound(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """A worker upgraded over topics made before the spill (or run without topic creation): the loop must not
    fail at start for want of ``requests-low``; it keeps the lane's old bound and spills nothing."""
    prefix = unique_prefix
    await prefill(kafka_bootstrap, prefix)  # no requests-low topic
    total = len(await read_all(kafka_bootstrap, f"{prefix}.requests"))
    service = spilling_service(tmp_path, prefix, kafka_bootstrap, DecideLogic)
    task = await start(service)
    try:
        seen = await until_all_decided(kafka_bootstrap, prefix, total)
    finally:
        service.stop()
        await task
    assert service.spilled_total == 0 and service.lane.max_requests == decide_service.LOW_LANE_MAX
    ids = Counter(orjson.loads(r.value)["request_id"] for r in seen)
    assert len(ids) == total and set(ids.values()) == {1}


def test_task_type_of_reads_only_a_string_task_type_within_the_size_bound() -> None:
    assert task_type_of(b'{"task_type": "junk-1", "x": [1]}', 100) == "junk-1"
    assert task_type_of(b'{"task_type": "junk-1"}', 10) is None  # too large: the full path dead-letters it
    for raw in (b"", b"not json", b"[1]", b'{"task_type": 3}', b'{"request_id": "r"}', None):
        assert task_type_of(raw, 100) is None


async def test_spilled_requests_get_their_share_while_new_task_types_keep_coming(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sustained traffic of new task types keeps the lane from ever emptying; requests waiting in the spill
    topic must still be decided meanwhile (a guaranteed share per step), not only once the traffic stops (or
    never, if it outlasts the spill topic's retention)."""
    monkeypatch.setattr(decide_service, "LANE_WITH_SPILL", (10_000, 8 << 20))  # the traffic never spills
    prefix = unique_prefix
    await create_topics(
        kafka_bootstrap,
        [f"{prefix}.{t}" for t in ("requests", "requests-low", "decisions", "deadletter")],
        PARTITIONS,
    )
    service = spilling_service(tmp_path, prefix, kafka_bootstrap, SlowUntilStopped)
    logic = service.logic
    assert isinstance(logic, SlowUntilStopped)
    service.own_thread = True  # the slow junk decisions must not hold up this loop's producer
    service.max_batch = BUSY_LANE // 3  # polls smaller than the lane: no one step could empty it
    task = await start(service)
    waiting = [f"waiting-{i}" for i in range(SPILLED)]
    try:
        async with producer(kafka_bootstrap) as prod:
            i = 0
            stream_end: float | None = None
            while stream_end is None or time.monotonic() < stream_end:
                for _ in range(50):  # junk at ~1,000/s, twice what SlowOnJunk decides: the lane grows
                    rid = f"junk-{i}"
                    i += 1
                    request = build_request(f"junk-{uuid.uuid4().hex}", request_id=rid)
                    await prod.send(f"{prefix}.requests", encode(request), key=rid.encode())
                await asyncio.sleep(0.05)
                if stream_end is None and len(service.lane) >= BUSY_LANE:
                    # requests spilled earlier, waiting behind a lane that no longer empties
                    for rid in waiting:
                        request = build_request(f"new-{uuid.uuid4().hex}", request_id=rid)
                        await prod.send(f"{prefix}.requests-low", encode(request), key=rid.encode())
                    stream_end = time.monotonic() + STREAM_S
                assert i < 20_000, "the lane never filled: the test lost its point"
            await prod.flush()
        decided = {r.key.decode() for r in await decisions(kafka_bootstrap, prefix)}
        assert service.lane, "the lane emptied: the traffic was not sustained and the test lost its point"
    finally:
        logic.fast = True  # so that the stop drains the lane at once
        service.stop()
        await task
    late = [rid for rid in waiting if rid not in decided]
    assert not late, f"{len(late)} of {SPILLED} spilled requests undecided after {STREAM_S} s of traffic"
