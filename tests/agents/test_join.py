"""The join of feedback to decisions, without a broker: windows, duplicates, forgeries and redelivery."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from banditroute.agents.join import (
    TAG_DECISIONS,
    FeedbackRecord,
    JoinLogic,
    JoinPolicy,
    decision_id_for,
    request_id_of,
    source_id,
)
from banditroute.agents.pending import PendingStore


def decision(request_id: str, model: str = "m1", fallbacks: tuple[str, ...] = ("m2",)) -> dict[str, Any]:
    return {
        "decision_id": decision_id_for(request_id),
        "request_id": request_id,
        "task_type": "chat",
        "tenant": None,
        "model": model,
        "fallbacks": list(fallbacks),
        "propensity": 0.7,
        "state_version": 3,
        "policy": {"name": "thompson", "version": "1"},
    }


def feedback(
    request_id: str, model: str = "m1", offset: int = 0, key: str = "k", **extra: Any
) -> FeedbackRecord:
    fields = {"request_id": request_id, "model": model, "quality": 0.9, "idempotency_key": key, **extra}
    return FeedbackRecord(fields, b"{}", partition=0, offset=offset)


def make(policy: JoinPolicy | None = None) -> JoinLogic:
    return JoinLogic({}, {}, lambda _t: policy or JoinPolicy(wait_s=10, keep_joined_s=5), early_max_s=100)


def test_feedback_joins_its_decision_once() -> None:
    join = make()
    join.on_decision(decision("r1"), partition=0, offset=0, now_s=0)
    result = join.on_feedback(feedback("r1"), now_s=1)
    assert len(result.outcomes) == 1
    out = result.outcomes[0]
    assert (out["task_type"], out["model"], out["propensity"], out["state_version"]) == ("chat", "m1", 0.7, 3)
    duplicate = join.on_feedback(feedback("r1", offset=1, key="k2"), now_s=2)
    assert duplicate.outcomes == []
    assert [r.reason for r in duplicate.rejections] == ["duplicate_feedback"]


def test_redelivered_record_is_emitted_again_with_the_same_position() -> None:
    join = make()
    join.on_decision(decision("r1"), 0, 0, 0)
    first = join.on_feedback(feedback("r1", offset=7), 1)
    again = join.on_feedback(feedback("r1", offset=7), 1.5)
    assert again.rejections == []
    assert [(o["src"], o["off"]) for o in again.outcomes] == [(o["src"], o["off"]) for o in first.outcomes]


def test_fallback_model_is_accepted_and_others_rejected() -> None:
    join = make()
    join.on_decision(decision("r1"), 0, 0, 0)
    join.on_decision(decision("r2"), 0, 1, 0)
    assert join.on_feedback(feedback("r1", model="m2"), 1).outcomes[0]["model"] == "m2"
    forged = join.on_feedback(feedback("r2", model="m9", offset=1), 1)
    assert forged.outcomes == [] and forged.rejections[0].reason == "model_mismatch"


def test_wrong_decision_id_is_rejected() -> None:
    join = make()
    join.on_decision(decision("r1"), 0, 0, 0)
    result = join.on_feedback(feedback("r1", decision_id="d:other"), 1)
    assert result.outcomes == [] and result.rejections[0].reason == "unknown_request"


def test_feedback_by_decision_id_only() -> None:
    join = make()
    join.on_decision(decision("r1"), 0, 0, 0)
    rec = FeedbackRecord({"decision_id": "d:r1", "model": "m1", "quality": 1.0}, b"{}", 0, 3)
    assert len(join.on_feedback(rec, 1).outcomes) == 1
    assert request_id_of("d:r1") == "r1"


def test_early_feedback_waits_for_its_decision() -> None:
    join = make()
    parked = join.on_feedback(feedback("r1", offset=4), 0)
    assert parked.outcomes == [] and parked.rejections == []
    result = join.on_decision(decision("r1"), 0, 9, 0.5)
    assert len(result.outcomes) == 1
    assert result.outcomes[0]["src"] == source_id(0, TAG_DECISIONS)


def test_unknown_request_is_dead_lettered_after_a_later_decisions_tick() -> None:
    join = make()
    join.on_feedback(feedback("ghost", offset=4), now_s=10)
    assert join.on_decisions_tick(0, sent_at_s=9).rejections == []  # sent before it was parked
    assert join.on_decisions_tick(1, sent_at_s=20).rejections == []  # another partition
    late = join.on_decisions_tick(0, sent_at_s=12)
    assert [(r.reason, r.offset) for r in late.rejections] == [("unknown_request", 4)]


def test_parked_feedback_read_again_is_not_a_duplicate() -> None:
    """A reader restarted in the same process reads the parked record again: it still waits, no dead letter;
    another feedback record for the same request is a duplicate."""
    join = make()
    assert join.on_feedback(feedback("r1", offset=4), now_s=0).counters == {"parked_feedback": 1}
    again = join.on_feedback(feedback("r1", offset=4), now_s=1)
    assert again.rejections == [] and again.outcomes == [] and again.counters == {}
    other = join.on_feedback(feedback("r1", offset=5, key="k2"), now_s=1)
    assert [r.reason for r in other.rejections] == ["duplicate_feedback"]
    joined = join.on_decision(decision("r1"), partition=0, offset=9, now_s=2)
    assert len(joined.outcomes) == 1  # the parked one joins once its decision arrives


def test_parked_feedback_has_a_backstop() -> None:
    join = make()
    join.on_feedback(feedback("ghost", offset=4), now_s=0)
    assert join.on_tick(0, 1, sent_at_s=100.5).rejections == []
    assert [r.reason for r in join.on_tick(0, 2, sent_at_s=102).rejections] == ["unknown_request"]


@pytest.mark.parametrize("on_timeout, emitted", [("none", 0), ("default_reward", 1)])
def test_timeout_applies_the_configured_default(on_timeout: str, emitted: int) -> None:
    join = make(JoinPolicy(wait_s=10, on_timeout=on_timeout, default_reward=0.25, keep_joined_s=5))
    join.on_decision(decision("r1"), 0, 0, 0)
    assert join.on_tick(0, 50, sent_at_s=5).outcomes == []
    result = join.on_tick(0, 51, sent_at_s=11)
    assert result.counters["reward_timeouts"] == 1
    assert len(result.outcomes) == emitted
    if emitted:
        assert result.outcomes[0]["quality"] == 0.25 and result.outcomes[0]["kind"] == "timeout"


def test_a_default_reward_is_published_again_by_its_tick_read_after_a_restart() -> None:
    """A worker crashes after a default reward's expiry is acknowledged and before the reward is (the feedback
    reader commits past neither). Restarted, the join recovers the entry, expired, reads the decision again (a
    duplicate) and then the tick: the reward goes again, at its position. Before, nothing made it again."""
    policy = JoinPolicy(wait_s=10, on_timeout="default_reward", default_reward=0.25, keep_joined_s=50)
    durable: dict[str, bytes] = {}  # the join table's changelog: resolved entries only
    join = JoinLogic(PendingStore(durable), {}, lambda _t: policy)
    join.on_decision(decision("r1"), 0, 0, 0)
    join.on_decision(decision("r2"), 0, 1, 5)
    (reward,) = join.on_tick(0, 51, sent_at_s=11).outcomes
    restarted = JoinLogic(PendingStore(dict(durable)), {}, lambda _t: policy)
    restarted.on_decision(decision("r2"), 0, 1, 12)  # read again from the commit: still waiting
    assert restarted.on_decision(decision("r1"), 0, 0, 12).counters == {"duplicate_decisions": 1}
    restarted.rebuild_index(lambda _k: 0)
    replay = restarted.on_tick(0, 51, sent_at_s=11)
    assert replay.outcomes == [reward] and replay.counters == {"redelivered_timeout": 1}
    later = restarted.on_tick(0, 60, sent_at_s=40)  # once; the other decision times out at its own tick
    assert [(o["request_id"], o["off"]) for o in later.outcomes] == [("r2", 60)]


def test_feedback_left_parked_by_a_join_whose_removal_was_not_written_is_not_dead_lettered() -> None:
    """The join table's write of a join is acknowledged before the early-feedback table's removal of the parked
    feedback it joined is sent; a worker that stops in between (or whose partition moves) leaves both on the
    changelogs. Its decision read again removes that parking; before, a tick dead-lettered the feedback, learnt
    already, as ``unknown_request``."""
    join = make()
    join.on_feedback(feedback("r1", offset=4), now_s=1)  # parked: its decision comes after it
    parked = join.early["r1"]
    (outcome,) = join.on_decision(decision("r1"), 0, 9, now_s=2).outcomes
    join.early["r1"] = parked  # recovered from the changelog: the removal never reached it
    again = join.on_decision(decision("r1"), 0, 9, now_s=3)
    assert again.outcomes == [outcome]
    assert join.on_decisions_tick(0, sent_at_s=50).rejections == []
    assert again.counters.get("stale_parking_removed") == 1
    join.on_feedback(feedback("r2", offset=5), now_s=51)  # feedback for another request parks as before
    assert [r.reason for r in join.on_decisions_tick(0, sent_at_s=60).rejections] == ["unknown_request"]


@pytest.mark.parametrize("learn_late, learned", [(False, 0), (True, 1)])
def test_late_feedback_is_counted_and_learned_only_if_configured(learn_late: bool, learned: int) -> None:
    join = make(JoinPolicy(wait_s=10, learn_late=learn_late, keep_joined_s=5))
    join.on_decision(decision("r1"), 0, 0, 0)
    join.on_tick(0, 50, sent_at_s=11)
    result = join.on_feedback(feedback("r1"), now_s=12)
    assert result.counters["late_feedback"] == 1
    assert len(result.outcomes) == learned


def test_late_feedback_read_again_is_dead_lettered_as_late_again() -> None:
    """A late feedback record not learnt (learn_late off), read again after a restart or a failed batch, gets the
    same dead letter as the first time; before review21 it was dead-lettered again as duplicate_feedback."""
    join = make(JoinPolicy(wait_s=10, keep_joined_s=50))
    join.on_decision(decision("r1"), 0, 0, 0)
    join.on_tick(0, 50, sent_at_s=11)
    first = join.on_feedback(feedback("r1", offset=51), now_s=12)
    again = join.on_feedback(feedback("r1", offset=51), now_s=13)
    assert [r.reason for r in first.rejections] == [r.reason for r in again.rejections] == ["late_feedback"]
    assert [r.error for r in again.rejections] == [r.error for r in first.rejections]
    assert first.outcomes == again.outcomes == []
    other = join.on_feedback(feedback("r1", offset=52, key="k2"), now_s=14)  # another record: a duplicate
    assert [r.reason for r in other.rejections] == ["duplicate_feedback"]


@pytest.mark.parametrize("learn_late", [False, True])
def test_late_feedback_after_a_default_reward_is_never_learnt_too(learn_late: bool) -> None:
    """The default reward stood in for the outcome at the deadline; learning the late one as well would learn
    the decision twice (it did with learn_late). The entry stays as its expiry left it: read again after a
    restart, the expiry's tick still publishes the default reward."""
    policy = JoinPolicy(wait_s=10, on_timeout="default_reward", learn_late=learn_late, keep_joined_s=50)
    durable: dict[str, bytes] = {}
    join = JoinLogic(PendingStore(durable), {}, lambda _t: policy)
    join.on_decision(decision("r1"), 0, 0, 0)
    (default,) = join.on_tick(0, 50, sent_at_s=11).outcomes
    result = join.on_feedback(feedback("r1", offset=51), now_s=12)
    assert result.outcomes == []
    assert [r.reason for r in result.rejections] == ["late_feedback"]
    restarted = JoinLogic(PendingStore(dict(durable)), {}, lambda _t: policy)
    restarted.rebuild_index(lambda _k: 0)
    assert restarted.on_tick(0, 50, sent_at_s=11).outcomes == [default]


