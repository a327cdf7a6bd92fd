"""The heartbeat lease on the real broker: a group member's answered sync and heartbeats confirm it
(``kafka/fence.py``), and a learner batch it refuses is learnt again from the state last written.
A member that lost its partitions without noticing is tests/reliability/test_stalled_worker.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from banditroute.app import Router
from banditroute.core import decode_state
from banditroute.kafka.fence import ANSWERED, Fenced, Lease, install
from tests.kafka.helpers import create_topics
from tests.kafka.router_world import learner_outcomes, learner_settings, read_all, write_config

pytestmark = pytest.mark.kafka


async def _member(bootstrap: str, prefix: str) -> AIOKafkaConsumer:
    """A started consumer that has joined a group of its own and holds its topic's partition (its answers
    recorded: the lease's patch installed first)."""
    assert install()
    topic = f"{prefix}.fenced"
    await create_topics(bootstrap, [topic])
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{prefix}.fence",
        session_timeout_ms=6000,
        heartbeat_interval_ms=2000,
    )
    await consumer.start()
    deadline = time.monotonic() + 60
    while not consumer.assignment() and time.monotonic() < deadline:
        await consumer.getmany(timeout_ms=200)
    assert consumer.assignment()
    return consumer


async def test_answered_heartbeats_keep_a_group_members_lease(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    consumer = await _member(kafka_bootstrap, unique_prefix)
    lease = Lease(lambda: consumer._coordinator, 6.0, Counter())
    assert lease.installed
    try:
        coordinator = consumer._coordinator
        assert lease.valid(coordinator)  # the group's sync answered: no wait for the first heartbeat
        await asyncio.wait_for(lease.hold(), 0.1)
        generation, member, sent = coordinator.__dict__[ANSWERED]
        assert (generation, member) == (coordinator.generation, coordinator.member_id)
        await asyncio.sleep(2.5)  # heartbeats go on: the lease stays fresh
        assert coordinator.__dict__[ANSWERED][2] > sent and lease.valid(coordinator)
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def _learner_and_member(
    bootstrap: str, prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[Router, AIOKafkaConsumer]]:
    """A learner whose lease asks a member of a group of its own (:func:`_member`); stopped with it after."""
    config_dir = write_config(tmp_path / "config")
    router = Router(learner_settings(bootstrap, prefix, config_dir, tmp_path / "data"))
    member = await _member(bootstrap, prefix)
    router.lease = Lease(lambda: member._coordinator, 6.0, router.counters)
    try:
        yield router, member
    finally:
        with contextlib.suppress(Exception):
            await member.stop()
        for outbox in (router.learn_outbox, router.outbox, router.catalog_outbox):
            with contextlib.suppress(Exception):
                await outbox.stop()


async def test_a_learner_batch_refused_by_the_lease_is_learnt_again_from_the_state_written(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """The learner learns a batch in memory, then its lease refuses the write (the member left the group): the
    outcomes are read again from the committed offset and, the membership confirmed again, learnt on from chat's
    state on the topic (3 outcomes), not from the prior. Before: the batch's states left the learner's memory
    and were looked for at the view's place of them, which the batch's own learning had just cleared: chat went
    back from 3 outcomes to the 3 of the batch read again."""
    async with _learner_and_member(kafka_bootstrap, unique_prefix, tmp_path) as (router, member):
        await router.ensure_topics()
        await router.learn_reader.assign([0, 1])
        await router._learn_records(learner_outcomes(range(3)))  # written under the lease
        await member.stop()  # leaves the group: no longer a member
        with pytest.raises(Fenced):
            await router._learn_records(learner_outcomes(range(3, 6)))
        assert router.counters["lease_fenced"] == 1
        router.lease = Lease(lambda: None, 6.0, router.counters)  # a member again (no group: writes go ahead)
        await router._learn_records(learner_outcomes(range(3, 6)))  # read again from the committed offset
        records = [r for r in await read_all(kafka_bootstrap, f"{unique_prefix}.state") if r.key == b'"chat"']
        history = [decode_state(r.value).events for r in records]
        assert history == [3, 6], f"chat's states on the topic learnt {history} outcomes"
        assert dict(decode_state(records[-1].value).applied) == {0: 5}


async def test_a_learner_batch_refused_by_the_lease_sends_none_of_its_dead_letters(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """A batch with an outcome record that is not JSON is refused by the lease (the member left the group), then
    read again and learnt: its dead letter goes once. Before, the learner sent it as it was made, before the
    lease: the refused batch's went too, and the batch read again sent a second one."""
    async with _learner_and_member(kafka_bootstrap, unique_prefix, tmp_path) as (router, member):
        batch = learner_outcomes(range(3))
        batch[1].value = b"not json"
        await router.ensure_topics()
        await router.learn_reader.assign([0, 1])
        await member.stop()  # leaves the group: no longer a member
        with pytest.raises(Fenced):
            await router._learn_records(batch)
        router.lease = Lease(lambda: None, 6.0, router.counters)  # a member again (no group: writes go ahead)
        await router._learn_records(batch)  # read again from the committed offset
        letters = await read_all(kafka_bootstrap, router.deadletter.get_topic_name())
        sources = [(d["reason"], d["source_offset"]) for d in (orjson.loads(r.value) for r in letters)]
        assert sources == [("malformed_json", 1)], f"dead letters sent: {sources}"
        assert router.dead_letters.get("malformed_json") == 1
