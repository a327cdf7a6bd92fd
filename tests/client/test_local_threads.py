"""Local mode deciding in several threads at once (``SyncRouterClient`` decides in the calling thread), without
a broker: the publisher ships through a producer double (tests/client/test_decision_publisher.py). What the
broker receives from the synchronous client is tested on the real broker (tests/kafka/test_local_mode.py)."""

from __future__ import annotations

import asyncio
import sys
import time

from banditroute.config import PACKAGED_CONFIG, RouterConfig
from banditroute.events import RoutingDecision
from banditroute.local_router import LocalRouter
from banditroute.messages import plain_call
from banditroute.settings import Settings
from tests.client.test_decision_publisher import BatchProducer

THREADS = 4
EACH = 1_000


async def _started(producer: BatchProducer, client_id: str) -> LocalRouter:
    """A local router on the packaged config whose publisher ships to ``producer``; its reader is not run: the
    topics count as read (the prior states), and fresh for an hour."""
    local = LocalRouter(
        Settings.model_validate({}),
        producer,
        client_id=client_id,
        seed=7,
        config=RouterConfig.load(PACKAGED_CONFIG),
    )
    local.reader.caught_up.set()
    local.reader.polled_at = time.monotonic() + 3600.0
    await local.publisher.start([local.decisions_topic, local.shadow_topic])
    local.publisher.linger_s = 0.001
    return local


async def test_decisions_from_several_threads_are_all_valid_and_published_once() -> None:
    producer = BatchProducer()
    local = await _started(producer, "client-threads")

    def route_many(thread: int) -> list[RoutingDecision]:
        made = []
        for i in range(EACH):
            plain = plain_call(("chat", "code", "summarise")[i % 3], ("acme", None)[i % 2], None, None)
            assert plain is not None
            decided = local.decide_now(plain)
            assert isinstance(decided, RoutingDecision), decided
            made.append(decided)
        return made

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads switch every few bytecodes: races show (the lock is needed)
    try:
        results = await asyncio.gather(*(asyncio.to_thread(route_many, t) for t in range(THREADS)))
        assert await local.flush(10.0)
    finally:
        sys.setswitchinterval(interval)
        await local.stop(2.0)
    returned = {d.request_id: d for batch in results for d in batch}
    assert len(returned) == THREADS * EACH  # no request id twice
    assert local.stats["local_decisions"] == THREADS * EACH
    published = [RoutingDecision.model_validate_json(value) for value in producer.stored]
    assert len(published) == THREADS * EACH
    for decision in published:  # what was published is what the caller got, field for field
        assert decision == returned[decision.request_id]
        assert decision.worker_id == "client-threads"


async def test_a_stopped_local_router_decides_nothing_more() -> None:
    """After close a caller in another thread is told ``closed`` (it then goes through the loop, which falls
    back): no decision is made that could no longer be published."""
    local = await _started(BatchProducer(), "c")
    plain = plain_call("chat", None, None, None)
    assert plain is not None
    assert isinstance(await asyncio.to_thread(local.decide_now, plain), RoutingDecision)
    await local.stop(2.0)
    assert await asyncio.to_thread(local.decide_now, plain) == "closed"
    assert local.stats["local_decisions"] == 1
