"""The join's batch path for a handoff of fresh decisions (``JoinLogic._served_fresh``: ``encode_fresh_many``,
``OffsetWindow.add_many``, ``PendingStore.hold_new``) against the per-decision path, on generated handoffs
(fixed seeds)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from banditroute.agents import pending
from banditroute.agents.join import COMPACT_MIN, TAG_WORKER, FeedbackRecord, JoinLogic, JoinResult
from banditroute.agents.pending import OffsetWindow, PendingStore, encode_fresh, encode_fresh_many
from banditroute.kafka.staged import StagedTable
from banditroute.served import Served, served_fields
from tests.agents.test_join_served import POLICIES, generated


def uncapped(rng: random.Random, n: int, odd: bool = False, capped: float = 0.0) -> list[Served]:
    """Served fields of ``n`` generated decisions, a share ``capped`` of them capped; with ``odd``, strings
    holding the marker the batch encoding splits at (``,"",``) and empty strings."""
    out = []
    for decision in generated(rng, n):
        decision["reasons"] = {"capped": "task_types"} if rng.random() < capped else {}
        if odd and rng.random() < 0.3:
            field = rng.choice(["tenant", "model", "decision_id", "state_key"])
            decision[field] = rng.choice(["", ',"",', 'a,"",b', '"', "],[3,"])
        out.append(served_fields(decision))
    return out


def handoff(rng: random.Random, served: list[Served], start: int = 0) -> list[tuple[int, int, Served]]:
    """Runs of one partition, as a handoff holds them, each run's offsets consecutive or with gaps (records
    the join does not keep) after where the partition's previous run ended."""
    out: list[tuple[int, int, Served]] = []
    ends: dict[int, int] = {}
    i = 0
    while i < len(served):
        partition, size = rng.randrange(3), rng.choice([1, 2, 7, 40])
        offset = ends.get(partition, start) + rng.choice([0, 0, 0, 1, 5])
        for s in served[i : i + size]:
            out.append((partition, offset, s))
            offset += rng.choice([1, 1, 1, 1, 2])
        ends[partition] = offset
        i += size
    return out


def window_state(join: JoinLogic) -> dict[int, tuple[int, int, bytes, int]]:
    return {p: (w.base, w.start, bytes(w.flags), w.count) for p, w in join.unresolved.items()}


def make(durable: Any = None, early: Any = None, max_capped: int | None = None) -> JoinLogic:
    return JoinLogic(
        PendingStore({} if durable is None else durable),
        {} if early is None else early,
        lambda t: POLICIES[t],
        max_capped=lambda: max_capped,
    )


def assert_same(batch: JoinLogic, single: JoinLogic) -> None:
    assert isinstance(batch.pending, PendingStore) and isinstance(single.pending, PendingStore)
    assert batch.pending.held == single.pending.held
    assert list(batch.pending.held) == list(single.pending.held)  # the same order too
    assert dict(batch.pending.durable) == dict(single.pending.durable)
    assert batch._deadlines == single._deadlines and batch._capped == single._capped
    assert window_state(batch) == window_state(single)
    assert dict(batch.early) == dict(single.early)


@pytest.mark.parametrize("odd", [False, True])
def test_encode_fresh_many_is_encode_fresh_of_each(odd: bool) -> None:
    rng = random.Random(31)
    for n in (0, 1, 2, 5, 300):
        served = uncapped(rng, n, odd)
        decisions = [(rng.randrange(4), rng.randrange(10**9), s) for s in served]
        deadline_ms = {t: rng.randrange(10**13) for t in POLICIES}
        expected = [encode_fresh(s, deadline_ms[s[3]], offset) for _p, offset, s in decisions]
        assert encode_fresh_many(decisions, deadline_ms) == expected


