"""The join's in-memory pending entries (decisions are their durable record) and the offset it commits."""

from __future__ import annotations

import random

from banditroute.agents.join import TAG_WORKER, JoinLogic, JoinPolicy, source_id
from banditroute.agents.pending import OffsetWindow, Pending, PendingStore
from tests.agents.test_join import decision, feedback


def make() -> tuple[JoinLogic, PendingStore, dict[str, bytes]]:
    durable: dict[str, bytes] = {}
    store = PendingStore(durable)
    join = JoinLogic(store, {}, lambda _t: JoinPolicy(wait_s=10, keep_joined_s=30), early_max_s=100)
    return join, store, durable


def test_a_pending_entry_is_held_in_memory_and_only_its_resolution_is_written() -> None:
    join, store, durable = make()
    join.on_decision(decision("r1"), 0, 40, 0.0, TAG_WORKER)
    join.on_decision(decision("r2"), 0, 41, 0.0, TAG_WORKER)
    assert set(store.held) == {"r1", "r2"} and durable == {}
    assert join.oldest_unresolved(0) == 40 and join.in_flight() == 2
    result = join.on_feedback(feedback("r1"), now_s=1.0)
    assert len(result.outcomes) == 1
    assert set(durable) == {"r1"} and set(store.held) == {"r2"}
    assert join.oldest_unresolved(0) == 41
    join.on_tick(0, 5, sent_at_s=12.0)  # r2's window closes: its expiry is a resolution too
    assert set(durable) == {"r1", "r2"} and store.held == {} and join.oldest_unresolved(0) is None


def test_a_resolved_entry_stays_until_the_commit_has_passed_its_decision() -> None:
    join, _store, durable = make()
    join.keep_uncommitted = True
    join.on_decision(decision("r1"), 0, 7, 0.0, TAG_WORKER)
    join.on_feedback(feedback("r1"), now_s=1.0)
    join.on_tick(0, 1, sent_at_s=40.0)
    assert "r1" in durable  # no commit recorded: a restart may read offset 7 again
    join.committed[0] = 7
    join.on_tick(0, 2, sent_at_s=50.0)
    assert "r1" in durable
    join.committed[0] = 8
    join.on_tick(0, 3, sent_at_s=60.0)
    assert "r1" not in durable


def test_parked_feedback_joined_on_a_worker_decision_takes_the_worker_source() -> None:
    join, _store, durable = make()
    join.on_feedback(feedback("r1", offset=3), now_s=0.5)
    result = join.on_decision(decision("r1"), 2, 99, 1.0, TAG_WORKER)
    (outcome,) = result.outcomes
    assert (outcome["src"], outcome["off"]) == (source_id(2, TAG_WORKER), 99)
    assert "r1" in durable and join.oldest_unresolved(2) is None
    again = join.on_decision(decision("r1"), 2, 99, 2.0, TAG_WORKER)  # read back after a restart
    assert again.outcomes == [outcome] and again.counters == {"redelivered_join": 1}


def test_forgetting_the_partitions_drops_held_entries_not_resolutions() -> None:
    join, store, durable = make()
    join.on_decision(decision("r1"), 0, 0, 0.0, TAG_WORKER)
    join.on_decision(decision("r2"), 0, 1, 0.0, TAG_WORKER)
    join.on_feedback(feedback("r2"), now_s=1.0)
    join.forget_held()
    assert store.held == {} and set(durable) == {"r2"} and join.oldest_unresolved(0) is None


def test_pending_entries_keep_their_decision_offset_and_read_older_entries() -> None:
    entry = Pending("d:r", "chat", "chat", None, "m1", (), 0.5, 1, "thompson", 12.0, dec_off=123)
    assert Pending.decode(entry.encode("r"), "r").dec_off == 123
    legacy = Pending("d:r", "chat", "chat", None, "m1", (), 0.5, 1, "thompson", 12.0)
    assert Pending.decode(legacy.encode("r"), "r").dec_off == -1
    written_before = b'[2,null,null,"chat",null,"m1",[],0.5,1,null,12000,1,4,9]'  # format 2, joined
    old = Pending.decode(written_before, "r")
    assert (old.decision_id, old.deadline_s, old.status, old.joined_src, old.joined_off, old.dec_off) == (
        "d:r",
        12.0,
        1,
        4,
        9,
        -1,
    )


def test_the_offset_window_always_names_the_oldest_unresolved_offset() -> None:
    rng = random.Random(3)
    window = OffsetWindow()
    live: set[int] = set()
    for step in range(20_000):
        if live and rng.random() < 0.5:
            offset = rng.choice(sorted(live)[:50])  # mostly old ones, like a join resolving in order
            window.remove(offset)
            live.discard(offset)
        else:
            offset = step + rng.randrange(-5, 5)
            window.add(max(offset, 0))
            live.add(max(offset, 0))
        assert window.oldest() == (min(live) if live else None)
    window.remove(10**9)  # unknown offsets are ignored
    assert window.oldest() == (min(live) if live else None)


def test_a_resolution_holds_the_commit_back_until_it_is_acknowledged() -> None:
    join, _store, _durable = make()
    join.on_decision(decision("r1"), 0, 40, 0.0, TAG_WORKER)
    join.on_decision(decision("r2"), 0, 41, 0.0, TAG_WORKER)
    join.on_feedback(feedback("r2"), now_s=1.0)
    assert join.oldest_unresolved(0) == 40 and join.oldest_unacknowledged(0) == 41
    join.on_tick(0, 5, sent_at_s=12.0)  # r1's window closes: an expiry is a resolution too
    assert join.oldest_unresolved(0) is None and join.oldest_unacknowledged(0) == 40
    join.acknowledged()
    assert join.oldest_unacknowledged(0) is None
    join.on_decision(decision("r3"), 0, 50, 20.0, TAG_WORKER)
    join.on_feedback(feedback("r3"), now_s=21.0)  # (feedback partition 0: co-partitioned with its decision)
    join.forget_held()  # the readers read the decisions again from the committed offset
    assert join.oldest_unacknowledged(0) == 50  # its write is not acknowledged yet
    join.acknowledged()
    assert join.oldest_unacknowledged(0) is None