def test_entries_are_dropped_after_keep_window_and_table_stays_bounded() -> None:
    join = make()
    for i in range(100):
        join.on_decision(decision(f"r{i}"), 0, i, 0)
    for i in range(50):
        join.on_feedback(feedback(f"r{i}", offset=i), 1)
    assert join.in_flight() == 100
    join.on_tick(0, 1000, sent_at_s=11)  # pending ones expire and are kept briefly to catch late duplicates
    join.on_tick(0, 1001, sent_at_s=30)
    assert join.in_flight() == 0


def test_index_rebuild_after_recovery() -> None:
    pending: dict[str, bytes] = {}
    early: dict[str, bytes] = {}
    first = JoinLogic(pending, early, lambda _t: JoinPolicy(wait_s=10, keep_joined_s=0))
    first.on_decision(decision("r1"), 0, 0, 0)
    second = JoinLogic(pending, early, lambda _t: JoinPolicy(wait_s=10, keep_joined_s=0))
    second.rebuild_index(lambda _k: 0)
    result = second.on_tick(0, 5, sent_at_s=11)
    assert result.counters["reward_timeouts"] == 1


def test_shadow_and_rejected_decisions_are_not_joined() -> None:
    join = make()
    join.on_decision({**decision("r1"), "shadow": True}, 0, 0, 0)
    join.on_decision({**decision("r2"), "model": None}, 0, 1, 0)
    assert join.in_flight() == 0


