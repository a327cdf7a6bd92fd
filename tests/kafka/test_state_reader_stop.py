"""On the real broker: when the state reader's run fails and its consumer then fails to stop, the run's own error
is the one raised (the stop's is logged), as in the decide loop (tests/kafka/test_decide_stop.py)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError

from banditroute.config import Registry, RouterConfig
from banditroute.kafka.admin import admin_client, create_topics, new_topic
from banditroute.kafka.state_reader import StateReader
from banditroute.routing import StateView
from tests.kafka.router_world import MODELS_YAML, write_config
from tests.kafka.test_retention import POLICY

pytestmark = pytest.mark.kafka


async def test_a_failing_stop_does_not_hide_the_readers_own_error(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state, catalog = f"{unique_prefix}.state", f"{unique_prefix}.catalog"
    async with admin_client(kafka_bootstrap) as admin:
        await create_topics(admin, [new_topic(state, 1), new_topic(catalog, 1)])
    registry = Registry(RouterConfig.load(write_config(tmp_path / "config", MODELS_YAML, POLICY)))
    reader = StateReader(
        StateView(),
        registry,
        bootstrap=kafka_bootstrap,
        state_topic=state,
        catalog_topic=catalog,
        security={},
    )
    task = asyncio.create_task(reader.run())
    await asyncio.wait_for(reader.caught_up.wait(), 60)
    consumer = reader._consumer
    assert consumer is not None
    real_stop = consumer.stop

    async def failing_stop() -> None:
        raise KafkaError("injected: the consumer's stop failed")

    def failing_read(*_args: Any) -> None:
        raise RuntimeError("the run's own error")

    consumer.stop = failing_stop  # the real client, its stop made to fail
    reader._note_fetched = failing_read  # type: ignore[assignment,method-assign]  # the run fails at its next fetch
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError, match="the run's own error"):
            await asyncio.wait_for(task, 30)
        assert "injected: the consumer's stop failed" in caplog.text  # logged, not lost
    finally:
        await real_stop()
