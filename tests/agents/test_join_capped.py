"""The join's bound on capped decisions waiting for feedback (``limits.max_capped_in_flight``), without a broker."""

from __future__ import annotations

from typing import Any

import pytest

from banditroute.agents.join import COMPACT_MIN, FeedbackRecord, JoinLogic, JoinPolicy, decision_id_for
from banditroute.agents.pending import Pending, PendingStore


def decision(request_id: str, capped: str | None) -> dict[str, Any]:
    return {
        "decision_id": decision_id_for(request_id),
        "request_id": request_id,
        "task_type": "junk" if capped else "chat",
        "tenant": None,
        "model": "m1",
        "fallbacks": [],
        "propensity": 1.0,
        "state_version": 0,
        "policy": {"name": "thompson", "version": "1"},
        "reasons": {"capped": capped},
        "state_key": "~shared" if capped else "chat",
    }


def feedback(request_id: str, offset: int) -> FeedbackRecord:
    fields = {"request_id": request_id, "model": "m1", "quality": 1.0, "idempotency_key": request_id}
    return FeedbackRecord(fields, b"{}", partition=0, offset=offset)


def make(limit: int | None, policy: JoinPolicy | None = None) -> JoinLogic:
    return JoinLogic(
        {}, {}, lambda _t: policy or JoinPolicy(wait_s=60, keep_joined_s=5), max_capped=lambda: limit
    )


def test_oldest_capped_decisions_are_given_up_past_the_bound_and_listed_ones_never() -> None:
    join = make(3)
    given_up = 0
    for i in range(6):  # all well inside the 60 s window
        result = join.on_decision(decision(f"c{i}", "max_task_types"), 0, 2 * i, now_s=0)
        assert result.outcomes == []  # nothing learnt for a given-up decision
        given_up += result.counters.get("capped_given_up", 0)
        join.on_decision(decision(f"n{i}", None), 0, 2 * i + 1, now_s=0)
    assert given_up == 3 and join.given_up == 3
    assert "capped_given_up" not in join.on_tick(0, 100, sent_at_s=2).counters
    assert {k for k in join.pending} == {"c3", "c4", "c5", *(f"n{i}" for i in range(6))}
    assert join.oldest_unresolved(0) == 1  # the commit is no longer held back by c0
    # the newest capped decisions still join; feedback for a given-up one waits as early feedback, then is
    # dead-lettered as unknown_request (nothing learnt from it, and said so)
    assert len(join.on_feedback(feedback("c5", 0), now_s=3).outcomes) == 1
    assert join.on_feedback(feedback("c0", 1), now_s=3).counters == {"parked_feedback": 1}
    late = join.on_decisions_tick(0, sent_at_s=10)
    assert [r.reason for r in late.rejections] == ["unknown_request"]


def test_joined_capped_decisions_are_not_given_up_and_no_bound_gives_up_nothing() -> None:
    join = make(2)
    join.on_decision(decision("c0", "max_task_types"), 0, 0, now_s=0)
    join.on_decision(decision("c1", "max_task_types"), 0, 1, now_s=0)
    assert len(join.on_feedback(feedback("c0", 0), now_s=1).outcomes) == 1
    assert "capped_given_up" not in join.on_decision(decision("c2", "max_task_types"), 0, 2, now_s=1).counters
    third = join.on_decision(decision("c3", "max_task_types"), 0, 3, now_s=1)
    assert third.counters.get("capped_given_up") == 1  # c1: c0 was joined and does not count
    assert "c0" in join.pending and "c1" not in join.pending
    unbounded = make(None)
    for i in range(4):
        unbounded.on_decision(decision(f"c{i}", "max_task_types"), 0, i, now_s=0)
    assert "capped_given_up" not in unbounded.on_tick(0, 100, sent_at_s=2).counters
    assert len(unbounded.pending) == 4


def test_the_deadline_index_lets_go_of_given_up_decisions() -> None:
    join = make(10)
    n = 4 * COMPACT_MIN
    for i in range(n):
        join.on_decision(decision(f"c{i}", "max_task_types"), 0, i, now_s=0)
    assert join.given_up == n - 10
    assert len(join._deadlines[0]) <= 2 * COMPACT_MIN  # compacted as it went, not one entry per decision made
    for i in range(n - 10, n):  # the newest still join
        assert len(join.on_feedback(feedback(f"c{i}", i), now_s=1).outcomes) == 1


