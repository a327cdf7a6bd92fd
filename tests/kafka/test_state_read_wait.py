"""Before the learner replaces a state record that does not decode, it waits for the state reader to have read
the key's partition to its end (so that it learns on from the key's last good state), and only for that: not
for the reader's first catch-up of the whole state topic, the catalog and the config, which on a large topic
held all of the worker's learning for up to 30 s even though the answer was already known.

The worker's learner path in process, with its real state reader on the real broker: the outcomes batch is the
one the outcomes reader would hand over, and the learner's table holds the bad record as faust's recovery of it
from the state topic would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from banditroute import app as app_module
from banditroute.app import Router
from banditroute.core import decode_state
from banditroute.kafka.topics import partition_for
from tests.kafka.helpers import producer
from tests.kafka.router_world import (
    CHAT_PARTITION,
    learner_outcomes,
    learner_settings,
    observations,
    read_all,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

BAD = b"not a banditroute state"
KEY = orjson.dumps("chat")


@pytest.fixture
async def router(kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> AsyncIterator[Router]:
    """A worker's Router whose state topic holds a learnt state of chat (3 outcomes), then a bad record of it,
    which its learner's table holds (recovered); its state reader is not running yet."""
    settings = learner_settings(
        kafka_bootstrap, unique_prefix, write_config(tmp_path / "config"), tmp_path / "data"
    )
    writer = Router(settings)
    await writer.ensure_topics()
    await writer.learn_reader.assign([CHAT_PARTITION])  # the batches below are that partition's
    try:
        await writer._learn_records(learner_outcomes(range(3)))  # the learnt state, written by a learner
    finally:
        await writer.learn_outbox.stop()
    async with producer(kafka_bootstrap, acks="all") as p:
        await p.send_and_wait(f"{unique_prefix}.state", key=KEY, value=BAD, partition=partition_for(KEY, 2))
    router = Router(settings)
    await router.learn_reader.assign([CHAT_PARTITION])
    router.task_to_state.data["chat"] = BAD  # as faust's recovery of the table leaves it
    try:
        yield router
    finally:
        router.reader.stop()
        for outbox in (router.learn_outbox, router.outbox, router.catalog_outbox):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(outbox.stop(), 30)


async def learnt_on(router: Router, prefix: str) -> None:
    """The state now on the topic has the good state's 3 outcomes and the new one; the bad one is dead-lettered."""
    states = [r for r in await read_all(router.settings.kafka_bootstrap, f"{prefix}.state") if r.key == KEY]
    assert observations(decode_state(states[-1].value)) == 4, "not learnt on from the last good state"
    letters = [
        orjson.loads(r.value) for r in await read_all(router.settings.kafka_bootstrap, f"{prefix}.deadletter")
    ]
    assert [(d["reason"], "last good state" in d["error"]) for d in letters] == [("undecodable_state", True)]


async def test_the_learner_does_not_wait_for_the_whole_topic_when_the_key_is_read(
    router: Router, unique_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "STATE_READ_WAIT_S", 3600.0)  # a wait that would outlast the test
    # the reader's first catch-up is not over: its read of the catalog topic is held back (it stands for a
    # large state topic whose other partitions take long to read); everything else it reads from the broker
    reader, catalog = router.reader, router.catalog.get_topic_name()
    read_to_end = reader._position_at_least

    async def catalog_not_yet(consumer: Any, tp: Any, end: int) -> bool:
        return tp.topic != catalog and await read_to_end(consumer, tp, end)

    monkeypatch.setattr(reader, "_position_at_least", catalog_not_yet)
    reading = asyncio.create_task(reader.run())
    try:
        for _ in range(600):  # the reader has read the bad record (and the good one before it)
            if "chat" in reader.undecodable:
                break
            await asyncio.sleep(0.1)
        assert reader.undecodable.get("chat") is not None
        await asyncio.wait_for(router._learn_records(learner_outcomes(range(3, 4))), 120)
        await learnt_on(router, unique_prefix)
        assert not reader.caught_up.is_set()
    finally:
        reader.stop()
        await asyncio.wait_for(reading, 30)


async def test_the_learner_waits_for_the_reader_to_read_the_key_partition(
    router: Router, unique_prefix: str
) -> None:
    learning = asyncio.create_task(router._learn_records(learner_outcomes(range(3, 4))))
    await asyncio.sleep(1.0)  # the learner is waiting: the reader has not started
    assert not learning.done() and router.counters["learned"] == 0
    reading = asyncio.create_task(router.reader.run())
    try:
        await asyncio.wait_for(learning, 120)
        await learnt_on(router, unique_prefix)
    finally:
        router.reader.stop()
        await asyncio.wait_for(reading, 30)
