"""RouterClient on the real broker: request-reply through a stand-in responder, many concurrent calls over
one consumer, and the static default route when no broker is listening."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from banditroute.client import RouterClient, RouterUnavailable, RouteTimeout, default_route_reason
from banditroute.codec import decode, encode
from banditroute.events import PolicyRef, RoutingDecision, RoutingRequest
from banditroute.kafka.local import free_port
from banditroute.settings import Settings
from tests.kafka.helpers import consume, create_topics

pytestmark = pytest.mark.kafka


def _settings(bootstrap: str, prefix: str) -> Settings:
    return Settings.model_validate({"kafka_bootstrap": bootstrap, "topic_prefix": prefix, "partitions": 2})


@contextlib.asynccontextmanager
async def responder(
    bootstrap: str, requests_topic: str, *, skip: set[str] = frozenset()
) -> AsyncIterator[list[str]]:  # type: ignore[assignment]
    """A tiny stand-in for the worker: answers each request on its reply_to topic (the model is chosen
    from the request id, so the test can check every reply reached the right caller)."""
    seen: list[str] = []
    cons = AIOKafkaConsumer(
        requests_topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=10
    )
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    await cons.start()
    await prod.start()

    async def run() -> None:
        while True:
            batch = await cons.getmany(timeout_ms=100)
            for records in batch.values():
                for record in records:
                    req = decode(RoutingRequest, record.value)
                    assert isinstance(req, RoutingRequest), req
                    seen.append(req.request_id)
                    if req.request_id in skip or req.reply_to is None:
                        continue
                    decision = RoutingDecision(
                        decision_id=f"d:{req.request_id}",
                        request_id=req.request_id,
                        task_type=req.task_type,
                        tenant=req.tenant,
                        model=f"m-{req.request_id}",
                        propensity=0.5,
                        policy=PolicyRef(name="stub", version="1"),
                        state_version=1,
                        decided_at=req.created_at,
                        decision_ms=0.1,
                    )
                    await prod.send(req.reply_to, value=encode(decision), key=record.key)

    task = asyncio.create_task(run())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await cons.stop()
        await prod.stop()


async def test_route_round_trip(kafka_bootstrap: str, unique_prefix: str) -> None:
    settings = _settings(kafka_bootstrap, unique_prefix)
    await create_topics(kafka_bootstrap, [settings.topic("requests")], partitions=2)
    async with responder(kafka_bootstrap, settings.topic("requests")) as seen:
        async with RouterClient(settings, timeout_s=20.0, start_timeout_s=20.0) as client:
            assert client.degraded is None
            reply_topic = client.reply_topic
            assert reply_topic.startswith(f"{unique_prefix}.replies.")
            decision = await client.route("chat", tenant="acme", metadata={"k": "v"}, request_id="r1")
            assert decision.request_id == "r1"
            assert decision.model == "m-r1"
            assert decision.tenant == "acme"
            assert not decision.is_default_route
            assert seen == ["r1"]
            await client.feedback(request_id="r1", model="m-r1", quality=0.9, cost_usd=0.001, latency_ms=12)
    fb = await consume(kafka_bootstrap, settings.topic("feedback"), count=1, timeout_s=20)
    assert fb[0].key == b"r1"
    # the private reply topic is deleted on close
    probe = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await probe.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if reply_topic not in await probe.topics():
                break
            await asyncio.sleep(0.2)
        assert reply_topic not in await probe.topics()
    finally:
        await probe.stop()


async def test_many_concurrent_routes_share_one_consumer(kafka_bootstrap: str, unique_prefix: str) -> None:
    settings = _settings(kafka_bootstrap, unique_prefix)
    await create_topics(kafka_bootstrap, [settings.topic("requests")], partitions=2)
    ids = [f"c{i}" for i in range(200)]
    async with responder(kafka_bootstrap, settings.topic("requests"), skip={"c7"}):
        async with RouterClient(settings, timeout_s=30.0, start_timeout_s=20.0) as client:
            started = time.monotonic()
            results = await asyncio.gather(
                *(client.route("chat", request_id=i, timeout_s=(3.0 if i == "c7" else 30.0)) for i in ids),
                return_exceptions=True,
            )
            elapsed = time.monotonic() - started
            assert client.stats["replies"] == 199
            assert client._pending == {}
    unanswered = results[ids.index("c7")]
    assert isinstance(unanswered, RouteTimeout) and not isinstance(unanswered, RouterUnavailable)
    for rid, result in zip(ids, results, strict=True):
        if rid != "c7":
            assert isinstance(result, RoutingDecision), result
            assert (result.request_id, result.model) == (rid, f"m-{rid}")
    assert elapsed < 30


async def test_default_route_when_broker_is_down() -> None:
    port = free_port()
    settings = Settings.model_validate({"kafka_bootstrap": f"127.0.0.1:{port}", "topic_prefix": "nobroker"})
    started = time.monotonic()
    async with RouterClient(
        settings, timeout_s=1.0, start_timeout_s=3.0, default_route="small-fast,mid-tier"
    ) as client:
        assert client.degraded is not None
        decision = await client.route("chat", tenant="acme")
        assert decision.is_default_route
        assert decision.model == "small-fast" and decision.fallbacks == ("mid-tier",)
        assert decision.propensity == 1.0
        assert default_route_reason(decision) == "unavailable"
        with pytest.raises(RouterUnavailable):
            await client.feedback(request_id="x", model="small-fast", quality=1.0, cost_usd=0.0)
    assert time.monotonic() - started < 15

    async with RouterClient(settings, timeout_s=1.0, start_timeout_s=2.0) as client:
        with pytest.raises(RouteTimeout, match="no default route"):
            await client.route("chat")
