"""On the real broker: the learner's dead letter of a state that does not decode is not lost when its batch's send
fails. The batch replaces the state in memory as it learns, so nothing makes that letter again: the outcomes read
again are skipped by the watermarks in memory."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import orjson
import pytest

from banditroute.app import Router
from banditroute.core import decode_state
from banditroute.kafka.fence import Lease
from tests.kafka.router_world import learner_outcomes, learner_settings, read_all, write_config
from tests.reliability.support import MESSAGE_BYTES_DEFAULT, REFUSING, set_message_bytes

pytestmark = pytest.mark.kafka


async def test_an_undecodable_states_dead_letter_refused_is_sent_by_the_next_batch(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """chat's state in the learner's table does not decode; the batch that replaces it fails to send (the
    dead-letter topic refuses), then the same outcomes are read again and the topic takes records again: one
    ``undecodable_state`` letter, and the outcomes learnt once. Before review21: none (the letter was made once,
    by the failed batch)."""
    config_dir = write_config(tmp_path / "config")
    router = Router(learner_settings(kafka_bootstrap, unique_prefix, config_dir, tmp_path / "data"))
    router.lease = Lease(lambda: None, 6.0, router.counters)  # no group: writes go ahead
    deadletter = router.deadletter.get_topic_name()
    await router.ensure_topics()
    reading = asyncio.create_task(
        router.reader.run()
    )  # the learner reads the key's partition before replacing
    try:
        await router.learn_reader.assign([0, 1])
        router.task_to_state.data["chat"] = b"not a state"  # written to the state topic by something else
        await set_message_bytes(kafka_bootstrap, deadletter, REFUSING)
        with pytest.raises(Exception):  # noqa: B017 - the producer's error for a refused record
            await router._learn_records(learner_outcomes(range(3)))
        await set_message_bytes(kafka_bootstrap, deadletter, MESSAGE_BYTES_DEFAULT)
        await router._learn_records(learner_outcomes(range(3)))  # read again from the committed offset
        letters = [orjson.loads(r.value) for r in await read_all(kafka_bootstrap, deadletter)]
        assert [d["reason"] for d in letters] == ["undecodable_state"], f"dead letters sent: {letters}"
        assert router.dead_letters.get("undecodable_state") == 1
        states = [
            r
            for r in await read_all(kafka_bootstrap, router.state_topic.get_topic_name())
            if r.key == b'"chat"'
        ]
        # the replacement, from the prior: acknowledged by the failed batch already, and staged again with its retry
        assert states and {decode_state(r.value).events for r in states} == {3}
    finally:
        router.reader.stop()
        await asyncio.wait_for(reading, 30)
        for outbox in (router.learn_outbox, router.outbox, router.catalog_outbox):
            with contextlib.suppress(Exception):
                await outbox.stop()
