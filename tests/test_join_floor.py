"""The offset the join commits on ``decisions`` (``JoinIO._join_floor``) while a resolution is in memory only.

Seen in tests/kafka/test_bad_state.py (once in 8 runs under load): a worker stopped with SIGTERM while a feedback
batch's flush of the join table was in flight. The stop cancelled the flush (its writes restaged), but the join had
already marked those decisions resolved in memory, so the decisions reader's next commit passed them; the next
owner read their feedback again, found no decision, and dead-lettered it as ``unknown_request``: 50 outcomes lost.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from banditroute.agents.join import TAG_WORKER, JoinLogic, JoinPolicy
from banditroute.agents.pending import PendingStore
from banditroute.codec import DeadLetterCounter
from banditroute.join_io import JoinIO
from banditroute.kafka.fence import Lease
from banditroute.kafka.staged import StagedTable
from tests.agents.test_join import decision, feedback


class _Table:
    def __init__(self, name: str) -> None:
        self.data: dict[str, bytes] = {}
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: f"{name}-changelog")
        self.key_serializer = "json"


class _Outbox:
    """Sends are kept; ``drain`` (the acknowledgement) fails while ``failing``, as a stop's cancellation does."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.failing = True

    async def send_to(self, topic: str, key: bytes, _value: bytes | None, _partition: int) -> None:
        self.sent.append((topic, key))

    async def send(self, topic: str, key: bytes, _value: bytes | None) -> asyncio.Future[None]:
        self.sent.append((topic, key))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def drain(self) -> None:
        if self.failing:
            raise asyncio.CancelledError


def _join_io() -> Any:
    io: Any = object.__new__(JoinIO)
    io.pending_view = StagedTable(_Table("pending"), lambda _k: 0)
    io.early_view = StagedTable(_Table("early"), lambda _k: 0)
    io.join = JoinLogic(
        PendingStore(io.pending_view),
        io.early_view,
        lambda _t: JoinPolicy(wait_s=10, keep_joined_s=30),
        early_max_s=100,
    )
    io.outbox, io.counters = _Outbox(), Counter()
    io.lease = Lease(lambda: None, 6.0, io.counters)  # no group: every write goes ahead
    io.decision_reader = SimpleNamespace(partitions=frozenset({0}))  # the join holds partition 0
    io.settings = SimpleNamespace(state_partitions=1)
    io.outcomes = SimpleNamespace(get_topic_name=lambda: "outcomes")
    io.feedback = SimpleNamespace(get_topic_name=lambda: "feedback")
    io.deadletter = SimpleNamespace(get_topic_name=lambda: "deadletter")
    io.dead_letters = DeadLetterCounter()
    io._init_join()
    return io


async def test_decisions_joined_in_memory_hold_the_commit_until_the_join_table_is_acknowledged() -> None:
    io = _join_io()
    io.join.on_decision(decision("r1"), 0, 40, 0.0, TAG_WORKER)  # handed over by the decide loop
    io.join.on_decision(decision("r2"), 0, 41, 0.0, TAG_WORKER)
    assert io._join_floor(0) == 40
    results = [io.join.on_feedback(feedback("r1"), 1.0), io.join.on_feedback(feedback("r2", offset=1), 1.0)]
    assert io.join.oldest_unresolved(0) is None  # joined in memory
    with pytest.raises(
        asyncio.CancelledError
    ):  # the flush is cancelled: nothing acknowledged, nothing published
        await io._finish_join(results)
    assert io._join_floor(0) == 40 and io.outbox.sent and all("outcomes" != t for t, _ in io.outbox.sent)
    io.outbox.failing = False
    io.outbox.sent.clear()
    await io._finish_join([])  # a later batch's flush sends the restaged writes and is acknowledged
    assert {k for t, k in io.outbox.sent if t == "pending-changelog"} == {b'"r1"', b'"r2"'}
    assert io._join_floor(0) is None


async def test_a_late_join_of_a_decision_the_commit_passed_does_not_move_the_floor_back() -> None:
    """Late feedback for an expired decision resolves it a second time (expired -> joined). Its expiry was
    acknowledged and the commit has passed it since, so the floor must not go back to it while the late join's
    write is in flight: the decisions reader commits ``min(position, floor)``, and a restart from that older
    offset would read as pending again every decision since whose resolution the join had already deleted
    (each waiting ``wait_s`` again, and, with ``on_timeout: default_reward``, learnt a second time)."""
    io = _join_io()
    io.outbox.failing = False
    io.join.on_decision(decision("r1"), 0, 40, 0.0, TAG_WORKER)
    await io._finish_join([io.join.on_tick(0, 5, sent_at_s=12.0)])  # r1 expires (wait_s 10); acknowledged
    io._on_join_commit({0: 100})  # the decisions reader committed past it (decisions 41-99 resolved since)
    assert io._join_floor(0) is None
    results = [io.join.on_feedback(feedback("r1"), now_s=15.0)]  # late (kept 30 s after its expiry)
    assert results[0].counters["late_feedback"] == 1
    floor = io._join_floor(0)
    assert floor is None or floor >= 100, f"the commit would go back from 100 to {floor}"
    io.outbox.failing = True
    with pytest.raises(asyncio.CancelledError):  # a graceful stop in the middle of the late join's write
        await io._finish_join(results)
    floor = io._join_floor(0)
    assert floor is None or floor >= 100, f"the commit would go back from 100 to {floor}"


async def test_a_resolution_whose_write_failed_still_holds_the_commit_after_the_join_lets_go() -> None:
    """A flush that fails (a broker error: the feedback reader restarts in this process) leaves its writes staged
    again in memory; if the join then lets go of its partitions and reads the decisions again (a rebalance, the
    decide loop restarting), each of those decisions finds its resolution in memory, not pending: nothing but the
    unacknowledged floor holds the commit at it until the restaged write is acknowledged. Were the commit to pass
    it and the worker stop before the write is acknowledged, the next owner would find neither the decision nor
    its resolution, and the feedback, read again, would be dead-lettered as ``unknown_request``."""
    io = _join_io()
    io.join.on_decision(decision("r1"), 0, 40, 0.0, TAG_WORKER)
    results = [io.join.on_feedback(feedback("r1"), 1.0)]
    with pytest.raises(asyncio.CancelledError):  # the flush fails: r1's joined entry is staged again
        await io._finish_join(results)
    io._forget()  # the join lets go; the decisions reader reads decisions from 40 again
    again = io.join.on_decision(decision("r1"), 0, 40, 2.0, TAG_WORKER)
    assert again.counters["duplicate_decisions"] == 1  # its resolution is in memory: not pending again
    assert io._join_floor(0) == 40
    io.outbox.failing = False
    await io._finish_join([])  # the restaged write is acknowledged
    assert io._join_floor(0) is None
