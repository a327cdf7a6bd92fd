"""On the real broker: the decide loop stops every client it started (the requests consumer, the spill consumer,
the producer) even when one of them fails to stop, and the failure still reaches the caller (whose service logs
it and starts a new run: clients left open would pile up, one set per restart)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError

from banditroute.agents.decide import DecideLogic
from banditroute.kafka.decide_service import DecideService
from tests.kafka.helpers import create_topics
from tests.kafka.test_priority_lane import PARTITIONS, service_for, start

pytestmark = pytest.mark.kafka


async def _running(tmp_path: Path, prefix: str, bootstrap: str) -> tuple[DecideService, asyncio.Task[None]]:
    await create_topics(
        bootstrap,
        [f"{prefix}.{t}" for t in ("requests", "requests-low", "decisions", "deadletter")],
        PARTITIONS,
    )
    service = service_for(tmp_path, prefix, bootstrap, DecideLogic, spill_topic=f"{prefix}.requests-low")
    return service, await start(service)


async def test_a_consumer_that_fails_to_stop_leaves_no_other_client_open(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    service, task = await _running(tmp_path, unique_prefix, kafka_bootstrap)
    consumer, spill = service._consumer, service._spill_consumer
    assert consumer is not None and spill is not None and service._replies is not None
    producer = service._replies.producer
    real_stop = consumer.stop

    async def failing_stop() -> None:
        raise KafkaError("injected: the consumer's stop failed")

    consumer.stop = failing_stop  # the real client, its stop made to fail
    try:
        service.stop()
        with pytest.raises(KafkaError, match="injected"):
            await asyncio.wait_for(task, 30)
        assert spill._closed, "the spill consumer was left running"
        assert producer._closed, "the producer was left running"
    finally:
        await real_stop()
        await spill.stop()
        await producer.stop()


async def test_a_failing_stop_does_not_hide_the_runs_own_error(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """The run failed first (here: as after a failed drain of the lane); the consumer's failing stop is logged,
    and the run's error is the one raised."""
    service, task = await _running(tmp_path, unique_prefix, kafka_bootstrap)
    consumer, spill = service._consumer, service._spill_consumer
    assert consumer is not None and spill is not None
    real_stop = consumer.stop

    async def failing_stop() -> None:
        raise KafkaError("injected: the consumer's stop failed")

    consumer.stop = failing_stop
    try:
        service._broken = RuntimeError("the run's own error")  # as a failed drain leaves it: raised next step
        with pytest.raises(RuntimeError, match="deciding the priority lane's requests failed"):
            await asyncio.wait_for(task, 30)
        assert spill._closed
    finally:
        await real_stop()
        await spill.stop()