def test_add_many_is_add_of_each() -> None:
    rng = random.Random(32)
    for _ in range(2000):
        one, many = OffsetWindow(), OffsetWindow()
        at = rng.randrange(10_000)
        for _ in range(rng.randint(1, 6)):
            kind = rng.choice(["run", "gap", "back", "dupes", "empty", "remove"])
            if kind == "remove" and one.count:
                offset = rng.choice(
                    [o for o in range(one.base, one.base + len(one.flags)) if one.flags[o - one.base]]
                )
                one.remove(offset)
                many.remove(offset)
                continue
            start = {"run": at, "gap": at + rng.randint(1, 9), "back": at - rng.randint(1, 30)}.get(kind, at)
            offsets = list(range(start, start + rng.randint(0, 50)))
            if kind == "dupes" and offsets:
                offsets.append(offsets[0])
            if kind == "empty":
                offsets = []
            for offset in offsets:
                one.add(offset)
            many.add_many(offsets)
            assert (one.base, one.start, one.flags, one.count) == (
                many.base,
                many.start,
                many.flags,
                many.count,
            )
            at = max([at, *offsets]) + 1 if offsets else at


@pytest.mark.parametrize(
    ("odd", "capped", "max_capped"),
    [(False, 0.0, None), (True, 0.0, None), (False, 0.5, None), (True, 0.3, 1500), (False, 0.5, 300)],
)
def test_a_fresh_handoff_is_held_as_one_decision_at_a_time_holds_it(
    odd: bool, capped: float, max_capped: int | None
) -> None:
    """Capped decisions too: queued while the bound holds; past it (a bound of 300) the handoffs that would give
    some up go one decision at a time, and the two joins still agree."""
    rng = random.Random(33)
    batch, single = make(max_capped=max_capped), make(max_capped=max_capped)
    start = 0
    for round_ in range(8):
        decisions = handoff(rng, uncapped(rng, rng.choice([1, 30, 500]), odd, capped), start)
        start = max(offset for _p, offset, _s in decisions) + 1
        now_s = 1.75e9 + round_ * 0.37
        results = (JoinResult(), JoinResult())
        batch.on_served(decisions, now_s, TAG_WORKER, results[0])
        single.on_served(iter(decisions), now_s, TAG_WORKER, results[1])  # not a list: one at a time
        assert results[0] == results[1]
        assert_same(batch, single)
        assert batch._capped_waiting == single._capped_waiting and batch.given_up == single.given_up
        for partition in range(3):
            assert batch.oldest_unresolved(partition) == single.oldest_unresolved(partition)
    if max_capped == 300:
        assert batch.given_up > 0


def test_a_capped_queue_due_for_its_rebuild_is_rebuilt_as_one_decision_at_a_time_does() -> None:
    """Capped decisions joined since they were queued leave their queue at the partition's next capped decision
    once they are most of it (``_track_capped``): the handoff that would do so goes one decision at a time."""
    rng = random.Random(35)
    batch, single = make(), make()
    first = [(0, i, s) for i, s in enumerate(uncapped(rng, COMPACT_MIN + 200, capped=1.0))]
    for join in (batch, single):
        join.on_served(list(first), 1.75e9, TAG_WORKER, JoinResult())
        for _p, offset, s in first[:-3]:  # joined: no longer waiting, still queued
            join.on_feedback(
                FeedbackRecord({"request_id": s[0], "model": s[5]}, b"{}", 0, offset), 1.75e9 + 1
            )
    assert len(batch._capped[0]) == COMPACT_MIN + 200 and len(batch._capped_waiting) == 3
    second = [(0, COMPACT_MIN + 200 + i, s) for i, s in enumerate(uncapped(rng, 40, capped=0.5))]
    batch.on_served(second, 1.75e9 + 2, TAG_WORKER, JoinResult())
    single.on_served(iter(second), 1.75e9 + 2, TAG_WORKER, JoinResult())
    assert batch._capped == single._capped and len(batch._capped[0]) < 100
    assert batch._capped_waiting == single._capped_waiting
    assert_same(batch, single)


