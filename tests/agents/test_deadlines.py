"""The join's deadline index (``agents/deadlines.py``): one entry per run of a handoff, due in deadline order and,
within a deadline, in the order decided; and the join's expiry through it over many handoffs (fixed seeds)."""

from __future__ import annotations

import gc
import random
from typing import Any

from banditroute.agents.deadlines import Deadlines
from banditroute.agents.join import COMPACT_MIN, TAG_WORKER, JoinLogic, JoinPolicy, JoinResult
from banditroute.agents.pending import PendingStore
from banditroute.served import Served, served_fields
from tests.agents.test_join import decision, feedback


def served(request_id: str, capped: bool = False) -> Served:
    event: dict[str, Any] = decision(request_id)
    if capped:
        event["reasons"] = {"capped": "task_types"}
    return served_fields(event)


def make(wait_s: float = 10.0, max_capped: int | None = None) -> JoinLogic:
    return JoinLogic(
        PendingStore({}),
        {},
        lambda _t: JoinPolicy(wait_s=wait_s, keep_joined_s=5, on_timeout="default_reward"),
        max_capped=lambda: max_capped,
    )


def expired(result: JoinResult) -> list[str]:
    return [outcome["request_id"] for outcome in result.outcomes if outcome["kind"] == "timeout"]


def test_a_handoff_run_is_one_index_entry_and_its_decisions_expire_in_the_order_decided() -> None:
    join = make()
    # request ids whose text order is not the order decided ("r10" < "r9"): the index used to take tied
    # deadlines by request id
    for step in range(3):
        handoff = [(0, step * 12 + i, served(f"r{step * 12 + i}")) for i in range(12)]
        join.on_served(handoff, float(step), TAG_WORKER, JoinResult())
    assert len(join._deadlines[0].heap) == 3  # one per run, not one per decision
    assert len(join._deadlines[0]) == 36
    first = join.on_tick(0, 1, sent_at_s=10.0 + 1.0)  # the first step's deadline (the clock margin is 1 s)
    assert expired(first) == [f"r{i}" for i in range(12)]
    rest = join.on_tick(0, 2, sent_at_s=12.0 + 1.0)
    assert expired(rest) == [f"r{i}" for i in range(12, 36)]


def test_feedback_inside_a_run_leaves_the_rest_of_the_run_to_expire() -> None:
    join = make()
    join.on_served([(0, i, served(f"q{i}")) for i in range(50)], 0.0, TAG_WORKER, JoinResult())
    for i in range(0, 50, 3):
        assert len(join.on_feedback(feedback(f"q{i}", offset=i), now_s=1.0).outcomes) == 1
    result = join.on_tick(0, 9, sent_at_s=11.0)
    assert expired(result) == [f"q{i}" for i in range(50) if i % 3]
    assert join.oldest_unresolved(0) is None


def test_given_up_decisions_leave_the_runs_they_were_in() -> None:
    """Capped decisions handed over in runs, then given up past the bound: the index drops them from the runs
    (``Deadlines.keep``) and the ones still waiting expire, each once."""
    join = make(max_capped=1600)
    offset = 0
    for step in range(5):
        handoff = [(0, offset + i, served(f"c{step}-{i}", capped=True)) for i in range(800)]
        offset += 800
        join.on_served(handoff, 0.0, TAG_WORKER, JoinResult())
    assert join.given_up == 5 * 800 - 1600 and join.given_up >= COMPACT_MIN
    assert len(join._deadlines[0]) <= 1600 + 2 * COMPACT_MIN
    waiting = set(join.pending.held) if isinstance(join.pending, PendingStore) else set()
    assert len(waiting) == 1600
    result = join.on_tick(0, 1, sent_at_s=12.0)
    assert sorted(expired(result)) == sorted(waiting)


def reference_order(pushed: list[tuple[float, int, str | list[str]]]) -> list[tuple[float, str]]:
    """The order the index takes ids in: deadline, then runs (in the order pushed) before single ids, single ids
    by request id, a run's ids in their order."""
    keyed: list[tuple[Any, ...]] = []
    for deadline, seq, ids in pushed:
        if isinstance(ids, str):
            keyed.append((deadline, 1, ids, 0, ids))
        else:
            keyed.extend((deadline, 0, seq, i, request_id) for i, request_id in enumerate(ids))
    return [(k[0], k[-1]) for k in sorted(keyed)]


def test_the_index_takes_ids_by_deadline_then_as_pushed_with_many_runs_and_ties() -> None:
    rng = random.Random(41)
    for _ in range(200):
        index = Deadlines()
        pushed: list[tuple[float, int, str | list[str]]] = []
        names = iter(range(10**6))
        for seq in range(rng.randint(1, 40)):
            deadline = float(rng.choice([1, 2, 2, 3, 5]))  # many ties
            if rng.random() < 0.4:
                request_id = f"s{next(names)}"
                index.push(deadline, request_id)
                pushed.append((deadline, seq, request_id))
            else:
                ids = [f"r{next(names)}" for _ in range(rng.choice([0, 1, 2, 7, 30]))]
                rng.shuffle(ids)
                index.push_run(deadline, ids)
                if len(ids) == 1:
                    pushed.append((deadline, seq, ids[0]))  # a run of one is a single entry
                elif ids:
                    pushed.append((deadline, seq, ids))
        expected = reference_order(pushed)
        assert len(index) == len(expected)
        taken: list[tuple[float, str]] = []
        for now in (0.0, 1.5, 2.0, 4.0, 9.0):
            while (request_id := index.pop_due(now)) is not None:
                taken.append((now, request_id))
            assert all(d > now for d, _ in expected[len(taken) :])  # nothing due left behind
        assert [r for _, r in taken] == [r for _, r in expected]
        assert all(d <= now for (now, _), (d, _) in zip(taken, expected, strict=True))
        assert len(index) == 0 and index.pop_due(float("inf")) is None