def test_the_bound_is_over_every_partition_and_the_growing_one_gives_up_its_own() -> None:
    join = make(4)
    for i in range(3):
        join.on_decision(decision(f"a{i}", "max_task_types"), 0, i, now_s=0)
    for i in range(3):
        join.on_decision(decision(f"b{i}", "max_task_types"), 1, i, now_s=0)
    assert join.given_up == 2 and join.sizes()["capped_queued"] == 4
    assert {k for k in join.pending} == {"a0", "a1", "a2", "b2"}
    assert "capped_given_up" not in join.on_tick(0, 100, sent_at_s=1).counters
    join.forget_held()  # a rebalance: the queues go with the entries
    assert join.sizes()["capped_queued"] == 0


def test_the_capped_count_is_rebuilt_from_the_decisions_read_again() -> None:
    """After a rebalance or a restart the decisions are read again from the join's committed offset; each carries
    ``reasons.capped``, so the re-read capped ones count against the bound again (it does not start from zero)."""
    join = JoinLogic(
        PendingStore({}), {}, lambda _t: JoinPolicy(wait_s=60, keep_joined_s=5), max_capped=lambda: 3
    )
    for i in range(3):
        join.on_decision(decision(f"c{i}", "max_task_types"), 0, i, now_s=0)
    join.forget_held()  # the in-memory entries and the capped queues go
    assert join.sizes()["capped_queued"] == 0 and len(join.pending) == 0
    for i in range(3):  # read again from the committed offset
        join.on_decision(decision(f"c{i}", "max_task_types"), 0, i, now_s=1)
    assert join.sizes()["capped_queued"] == 3 and join.given_up == 0
    more = join.on_decision(decision("c3", "max_task_types"), 0, 3, now_s=1)
    assert more.counters.get("capped_given_up") == 1
    assert {k for k in join.pending} == {"c1", "c2", "c3"}


def test_joined_and_expired_capped_decisions_leave_the_count_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Joined capped decisions of one partition do not count against the bound while they wait in its queue, so
    another partition's live decisions are not given up early; under the bound nothing is decoded."""
    join = make(3, JoinPolicy(wait_s=10, keep_joined_s=5))
    for i in range(3):  # partition 1: three capped decisions, all joined at once
        join.on_decision(decision(f"b{i}", "max_task_types"), 1, i, now_s=0)
        assert len(join.on_feedback(feedback(f"b{i}", i), now_s=0).outcomes) == 1
    assert join.sizes()["capped_waiting"] == 0
    for i in range(3):  # partition 0: three live ones, within the bound of 3
        assert (
            "capped_given_up"
            not in join.on_decision(decision(f"a{i}", "max_task_types"), 0, i, now_s=0).counters
        )
    assert join.given_up == 0 and {f"a{i}" for i in range(3)} <= set(join.pending)
    decoded: list[str] = []
    decode = Pending.decode

    def counting(raw: bytes, request_id: str) -> Pending:
        decoded.append(request_id)
        return decode(raw, request_id)

    monkeypatch.setattr(Pending, "decode", staticmethod(counting))
    join.on_tick(0, 100, sent_at_s=2)  # nothing due, and within the bound: the capped queue is not read
    assert decoded == []
    more = join.on_decision(decision("a3", "max_task_types"), 0, 3, now_s=2)
    assert more.counters.get("capped_given_up") == 1 and decoded == ["a0"]  # exactly one over: the oldest
    monkeypatch.undo()
    # a capped decision whose window ran out no longer waits either
    join.on_tick(0, 101, sent_at_s=20)
    assert join.sizes()["capped_waiting"] == 0
    assert (
        "capped_given_up" not in join.on_decision(decision("a4", "max_task_types"), 0, 4, now_s=20).counters
    )


def test_the_capped_queue_lets_go_of_resolved_ids() -> None:
    join = make(10)
    n = 4 * COMPACT_MIN
    for i in range(n):  # every capped decision joined at once: the queue must not keep them all
        join.on_decision(decision(f"c{i}", "max_task_types"), 0, i, now_s=0)
        join.on_feedback(feedback(f"c{i}", i), now_s=0)
    assert join.given_up == 0 and join.sizes()["capped_waiting"] == 0
    assert join.sizes()["capped_queued"] <= COMPACT_MIN + 1
