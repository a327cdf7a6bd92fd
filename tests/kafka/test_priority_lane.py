"""On the real broker: the decide loop's priority lane (``priority_lane``, the worker's setting).

Requests of established task types (listed in policy.yaml, or holding state under ``max_task_types``) read
behind a backlog of new task types are decided before that backlog; every request is still decided exactly
once; and a partition's committed offset never passes a request that is parked and not yet decided, so a
crash re-decides parked requests instead of losing them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from banditroute.agents.decide import DecideLogic, StateView
from banditroute.client import build_request
from banditroute.codec import DeadLetterCounter, encode
from banditroute.config import Registry, RouterConfig
from banditroute.events import RoutingRequest
from banditroute.kafka.decide_service import DecideService
from banditroute.served import Decided, Served
from tests.kafka.helpers import create_topics, producer
from tests.kafka.router_world import read_all

pytestmark = pytest.mark.kafka

PARTITIONS = 4
S = TypeVar("S", bound=DecideService)

MODELS = "models:\n  - {name: small, cost_per_call_usd: 0.001}\n  - {name: large, cost_per_call_usd: 0.01}\n"
POLICY = "task_types:\n  chat: {}\nlimits: {max_task_types: 10}\n"
JUNK = 3000
CHAT = 40


class SlowOnJunk(DecideLogic):
    """The production logic, taking 2 ms per junk decision (so that parked requests are still parked)."""

    def decide_encoded(self, request: RoutingRequest) -> tuple[Decided, Served | None]:
        if request.task_type.startswith("junk-"):
            time.sleep(0.002)
        return super().decide_encoded(request)


def decide_loop(
    tmp_path: Path,
    prefix: str,
    bootstrap: str,
    service_type: type[S],
    logic_type: type[DecideLogic] = DecideLogic,
    policy: str | None = None,
    **kwargs: Any,
) -> S:
    """A decide loop on ``prefix``'s requests, decisions and dead-letter topics with ``MODELS`` (and ``policy``),
    not on a thread of its own unless ``own_thread`` is given; ``kwargs`` go to the service."""
    (tmp_path / "models.yaml").write_text(MODELS)
    if policy is not None:
        (tmp_path / "policy.yaml").write_text(policy)
    kwargs.setdefault("own_thread", False)
    return service_type(
        logic_type(Registry(RouterConfig.load(tmp_path)), StateView(), np.random.default_rng(3)),
        bootstrap=bootstrap,
        requests_topic=f"{prefix}.requests",
        decisions_topic=f"{prefix}.decisions",
        deadletter_topic=f"{prefix}.deadletter",
        group_id=f"{prefix}.decide",
        security={},
        max_payload_bytes=65536,
        dead_letters=DeadLetterCounter(),
        **kwargs,
    )


def service_for(
    tmp_path: Path,
    prefix: str,
    bootstrap: str,
    logic_type: type[DecideLogic],
    spill_topic: str | None = None,
) -> DecideService:
    return decide_loop(
        tmp_path,
        prefix,
        bootstrap,
        DecideService,
        logic_type,
        policy=POLICY,
        follow=True,
        priority_lane=True,
        spill_topic=spill_topic,
    )


async def start(service: DecideService) -> asyncio.Task[None]:
    task = asyncio.create_task(service.run())
    deadline = time.monotonic() + 30
    while True:
        try:
            await service.assign(range(PARTITIONS))
            return task
        except RuntimeError:  # not running yet
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.05)


async def start_until_chat_decided(service: DecideService) -> asyncio.Task[None]:
    """Start ``service`` and return once it has decided every chat request (the junk is still in progress)."""
    chat: list[str] = []
    service.on_decisions = lambda batch: chat.extend(
        orjson.loads(text)["request_id"] for task_type, _m, _c, _ms, text in batch if task_type == "chat"
    )
    task = await start(service)
    deadline = time.monotonic() + 60
    while len(chat) < CHAT:
        assert time.monotonic() < deadline and not task.done(), "the chat requests were not decided"
        await asyncio.sleep(0.01)
    return task


async def prefill(bootstrap: str, prefix: str) -> None:
    """JUNK requests of new task types, then CHAT chat requests, then JUNK more of new task types."""
    await create_topics(
        bootstrap, [f"{prefix}.{t}" for t in ("requests", "decisions", "deadletter")], PARTITIONS
    )
    names = [f"junk-{uuid.uuid4().hex}" for _ in range(JUNK)] + ["chat"] * CHAT
    names += [f"junk-{uuid.uuid4().hex}" for _ in range(JUNK)]
    async with producer(bootstrap) as prod:
        futures = []
        for i, name in enumerate(names):
            rid = f"{name[:4]}-{i}"
            futures.append(
                await prod.send(
                    f"{prefix}.requests", encode(build_request(name, request_id=rid)), key=rid.encode()
                )
            )
        await asyncio.gather(*futures)


async def decisions(bootstrap: str, prefix: str) -> list[Any]:
    return [r for r in await read_all(bootstrap, f"{prefix}.decisions") if r.value]


async def committed(bootstrap: str, prefix: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=f"{prefix}.decide", enable_auto_commit=False
    )
    await consumer.start()
    try:
        return {
            p: await consumer.committed(TopicPartition(f"{prefix}.requests", p)) or 0
            for p in range(PARTITIONS)
        }
    finally:
        await consumer.stop()


async def committed_only_decided(bootstrap: str, prefix: str, requests: list[Any]) -> dict[int, int]:
    """Assert that no partition's committed offset passes a request without a decision; returns the offsets."""
    at = await committed(bootstrap, prefix)
    decided = {r.key for r in await decisions(bootstrap, prefix)}
    for r in requests:
        if r.offset < at[r.partition]:
            assert r.key in decided, f"request at {r.partition}/{r.offset} committed without a decision"
    return at


