"""A partition that leaves a worker and comes back before the worker looks at a settled assignment (a second
rebalance while the first settles), or while the worker is stalled past its session timeout: the worker writes
none of what it had staged for it before it left.

The worker's learner in process on the real broker; faust's part is played as faust plays it: the revocation
signal (``_on_revoked``), then its recovery taking the assignment's changelog partitions (``active_tps``), then
the assignment signal. ``_follow_assignment`` never runs in between (faust was still settling), as can happen
when the second rebalance comes within the first one's recovery. Before the fix, the state of chat that the
worker had staged after a refused flush was written when chat's partition came back, after the state its
interim owner had written: the compacted topic went back from 10 outcomes to 6.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from faust.types import TP

from banditroute.app import Router
from banditroute.core import decode_state
from banditroute.kafka.topics import partition_for
from tests.kafka.router_world import (
    CHAT_PARTITION,
    learner_outcomes,
    learner_settings,
    read_all,
    write_config,
)
from tests.reliability.support import MESSAGE_BYTES_DEFAULT, REFUSING, set_message_bytes

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

SUMMARIZE = ("summarize", 0)  # its task key and state partition (chat's is CHAT_PARTITION, 1)


async def _rebalance(router: Router, state_partitions: list[int], request_partitions: list[int]) -> None:
    """faust moving partitions: revocation, its tables taking the new assignment, then the assignment signal."""
    await router._release()
    changelogs = [router.task_to_state, router.request_to_pending, router.request_to_early_feedback]
    router.app.tables.recovery.active_tps = {  # type: ignore[attr-defined]
        TP(table.changelog_topic.get_topic_name(), p)
        for table in changelogs
        for p in (state_partitions if table is router.task_to_state else request_partitions)
    }
    assigned = {TP(router.outcomes.get_topic_name(), p) for p in state_partitions}
    assigned |= {TP(router.feedback.get_topic_name(), p) for p in request_partitions}
    await router._on_assigned(router.app, assigned, signal=None)


async def _chat_records(bootstrap: str, topic: str) -> list[bytes | None]:
    """chat's state records on the state topic, in order (None: a tombstone)."""
    return [r.value for r in await read_all(bootstrap, topic) if r.key == orjson.dumps("chat")]


async def _chat_events(bootstrap: str, topic: str) -> list[int | None]:
    """The outcomes learnt in each record of chat's state on the state topic, in order (None: a tombstone)."""
    return [None if v is None else decode_state(v).events for v in await _chat_records(bootstrap, topic)]


async def _recover_chat(router: Router, bootstrap: str, topic: str) -> None:
    """chat in a worker's table as faust's recovery of its partition leaves it: its last state on the topic."""
    router.task_to_state.data["chat"] = (await _chat_records(bootstrap, topic))[-1]


@pytest.fixture
async def workers(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[Router, Router, str]]:
    """Workers A and B, and the state topic; A has learnt 3 outcomes of chat and summarize each, then staged its
    next state of chat (6 outcomes) while the state topic refused writes (the outcomes are not committed)."""
    assert partition_for(orjson.dumps(SUMMARIZE[0]), 2) == SUMMARIZE[1] != CHAT_PARTITION
    config_dir = write_config(tmp_path / "config")
    settings = learner_settings(kafka_bootstrap, unique_prefix, config_dir, tmp_path / "data")
    state_topic = f"{unique_prefix}.state"
    a, b = Router(settings), Router(settings)
    try:
        await a.ensure_topics()
        await a.learn_reader.assign([0, 1])
        await a._learn_records(learner_outcomes(range(3)) + learner_outcomes(range(3), *SUMMARIZE))
        await set_message_bytes(kafka_bootstrap, state_topic, REFUSING)
        with pytest.raises(Exception):  # noqa: B017 - the broker's refusal, whichever error aiokafka names it
            await a._learn_records(learner_outcomes(range(3, 6)))
        assert "chat" in a.state_view.staged
        await set_message_bytes(kafka_bootstrap, state_topic, MESSAGE_BYTES_DEFAULT)
        yield a, b, state_topic
    finally:
        for router in (a, b):
            for outbox in (router.learn_outbox, router.outbox, router.catalog_outbox):
                with contextlib.suppress(Exception):
                    await outbox.stop()


async def _b_learns_chat_on(b: Router, bootstrap: str, topic: str) -> None:
    """B, chat's partition's interim owner, learns chat on from A's state on the topic (3 outcomes) to 10."""
    await _recover_chat(b, bootstrap, topic)
    await b.learn_reader.assign([1])
    await b._learn_records(learner_outcomes(range(3, 10)))  # from the committed offset (3) on
    assert await _chat_events(bootstrap, topic) == [3, 10]


async def test_a_partition_back_before_a_settled_look_gets_no_state_staged_before_it_left(
    kafka_bootstrap: str, workers: tuple[Router, Router, str]
) -> None:
    a, b, state_topic = workers
    # a request id whose join-table write A had staged, in a partition that leaves too
    rid = next(f"r{i}" for i in range(100) if partition_for(f"r{i}".encode(), 4) == 3)
    a.pending_view[rid] = b"pending"

    await _rebalance(a, [0], [0, 1])  # chat's partition and request partitions 2, 3 go to B
    await _b_learns_chat_on(b, kafka_bootstrap, state_topic)

    await _rebalance(a, [0, 1], [0, 1, 2, 3])  # B leaves before A saw its first assignment settled
    await _recover_chat(a, kafka_bootstrap, state_topic)
    await a.learn_reader.assign([0, 1])
    await a._learn_records(learner_outcomes(range(3, 4), *SUMMARIZE))
    history = await _chat_events(kafka_bootstrap, state_topic)
    assert history == [3, 10], f"A wrote the chat state it had staged before the partition left: {history}"
    assert rid not in a.pending_view.staged, "A kept a join write staged before its partition left"
    assert a.counters["state_writes_dropped_after_rebalance"] == 1


async def test_a_partition_given_back_to_a_stalled_worker_gets_no_state_staged_before_the_stall(
    kafka_bootstrap: str, workers: tuple[Router, Router, str]
) -> None:
    """A stalls past its session timeout: B holds chat's partition meanwhile and learns it on, and A, continued,
    rejoins and is given its partitions back without ever seeing an assignment without chat's. faust's recovery
    of the partition (read on from where A's last one ended) leaves B's state of chat in A's table; A's next
    flush must not write the state it had staged before the stall over it. Before: the compacted topic went back
    from 10 outcomes to 6 (B's 4 outcomes past A's, committed by B, lost)."""
    a, b, state_topic = workers
    await _b_learns_chat_on(b, kafka_bootstrap, state_topic)
    await _rebalance(a, [0, 1], [0, 1, 2, 3])  # revoked and assigned again: the same partitions
    assert "chat" in a.state_view.staged  # no assignment dropped it
    await _recover_chat(a, kafka_bootstrap, state_topic)
    await a.learn_reader.assign([0, 1])
    await a._learn_records(learner_outcomes(range(3, 4), *SUMMARIZE))
    history = await _chat_events(kafka_bootstrap, state_topic)
    assert history == [3, 10], f"A wrote the chat state it had staged before the stall: {history}"
    assert a.counters["state_writes_replaced"] == 1
