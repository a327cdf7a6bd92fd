"""On the real broker: the outcome of a join that a handed-over decision completed (its feedback came first and
was parked) is published even when that join's flush fails. Nothing reads that feedback or decision again to
make it anew: the feedback reader committed past the parked feedback, and the decisions reader passes over the
worker's own decisions (they reach the join in memory). So are the dead letters of a batch whose flush fails
(once each), and a default reward let go at a rebalance is made again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka.errors import MessageSizeTooLargeError

from banditroute.app import Router
from banditroute.join_io import TICK_HEADER
from banditroute.kafka.handoff import DECIDER_HEADER, Handoff
from banditroute.kafka.topics import partition_for
from banditroute.served import served_fields
from tests.kafka.helpers import create_topics
from tests.kafka.router_world import POLICY_YAML, feedback_for, learner_settings, read_all, write_config
from tests.reliability.support import MESSAGE_BYTES_DEFAULT, REFUSING, set_message_bytes

pytestmark = pytest.mark.kafka

TOKEN = b"assignment-1"


class _Decider:
    """The decide loop's part here: the current assignment's token (its decisions carry it)."""

    token = TOKEN
    shipped = 1
    shipped_to: dict[int, int] = {}  # noqa: RUF012 - read only


def _record(topic: str, partition: int, offset: int, value: bytes, headers: Any = ()) -> Any:
    return SimpleNamespace(
        topic=topic, partition=partition, offset=offset, key=None, value=value, headers=headers
    )


async def _join_router(
    bootstrap: str, prefix: str, tmp_path: Path, policy: str = POLICY_YAML
) -> tuple[Any, list[str]]:
    """A Router whose join holds every partition (its topics made, the decide loop's token at hand), and the
    names of its two join changelogs."""
    config_dir = write_config(tmp_path / "config", policy=policy)
    settings = learner_settings(bootstrap, prefix, config_dir, tmp_path / "data")
    router: Any = Router(settings)
    changelogs = [
        t.changelog_topic.get_topic_name()
        for t in (router.request_to_pending, router.request_to_early_feedback)
    ]
    n = settings.partitions
    topics = [router.decisions.get_topic_name(), router.feedback.get_topic_name(), *changelogs]
    await create_topics(bootstrap, topics, partitions=n)
    await create_topics(bootstrap, [router.outcomes.get_topic_name()], partitions=settings.state_partitions)
    await create_topics(bootstrap, [router.deadletter.get_topic_name()])
    router.decider = _Decider()
    router.decision_reader.partitions = frozenset(range(n))  # the join holds every partition
    return router, changelogs


def _decision(request_id: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "decision_id": f"d{request_id[1:]}",
        "task_type": "chat",
        "model": "balanced",
        "propensity": 0.5,
        "state_version": 0,
    }


async def _parked(
    router: Any, request_id: str, feedback_offset: int, seed: int
) -> tuple[dict[str, Any], int]:
    """Feedback for a decision not handed over yet, read by the join: parked, its parking acknowledged (the
    feedback reader commits past it). Returns the decision and its partition."""
    decision = _decision(request_id)
    partition = partition_for(request_id.encode(), router.settings.partitions)
    feedback = orjson.dumps(feedback_for(decision, np.random.default_rng(seed)))
    await router._join_feedback_records(
        [_record(router.feedback.get_topic_name(), partition, feedback_offset, feedback)]
    )
    assert router.join.early.get(request_id) is not None
    return decision, partition


@pytest.mark.parametrize("moved", [False, True], ids=["kept", "moved"])
async def test_an_outcome_whose_join_flush_failed_is_published_by_the_next_flush(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, moved: bool
) -> None:
    """``moved``: a rebalance takes the partition before the next flush; the join lets go of the outcome with
    the staged writes (the partition's new owner joins the decision and its parked feedback again; a partition
    kept makes it again when its decisions are read again)."""
    router, changelogs = await _join_router(kafka_bootstrap, unique_prefix, tmp_path)
    n, offset = router.settings.partitions, 7
    try:
        decision, partition = await _parked(router, "r1", 3, seed=1)  # the feedback is read first
        for changelog in changelogs:
            await set_message_bytes(kafka_bootstrap, changelog, REFUSING)
        # the handoff joins it; the join state's flush fails (staged again)
        router._on_pending(
            Handoff(TOKEN, [(partition, offset, served_fields(decision))], {partition: offset + 1}, 1)
        )
        with pytest.raises(MessageSizeTooLargeError):
            await router._drainer
        await asyncio.sleep(0)  # the task's done callbacks run after its awaiters are woken
        assert router.counters["handoff_join_failures"] == 1  # logged and counted, not left to the collector
        for changelog in changelogs:
            await set_message_bytes(kafka_bootstrap, changelog, MESSAGE_BYTES_DEFAULT)
        if moved:  # as JoinIO._sync after a rebalance
            owned = frozenset(range(n)) - {partition}
            router.decision_reader.partitions = owned
            router._forget()
            router._let_go_outside(owned)
            assert router.counters["join_outcomes_let_go"] == 1
        # the decisions reader, restarted from its committed offset, meets the decision again: its own (handed
        # over in memory), passed over; its batch flushes the staged join state
        own = _record(router.decisions.get_topic_name(), partition, offset, b"{}", [(DECIDER_HEADER, TOKEN)])
        await router._join_decisions([] if moved else [own])
        if not moved:
            assert router._join_floor(partition) is None  # its commit now passes the decision: not read again
        outcomes = [
            orjson.loads(r.value) for r in await read_all(kafka_bootstrap, router.outcomes.get_topic_name())
        ]
        expected = [] if moved else [("r1", partition * 4 + 2, offset)]
        assert [(o["request_id"], o["src"], o["off"]) for o in outcomes] == expected
    finally:
        await router.outbox.stop()


async def test_a_decision_whose_outcome_was_not_acknowledged_holds_the_decisions_commit(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """The join state's flush succeeds, the outcome's send fails: the decisions reader may not commit past the
    decision until the outcome is acknowledged too (a crash in between would otherwise lose it: the parked
    feedback is committed past, and a decision read again is what re-publishes a stored outcome)."""
    router, _changelogs = await _join_router(kafka_bootstrap, unique_prefix, tmp_path)
    outcomes_topic, offset = router.outcomes.get_topic_name(), 11
    try:
        decision, partition = await _parked(router, "r2", 4, seed=2)
        await set_message_bytes(kafka_bootstrap, outcomes_topic, REFUSING)
        router._on_pending(
            Handoff(TOKEN, [(partition, offset, served_fields(decision))], {partition: offset + 1}, 1)
        )
        with pytest.raises(MessageSizeTooLargeError):
            await router._drainer
        assert router._join_floor(partition) == offset  # the commit stays at the decision
        await set_message_bytes(kafka_bootstrap, outcomes_topic, MESSAGE_BYTES_DEFAULT)
        own = _record(router.decisions.get_topic_name(), partition, offset, b"{}", [(DECIDER_HEADER, TOKEN)])
        await router._join_decisions([own])  # the next batch publishes the held outcome, then lets it pass
        assert router._join_floor(partition) is None
        outcomes = [orjson.loads(r.value) for r in await read_all(kafka_bootstrap, outcomes_topic)]
        assert [(o["request_id"], o["off"]) for o in outcomes] == [("r2", offset)]
    finally:
        await router.outbox.stop()


async def _refusing(bootstrap: str, topics: list[str], refuse: bool) -> None:
    for topic in topics:
        await set_message_bytes(bootstrap, topic, REFUSING if refuse else MESSAGE_BYTES_DEFAULT)


def _tick(topic: str, partition: int, offset: int) -> Any:
    return _record(topic, partition, offset, b"", [(TICK_HEADER, str(time.time()).encode())])


async def _dead_letters(bootstrap: str, router: Any) -> list[tuple[str, str, int, int]]:
    letters = [orjson.loads(r.value) for r in await read_all(bootstrap, router.deadletter.get_topic_name())]
    return [(d["reason"], d["source_topic"], d["source_partition"], d["source_offset"]) for d in letters]


async def test_a_ticks_dead_letter_whose_join_flush_failed_is_sent_by_the_next_flush(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """Feedback for a request never decided is parked (the feedback reader commits past it); a later tick in its
    decisions partition dead-letters it as ``unknown_request`` while the join changelogs refuse. The letter goes
    before the join state (acknowledged on its own, remembered); read again, the tick finds nothing parked (gone in
    memory): one letter in all (none before 2026-12-03, when it was sent after the join state and not held back)."""
    router, changelogs = await _join_router(kafka_bootstrap, unique_prefix, tmp_path)
    router.join.clock_margin_s = 0.0  # the tick right after the parking proves no decision comes
    try:
        request_id = "r3" + "0" * 64  # its tombstone's record batch is over the changelogs' 100 bytes
        _decision_of_r3, partition = await _parked(router, request_id, 3, seed=3)
        await asyncio.sleep(0.01)
        tick = _tick(router.decisions.get_topic_name(), partition, 20)
        await _refusing(kafka_bootstrap, changelogs, True)
        with pytest.raises(MessageSizeTooLargeError):
            await router._join_decisions([tick])
        await _refusing(kafka_bootstrap, changelogs, False)
        await router._join_decisions([tick])  # the decisions reader, restarted, reads the tick again
        assert await _dead_letters(kafka_bootstrap, router) == [
            ("unknown_request", router.feedback.get_topic_name(), partition, 3)
        ]
    finally:
        await router.outbox.stop()


async def test_a_dead_letter_of_a_batch_whose_flush_failed_goes_once(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """A feedback batch with a record that does not read as feedback and one parked (a join-table write) fails
    its flush; read again, the batch dead-letters that record once in all (twice before: its letter left before
    the flush, then again with the batch read again)."""
    router, changelogs = await _join_router(kafka_bootstrap, unique_prefix, tmp_path)
    topic = router.feedback.get_topic_name()
    try:
        decision = _decision("r4")
        partition = partition_for(b"r4", router.settings.partitions)
        fine = orjson.dumps(feedback_for(decision, np.random.default_rng(4)))
        batch = [_record(topic, partition, 5, b"not feedback"), _record(topic, partition, 6, fine)]
        await _refusing(kafka_bootstrap, changelogs, True)
        with pytest.raises(MessageSizeTooLargeError):
            await router._join_feedback_records(batch)
        await _refusing(kafka_bootstrap, changelogs, False)
        await router._join_feedback_records(batch)  # the feedback reader, restarted, reads the batch again
        assert router.join.early.get("r4") is not None
        assert [(reason, off) for reason, _, _, off in await _dead_letters(kafka_bootstrap, router)] == [
            ("malformed_json", 5)
        ]
    finally:
        await router.outbox.stop()


DEFAULT_REWARD_POLICY = """defaults:
  lam: 10.0
  half_life: null
  join: {wait_s: 0.01, on_timeout: default_reward, default_reward: 0.25}
"""


@pytest.mark.parametrize("moved", [False, True], ids=["kept", "moved"])
async def test_a_default_reward_let_go_at_a_rebalance_is_made_again(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, moved: bool
) -> None:
    """A tick expires a handed-over decision (``on_timeout: default_reward``) while the join changelogs refuse:
    its default reward is held back, then let go at a rebalance. ``kept``: the decision read again is a duplicate
    (its entry says expired), and the tick read again (the feedback reader never committed past it) publishes
    the reward its entry keeps, at the tick's position, once (before, nothing made it again). ``moved``: the
    decisions reader's commit stays at the decision and nothing of its expiry is left to write, so its new owner,
    reading the decision again, finds it waiting."""
    router, changelogs = await _join_router(kafka_bootstrap, unique_prefix, tmp_path, DEFAULT_REWARD_POLICY)
    router.join.clock_margin_s = 0.0
    feedback, offset, n = router.feedback.get_topic_name(), 13, router.settings.partitions
    try:
        decision = _decision("r5")
        partition = partition_for(b"r5", n)
        router._on_pending(
            Handoff(TOKEN, [(partition, offset, served_fields(decision))], {partition: offset + 1}, 1)
        )
        await router._drainer  # held in memory
        await asyncio.sleep(0.05)
        tick = _tick(feedback, partition, 8)
        await _refusing(kafka_bootstrap, changelogs, True)
        with pytest.raises(MessageSizeTooLargeError):
            await router._join_feedback_records([tick])
        await _refusing(kafka_bootstrap, changelogs, False)
        assert router._join_floor(partition) == offset  # what the decisions reader commits as it lets go
        owned = frozenset(range(n)) - ({partition} if moved else set())
        router.decision_reader.partitions = owned  # as JoinIO._release, then _sync
        router._forget()
        router._let_go_outside(owned)
        assert router.counters["join_outcomes_let_go"] == 1
        if moved:
            assert "r5" not in router.pending_view.staged  # no expiry written for the new owner to find
            assert router.join.pending.get("r5") is None
        else:
            router.decider.token = b"assignment-2"
            router.join.rebuild_index(router._partition_of_request)
            record = orjson.dumps({**decision, "worker_id": "w"})
            await router._join_decisions(
                [
                    _record(
                        router.decisions.get_topic_name(),
                        partition,
                        offset,
                        record,
                        [(DECIDER_HEADER, TOKEN)],
                    )
                ]
            )
            await router._join_feedback_records([tick])  # read again from the feedback reader's commit
            await asyncio.sleep(0.05)
            await router._join_feedback_records([_tick(feedback, partition, 9)])
        outcomes = [
            orjson.loads(r.value) for r in await read_all(kafka_bootstrap, router.outcomes.get_topic_name())
        ]
        expected = [] if moved else [("r5", "timeout", 0.25, partition * 4 + 1, 8)]
        assert [(o["request_id"], o["kind"], o["quality"], o["src"], o["off"]) for o in outcomes] == expected
    finally:
        await router.outbox.stop()


async def test_parked_feedback_stays_on_its_changelog_while_the_join_that_takes_it_is_refused(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """Only the join table's changelog refuses (test_rebalance_restaged's staging): a handoff joins parked
    feedback, and the flush fails. The feedback must stay parked on the early-feedback changelog until the joined
    entry is on the join table's: a new owner recovers one or the other, and joins the feedback (the feedback
    reader committed past it). Before, the removal landed in the same flush the join table refused: 167 of 500
    outcomes lost in one run of test_rebalance_restaged (A's outcomes let go as the partitions moved)."""
    router, changelogs = await _join_router(kafka_bootstrap, unique_prefix, tmp_path)
    pending_changelog, early_changelog = changelogs
    offset = 17
    try:
        decision, partition = await _parked(router, "r6", 2, seed=6)
        await _refusing(kafka_bootstrap, [pending_changelog], True)
        router._on_pending(
            Handoff(TOKEN, [(partition, offset, served_fields(decision))], {partition: offset + 1}, 1)
        )
        with pytest.raises(MessageSizeTooLargeError):
            await router._drainer
        await _refusing(kafka_bootstrap, [pending_changelog], False)
        early = [
            (orjson.loads(r.key), r.value is None) for r in await read_all(kafka_bootstrap, early_changelog)
        ]
        assert early == [("r6", False)]  # parked, and not removed
    finally:
        await router.outbox.stop()


async def _recover(bootstrap: str, router: Any, changelogs: list[str]) -> None:
    """faust's recovery of the join tables: their changelogs' records, in order, into the tables' stores."""
    tables = (router.request_to_pending, router.request_to_early_feedback)
    for changelog, table in zip(changelogs, tables, strict=True):
        for r in await read_all(bootstrap, changelog):
            if r.value is None:
                table.data.pop(orjson.loads(r.key), None)
            else:
                table.data[orjson.loads(r.key)] = r.value


@pytest.mark.parametrize("crash", [False, True], ids=["held", "crash"])
async def test_a_ticks_dead_letter_refused_is_sent_once_and_not_lost_at_a_crash(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, crash: bool
) -> None:
    """A tick dead-letters parked feedback as ``unknown_request`` while the dead-letter topic refuses. ``held``:
    the tick read again (never committed) sends the letter held back, once. ``crash``: the worker crashes (the
    letter held back in its memory is gone) and restarts: the tick read again must find the parking on the
    changelog and make the letter again. Before review20 the removal of the parking was written and acknowledged
    before the letter was sent: recovered without it, the tick read again found nothing to dead-letter, and the
    letter was lost."""
    router, changelogs = await _join_router(kafka_bootstrap, unique_prefix, tmp_path)
    router.join.clock_margin_s = 0.0
    deadletter = router.deadletter.get_topic_name()
    restarted: Any = None
    try:
        request_id = "r8" + "0" * 64  # its tombstone's record batch is over the changelogs' 100 bytes
        _decision_of_r8, partition = await _parked(router, request_id, 3, seed=8)
        await asyncio.sleep(0.01)
        tick = _tick(router.decisions.get_topic_name(), partition, 21)
        await _refusing(kafka_bootstrap, [deadletter], True)
        with pytest.raises(MessageSizeTooLargeError):
            await router._join_decisions([tick])
        await _refusing(kafka_bootstrap, [deadletter], False)
        if crash:
            await router.outbox.stop()
            restarted = Router(router.settings)
            restarted.decider = _Decider()
            restarted.decision_reader.partitions = router.decision_reader.partitions
            restarted.join.clock_margin_s = 0.0
            await _recover(kafka_bootstrap, restarted, changelogs)
            restarted.join.rebuild_index(restarted._partition_of_request)
        await (restarted or router)._join_decisions([tick])  # read again from the committed offset
        assert await _dead_letters(kafka_bootstrap, router) == [
            ("unknown_request", router.feedback.get_topic_name(), partition, 3)
        ], "the tick's dead letter was lost with the worker's memory"
    finally:
        for r in (router, restarted):
            if r is not None:
                await r.outbox.stop()


class _Loop(_Decider):
    """The decide loop as ``JoinIO._sync`` drives it."""

    runs = 1

    async def assign(self, _partitions: Any) -> None:
        pass


async def test_a_stalled_worker_given_its_partition_back_writes_no_parking_over_its_interim_owners_join(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """A parks feedback while the changelogs refuse (its parking staged again) and stalls past its session
    timeout; B, the partition's interim owner, reads the feedback again, parks it, joins it with its decision
    (removing the parking: a tombstone) and publishes the outcome. A is given the partition back without seeing
    it move: faust's recovery leaves B's records in A's tables (no parking), and A's resync (``_sync``) must let
    go of the parking it had staged. Before, A's next flush wrote it after B's tombstone: the learnt feedback
    parked again on the changelog, for a later owner's tick to dead-letter as ``unknown_request``."""
    a, changelogs = await _join_router(kafka_bootstrap, unique_prefix, tmp_path)
    early_changelog = changelogs[1]
    b: Any = Router(a.settings)
    b.decider, b.decision_reader.partitions = _Decider(), a.decision_reader.partitions
    feedback, n, offset = a.feedback.get_topic_name(), a.settings.partitions, 19
    try:
        decision = _decision("r7")
        partition = partition_for(b"r7", n)
        record = _record(
            feedback, partition, 5, orjson.dumps(feedback_for(decision, np.random.default_rng(7)))
        )
        await _refusing(kafka_bootstrap, changelogs, True)
        with pytest.raises(MessageSizeTooLargeError):
            await a._join_feedback_records([record])
        await _refusing(kafka_bootstrap, changelogs, False)
        assert "r7" in a.early_view.staged  # A stalls here

        await b._join_feedback_records([record])  # B reads it again from the committed offset: parked
        b._on_pending(
            Handoff(TOKEN, [(partition, offset, served_fields(decision))], {partition: offset + 1}, 1)
        )
        await b._drainer  # joined: the parking removed
        early = [
            (orjson.loads(r.key), r.value is None) for r in await read_all(kafka_bootstrap, early_changelog)
        ]
        assert early == [("r7", False), ("r7", True)]

        # A continued: revoked and given the same partitions; faust's recovery reads B's records into its tables
        a.decider = _Loop()
        await _recover(kafka_bootstrap, a, changelogs)
        await a._release()
        await a._sync(frozenset(range(n)), lambda: True)  # settling: its readers are not assigned here
        a.decision_reader.partitions = frozenset(range(n))  # as _sync assigns them once faust has settled
        await a._join_feedback_records([])  # its next batch flushes
        early = [
            (orjson.loads(r.key), r.value is None) for r in await read_all(kafka_bootstrap, early_changelog)
        ]
        assert early[-1] == ("r7", True), f"A parked learnt feedback again after B's join removed it: {early}"
        assert a.counters["join_writes_replaced"] == 1
    finally:
        for router in (a, b):
            await router.outbox.stop()