async def a_restart_decides_every_request(tmp_path: Path, prefix: str, bootstrap: str, total: int) -> None:
    """The next owner starts from the committed offsets: every request gets a decision."""
    restarted = service_for(tmp_path, prefix, bootstrap, DecideLogic)
    task = await start(restarted)
    try:
        deadline = time.monotonic() + 60
        while len({r.key for r in await decisions(bootstrap, prefix)}) < total:
            assert time.monotonic() < deadline, "a request taken into the lane was lost"
            await asyncio.sleep(0.5)
    finally:
        restarted.stop()
        await task


async def test_established_task_types_are_decided_before_a_backlog_of_new_ones(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    prefix = unique_prefix
    await prefill(kafka_bootstrap, prefix)
    service = service_for(tmp_path, prefix, kafka_bootstrap, DecideLogic)
    task = await start(service)
    total = 2 * JUNK + CHAT
    try:
        seen: list[Any] = []

        async def all_decided() -> bool:
            seen[:] = await decisions(kafka_bootstrap, prefix)
            return len(seen) >= total

        deadline = time.monotonic() + 60
        while not await all_decided():
            assert time.monotonic() < deadline, f"{len(seen)} of {total} decided"
            await asyncio.sleep(0.5)
        ends = {p: 0 for p in range(PARTITIONS)}
        for r in await read_all(kafka_bootstrap, f"{prefix}.requests"):
            ends[r.partition] = r.offset + 1
        deadline = time.monotonic() + 30
        while await committed(kafka_bootstrap, prefix) != ends:
            assert time.monotonic() < deadline, "the decide loop did not commit every decided request"
            await asyncio.sleep(0.2)
    finally:
        service.stop()
        await task
    ids = Counter(orjson.loads(r.value)["request_id"] for r in seen)
    assert len(ids) == total and set(ids.values()) == {1}, "a request was lost or decided twice"
    # FIFO would publish every chat decision after all of the first JUNK in its partition
    last_chat = {r.partition: r.offset for r in seen if r.key.startswith(b"chat-")}
    first_wave_after = sum(
        1
        for r in seen
        if r.key.startswith(b"junk-")
        and int(r.key.split(b"-")[1]) < JUNK
        and r.offset > last_chat[r.partition]
    )
    assert len(last_chat) == PARTITIONS
    assert first_wave_after >= JUNK // 2, (
        f"only {first_wave_after} of {JUNK} earlier junk decided after the chat"
    )
    print(
        f"\npriority lane: {first_wave_after} of the {JUNK} earlier new task types decided after every chat request"
    )