class Table:
    """A faust table as the join sees it (``StagedTable``): a store with a dict behind it."""

    class Store:
        def __init__(self) -> None:
            self.data: dict[str, bytes] = {}

        def __contains__(self, key: object) -> bool:
            return key in self.data

        def __getitem__(self, key: str) -> bytes:
            return self.data[key]

        def __setitem__(self, key: str, value: bytes) -> None:
            self.data[key] = value

        def __delitem__(self, key: str) -> None:
            del self.data[key]

        def keys(self) -> Any:
            return self.data.keys()

    def __init__(self) -> None:
        self.data = Table.Store()


@pytest.mark.parametrize("native_hold", [True, False])
@pytest.mark.parametrize("case", ["held", "durable", "parked", "twice", "capped", "bad_policy"])
def test_a_handoff_the_batch_path_cannot_take_goes_one_decision_at_a_time(
    case: str, native_hold: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decision already held, resolved (in the table), with its feedback parked, or twice in the handoff, a
    capped one, or a task type whose policy fails: the handoff leaves the join as the per-decision path does
    (duplicates counted, the parked feedback joined, capped decisions queued, the failure at the same index);
    with the held check and insertion in C (``_native.hold_new``) or in Python."""
    if not native_hold:
        monkeypatch.setattr(pending, "_NATIVE_HOLD", None)
    rng = random.Random(34)
    joins = [make(StagedTable(Table(), lambda _k: 0), StagedTable(Table(), lambda _k: 0)) for _ in range(2)]
    served = uncapped(rng, 60)
    first, second = handoff(rng, served[:30]), handoff(rng, served[30:], 1000)
    if case == "twice":
        second.append((second[-1][0], second[-1][1] + 1, second[0][2]))
    if case == "capped":
        second[5] = (second[5][0], second[5][1], (*second[5][2][:10], True))
    if case == "bad_policy":
        second[7] = (second[7][0], second[7][1], (*second[7][2][:3], "unknown", *second[7][2][4:]))
    results: list[list[JoinResult]] = [[], []]
    failed: list[list[int]] = [[], []]
    for j, join in enumerate(joins):
        join.on_served(first, 1.75e9, TAG_WORKER, JoinResult())
        if case == "held":
            second.insert(3, first[4])
        if case == "durable":
            request_id = first[2][2][0]
            join.on_feedback(
                FeedbackRecord({"request_id": request_id, "model": first[2][2][5]}, b"{}", 0, 1), 1.75e9
            )
            second.insert(3, first[2])
        if case == "parked":
            request_id = second[9][2][0]
            join.on_feedback(
                FeedbackRecord({"request_id": request_id, "model": second[9][2][5]}, b"{}", 0, 2), 1.75e9
            )
        result = JoinResult()
        results[j].append(result)
        try:
            join.on_served(second if j == 0 else iter(second), 1.75e9 + 1, TAG_WORKER, result)
        except KeyError:
            failed[j].append(join.failed_at)
        if case in ("held", "durable"):
            second.pop(3)
    assert results[0] == results[1]
    assert failed[0] == failed[1] == ([7] if case == "bad_policy" else [])
    expected = {
        "held": {"duplicate_decisions": 1},
        "durable": {"duplicate_decisions": 1},
        "parked": {"joined": 1},
        "twice": {"duplicate_decisions": 1},
    }
    assert results[0][0].counters == expected.get(case, {})
    batch, single = joins
    assert isinstance(batch.pending, PendingStore) and isinstance(single.pending, PendingStore)
    assert batch.pending.held == single.pending.held
    assert dict(batch.pending.durable.items()) == dict(single.pending.durable.items())
    assert batch._deadlines == single._deadlines and batch._capped == single._capped
    assert window_state(batch) == window_state(single)
    assert dict(batch.early.items()) == dict(single.early.items())