def test_keep_drops_ids_and_the_index_equals_one_pushed_id_by_id() -> None:
    rng = random.Random(42)
    runs, singles = Deadlines(), Deadlines()
    for step in range(30):
        deadline = float(rng.randint(0, 5))
        ids = [f"r{step}-{i}" for i in range(rng.randint(0, 20))]
        runs.push_run(deadline, ids)
        for request_id in ids:
            singles.push(deadline, request_id)
    assert runs == singles and len(runs) == len(singles)
    dropped = {request_id for _, request_id in runs.scheduled() if rng.random() < 0.6}
    runs.keep(lambda request_id: request_id not in dropped)
    singles.keep(lambda request_id: request_id not in dropped)
    assert runs == singles and len(runs) == len(singles) > 0
    assert not any(request_id in dropped for _, request_id in runs.scheduled())
    order = []
    while (request_id := runs.pop_due(10.0)) is not None:
        order.append(request_id)
    assert sorted(order) == sorted(r for _, r in singles.scheduled())


def test_the_count_of_ids_follows_every_push_take_and_keep() -> None:
    """``len`` is a count kept as ids come and go (review22: it walked the heap, and the join's compaction asks at
    every capped decision given up); it equals the ids scheduled after any sequence of pushes, takes and keeps.
    An equivalence: passes on the walk too."""
    rng = random.Random(43)
    for _ in range(100):
        index = Deadlines()
        names = iter(range(10**6))
        for _step in range(rng.randint(1, 120)):
            op = rng.random()
            if op < 0.3:
                index.push(float(rng.randint(0, 9)), f"s{next(names)}")
            elif op < 0.6:
                ids = [f"r{next(names)}" for _ in range(rng.choice([0, 1, 2, 5, 40]))]
                index.push_run(float(rng.randint(0, 9)), ids)
            elif op < 0.9:
                now = float(rng.randint(0, 9))
                for _take in range(rng.randint(1, 30)):
                    if index.pop_due(now) is None:
                        break
            else:
                index.keep(lambda _request_id: rng.random() < 0.5)
            assert len(index) == sum(1 for _ in index.scheduled())


def test_a_runs_request_ids_are_out_of_the_cyclic_collectors_sight() -> None:
    """The index holds every in-flight request id until its deadline; the garbage collector must not walk them
    (a list per run made each young collection walk every id pushed since the one before): a waiting run's
    entry holds nothing the collector tracks, before and after ``keep`` rebuilds it."""

    def runs(index: Deadlines) -> list[tuple[Any, ...]]:
        waiting = [item for item in index.heap if len(item) == 4]
        assert not any(gc.is_tracked(part) for item in waiting for part in item)
        # one string: never tracked on any CPython (a dict of strings is untracked up to 3.13 only)
        assert all(type(item[3]) is str for item in waiting)
        return waiting

    index = Deadlines()
    index.push_run(5.0, [f"r{i}" for i in range(1000)])
    index.push_run(5.0, [f"s{i}" for i in range(3)])
    assert len(runs(index)) == 2
    index.keep(lambda request_id: not request_id.endswith("7"))
    assert len(runs(index)) == 2
    assert len(index) == 900 + 3
    taken = [index.pop_due(5.0) for _ in range(len(index))]
    assert taken == [f"r{i}" for i in range(1000) if i % 10 != 7] + ["s0", "s1", "s2"]
    assert index.pop_due(5.0) is None


def test_a_run_partly_taken_keeps_its_order_through_keep_and_a_push_at_its_deadline() -> None:
    index = Deadlines()
    index.push_run(5.0, ["b3", "a2", "c1", "a0", "d9"])  # not in id order: taken in the order pushed
    assert [index.pop_due(5.0), index.pop_due(5.0)] == ["b3", "a2"]
    index.push(5.0, "a1")  # a single entry at the run's deadline: after the run (its id against "")
    assert sorted(index.scheduled()) == [(5.0, "a0"), (5.0, "a1"), (5.0, "c1"), (5.0, "d9")]
    index.keep(lambda request_id: request_id != "a0")
    assert len(index) == 3
    assert [index.pop_due(5.0) for _ in range(3)] == ["c1", "d9", "a1"]
    assert index.pop_due(5.0) is None and len(index) == 0


def test_a_run_whose_ids_hold_the_separator_keeps_its_order() -> None:
    index = Deadlines()
    index.push_run(5.0, ["d", "b\nc", "a"])  # not a valid request id; still each id once, in the order pushed
    assert len(index) == 3
    index.keep(lambda request_id: True)
    assert [index.pop_due(5.0) for _ in range(3)] == ["d", "b\nc", "a"]
    assert index.pop_due(5.0) is None