async def test_the_commit_never_passes_a_parked_request_so_a_crash_re_decides_it(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    prefix = unique_prefix
    await prefill(kafka_bootstrap, prefix)
    requests = await read_all(kafka_bootstrap, f"{prefix}.requests")
    total = len(requests)
    service = service_for(tmp_path, prefix, kafka_bootstrap, SlowOnJunk)
    task = await start_until_chat_decided(service)
    try:
        assert service.lane, "nothing parked any more: the test lost its point"
    finally:
        task.cancel()  # a crash: no drain, no graceful stop
        with pytest.raises(asyncio.CancelledError):
            await task
    at = await committed_only_decided(kafka_bootstrap, prefix, requests)
    ends = {p: 0 for p in range(PARTITIONS)}
    for r in requests:
        ends[r.partition] = r.offset + 1
    assert at != ends, "every partition committed to its end while requests were parked"
    await a_restart_decides_every_request(tmp_path, prefix, kafka_bootstrap, total)


async def test_a_drain_cancelled_at_an_assignment_restarts_the_loop_instead_of_committing_past_it(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    prefix = unique_prefix
    await prefill(kafka_bootstrap, prefix)
    requests = await read_all(kafka_bootstrap, f"{prefix}.requests")
    service = service_for(tmp_path, prefix, kafka_bootstrap, SlowOnJunk)
    task = await start_until_chat_decided(service)
    assert service.lane, "nothing parked any more: the test lost its point"
    # a rebalance whose caller gives up (cancelled) while the drain holds requests taken from the lane
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(service.assign(range(PARTITIONS)), 0.2)
    with pytest.raises(RuntimeError, match="restarting from the committed offsets"):
        await asyncio.wait_for(task, 30)  # the loop stops rather than commit past that request
    await committed_only_decided(kafka_bootstrap, prefix, requests)
    await a_restart_decides_every_request(tmp_path, prefix, kafka_bootstrap, len(requests))


async def test_steps_of_established_requests_keep_only_their_sends_in_flight(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """Ordinary traffic (only established task types, in waves): the loop keeps the futures of the sends still in
    flight and drops acknowledged ones at each step, so they do not pile up step after step (they did: every
    acknowledged send was kept until low-priority work next came along, ~390 bytes each)."""
    prefix = unique_prefix
    await create_topics(
        kafka_bootstrap, [f"{prefix}.{t}" for t in ("requests", "decisions", "deadletter")], PARTITIONS
    )
    service = service_for(tmp_path, prefix, kafka_bootstrap, DecideLogic)
    decided: list[int] = []
    service.on_decisions = lambda batch: decided.append(len(batch))
    task = await start(service)
    waves, per_wave = 40, 10
    try:
        async with producer(kafka_bootstrap) as prod:
            for wave in range(waves):
                for i in range(per_wave):
                    rid = f"chat-{wave}-{i}"
                    await prod.send(
                        f"{prefix}.requests", encode(build_request("chat", request_id=rid)), key=rid.encode()
                    )
                await prod.flush()
                deadline = time.monotonic() + 30
                while sum(decided) < (wave + 1) * per_wave:
                    assert time.monotonic() < deadline and not task.done(), "a wave was not decided"
                    await asyncio.sleep(0.005)
    finally:
        service.stop()
        await task
    assert sum(decided) == waves * per_wave
    # every wave took at least one step; only the last steps' sends can still be held
    assert len(service._unacked) <= 2 * PARTITIONS, (
        f"{len(service._unacked)} futures held after {waves} waves"
    )