def test_pending_encoding_is_compact_and_reads_both_formats() -> None:
    from banditroute.agents.join import Pending, decision_id_for

    rid = "0123456789abcdef0123456789abcdef"
    fresh = Pending(
        decision_id_for(rid), "chat", "chat", None, "premium", ("balanced",), 0.7, 17, "thompson", 1e9
    )
    raw = fresh.encode(rid)
    assert rid not in raw.decode() and b"thompson" not in raw  # implied fields are not stored
    assert Pending.decode(raw, rid) == fresh
    joined = Pending(
        "custom-id", "acme:chat", "chat", "acme", "premium", (), 0.5, 3, "eps", 1e9 + 0.25,
        status=1, joined_src=5, joined_off=77, idempotency_key="k", fb_part=1, fb_off=99, outcome={"kind": "x"},
    )  # fmt: skip
    assert Pending.decode(joined.encode(rid), rid) == joined
    # entries written before format 2 (a plain 17-field array) still decode
    plain = orjson.dumps([fresh.decision_id, "chat", "chat", None, "premium", ["balanced"], 0.7, 17, "thompson",
                          1e9, 0, -1, -1, None, -1, -1, None])  # fmt: skip
    assert Pending.decode(plain) == fresh
    assert len(raw) < len(plain) - 50


def test_a_join_reading_feedback_behind_expires_by_the_ticks_send_time_not_by_the_clock() -> None:
    """Overload: the feedback reader is a minute behind. A tick sent before the decision's window closed must
    not expire it even though it is read long after, so the feedback behind that tick is still joined."""
    join = make(JoinPolicy(wait_s=20, keep_joined_s=20))
    join.on_decision(decision("r1"), 0, 0, now_s=100)
    # read at t=160 (processing time), but sent at t=110: the window (until t=120) was still open
    assert join.on_tick(0, 7, sent_at_s=110).counters == {}
    result = join.on_feedback(feedback("r1", offset=8), now_s=160)
    assert result.counters == {"joined": 1} and len(result.outcomes) == 1
    # a tick sent after the window (less the clock margin) does expire an unanswered decision
    join.on_decision(decision("r2"), 0, 1, now_s=100)
    assert join.on_tick(0, 9, sent_at_s=120.5).counters == {}  # within the margin
    assert join.on_tick(0, 10, sent_at_s=121.5).counters == {"reward_timeouts": 1}
