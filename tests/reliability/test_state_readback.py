"""A state evicted from memory (idle, ``limits.idle_evict_s``) is read back from the state topic before the
learner learns it again. When that read fails (the broker unreachable), the learner must not learn from the
prior: the state it wrote would replace the learnt one on the compacted topic. It fails the batch, the outcomes
are read again, and once the broker is back the state is read back and learnt on.

A dedicated broker (stopped and started again), and the worker's own learner path in process: the outcomes
batch is the one the outcomes reader would hand over, every read and write of state goes to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from banditroute.app import Router
from banditroute.kafka.local import LocalKafka
from banditroute.kafka.state_reader import StateReadFailed
from tests.kafka.router_world import (
    CHAT_PARTITION,
    MODELS_YAML,
    learned_states,
    learner_outcomes,
    learner_settings,
    observations,
    write_config,
)
from tests.reliability.support import wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.kafka, pytest.mark.timeout(420)]

POLICY = """defaults:
  lam: 10.0
  half_life: null
limits:
  idle_evict_s: 1
"""


async def evicted(router: Router) -> bool:
    """Run the worker's idle sweep until it has evicted ``chat`` (its state read back from the topic first)."""
    if router.view.where.get("chat") is None:
        return False  # the reader has not read the learnt state back yet: its place is not known
    await router._evict_idle()
    return "chat" in router.view.evicted and "chat" not in router.task_to_state.data


async def learn_until_done(router: Router, batch: list[Any], tries: int = 30) -> None:
    """What the outcomes reader does with a batch whose handler fails: read it again, a little later."""
    for _ in range(tries - 1):
        try:
            await router._learn_records(batch)
            return
        except Exception:
            await asyncio.sleep(1.0)
    await router._learn_records(batch)


async def test_an_evicted_state_that_cannot_be_read_back_is_not_replaced_by_the_prior(
    own_broker: LocalKafka, unique_prefix: str, tmp_path: Path
) -> None:
    settings = learner_settings(
        own_broker.bootstrap,
        unique_prefix,
        write_config(tmp_path / "config", MODELS_YAML, POLICY),
        tmp_path / "data",
    )
    router = Router(settings)
    await router.ensure_topics()
    await router.learn_reader.assign([CHAT_PARTITION])  # the batches below are that partition's
    reading = asyncio.create_task(router.reader.run())
    try:
        await router._learn_records(learner_outcomes(range(3)))
        assert await wait_until(lambda: evicted(router), 60), "chat was not evicted"
        await router._learn_records(
            learner_outcomes(range(3, 4))
        )  # read back, learnt on (as tests/kafka/test_retention)
        assert router.counters["states_restored"] == 1
        assert await wait_until(lambda: evicted(router), 60), "chat was not evicted again"

        await asyncio.to_thread(
            own_broker.down
        )  # the broker is unreachable when the next outcome of chat comes
        first: BaseException | None = None
        try:
            await asyncio.wait_for(router._learn_records(learner_outcomes(range(4, 5))), 120)
        except Exception as exc:
            first = exc
        await asyncio.to_thread(own_broker.up, 120)
        await learn_until_done(router, learner_outcomes(range(4, 5)))

        states = await learned_states(own_broker.bootstrap, unique_prefix)
        assert observations(states["chat"]) == 5, "the learnt state was replaced by one learnt from the prior"
        assert isinstance(first, StateReadFailed), first
        assert router.counters["state_restore_failed"] >= 1 and router.counters["state_restore_missed"] == 0
    finally:
        router.reader.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reading, 30)
        for outbox in (router.learn_outbox, router.outbox, router.catalog_outbox):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(outbox.stop(), 30)
