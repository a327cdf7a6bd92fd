"""Decisions the join reads from the ``decisions`` topic (a local-mode client's, another worker's, anything with
write access to the topic) are held to the worker's own bounds before they are joined:

* the state key a decision names is admitted against the worker's ``limits`` as a request of the same task type
  and tenant would be (``limits.ForeignKeys``): past ``max_task_types`` it learns into ``~shared``, past
  ``max_tenants_per_task_type`` into its task type's state, marked capped either way; with
  ``reject_unknown_task_types`` it is dead-lettered, as is a key no request could have had. Before bounds22 the
  join took the key as named, and each new one became a state (docs/guarantees.md, "What the caps do not bound");
* a decision larger than ``max_payload_bytes`` is dead-lettered as ``payload_too_large`` with its payload (before
  bounds22 it was joined, and held for the wait window whatever its size).

Both paths of the decisions reader are checked: the runs of ``_join_decisions`` and ``_join_record``."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest

from banditroute.agents.pending import Pending
from banditroute.limits import SHARED_KEY, Admission, Limits
from tests.agents.test_join_decisions_batch import LOCAL, TOPIC, Record, decision, join_io, per_record

PATHS = ["batched", "per_record"]


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The join's wall clock at 100 s, so the slots' idle times are known."""
    monkeypatch.setattr("banditroute.join_io.time.time", lambda: 100.0)


def run(io: Any, records: list[Record], path: str) -> None:
    if path == "batched":
        asyncio.run(io._join_decisions(records))
    else:
        asyncio.run(per_record(io, records))


def records(decisions: list[dict[str, Any]], headers: Any = LOCAL, first: int = 100) -> list[Record]:
    return [Record(TOPIC, 0, first + i, orjson.dumps(d), headers) for i, d in enumerate(decisions)]


def held(io: Any) -> dict[str, tuple[str, bool]]:
    """Request id -> (the state key its outcome will learn into, whether it counts as capped)."""
    capped = {rid for queue in io.join._capped.values() for rid in queue}
    return {
        rid: (Pending.decode(raw, rid).task_key, rid in capped) for rid, raw in io.join.pending.held.items()
    }


def letters(published: list[Any]) -> list[tuple[int, str, str]]:
    return [(item[4], item[5], item[6]) for item in published if item[0] == "dead letter"]


@pytest.mark.parametrize("path", PATHS)
def test_task_types_past_the_cap_learn_into_the_shared_state(path: str) -> None:
    published: list[Any] = []
    io = join_io(published, Limits(max_task_types=3))
    flood = [decision(f"r{i}", task_type=f"t{i}", state_key=f"t{i}") for i in range(40)]
    flood.append(decision("again", task_type="t1", state_key="t1"))  # a task type held: its own state
    run(io, records(flood), path)

    keys = held(io)
    assert {keys[f"r{i}"] for i in range(3)} == {("t0", False), ("t1", False), ("t2", False)}
    assert {keys[f"r{i}"] for i in range(3, 40)} == {(SHARED_KEY, True)}
    assert keys["again"] == ("t1", False)
    assert {key for key, _ in keys.values()} == {"t0", "t1", "t2", SHARED_KEY}
    assert io.foreign_capped == Counter({"max_task_types": 37})
    assert letters(published) == []


@pytest.mark.parametrize("path", PATHS)
def test_tenants_past_the_cap_learn_into_their_task_types_state(path: str) -> None:
    io = join_io([], Limits(max_tenants_per_task_type=2))
    flood = [decision(f"r{i}", tenant=f"n{i}", state_key=f"n{i}|chat") for i in range(10)]
    flood.append(decision("no-key", tenant="n1", state_key=None))  # the snapshot's key: per tenant here
    run(io, records(flood), path)

    keys = held(io)
    assert [keys[f"r{i}"] for i in range(10)] == [("n0|chat", False), ("n1|chat", False)] + [
        ("chat", True)
    ] * 8
    assert keys["no-key"] == ("n1|chat", False)
    assert io.foreign_capped == Counter({"max_tenants_per_task_type": 8})


@pytest.mark.parametrize("path", PATHS)
def test_keys_no_request_could_have_are_dead_lettered(path: str) -> None:
    published: list[Any] = []
    io = join_io(published)
    bad = [
        decision("forged-key", state_key="something-else"),
        decision("long-type", task_type="t" * 5000, state_key="t" * 5000),
        decision("bad-tenant", tenant="a|b", state_key="a|b|chat"),
        decision("other-tenant", tenant="acme", state_key="globex|chat"),
        decision("key-not-text", state_key=["chat"]),
        decision("fine", state_key="chat"),
    ]
    run(io, records(bad), path)

    assert set(held(io)) == {"fine"}
    dead = letters(published)
    assert [(offset, reason) for offset, reason, _ in dead] == [
        (o, "validation_error") for o in range(100, 105)
    ]
    assert "is no identifier" in dead[1][2] and len(dead[1][2]) < 300
    assert "none of the keys" in dead[0][2]
    assert io.foreign_capped == Counter()


@pytest.mark.parametrize("path", PATHS)
def test_unknown_task_types_are_dead_lettered_when_requests_of_them_are_rejected(path: str) -> None:
    published: list[Any] = []
    io = join_io(published, Limits(reject_unknown_task_types=True, allowed_task_types=frozenset({"chat"})))
    run(io, records([decision("listed"), decision("unknown", task_type="code", state_key="code")]), path)

    assert held(io) == {"listed": ("chat", False)}
    assert [(o, reason) for o, reason, _ in letters(published)] == [(101, "validation_error")]
    assert "unknown_task_type" in letters(published)[0][2]
    assert io.foreign_capped == Counter({"unknown_task_type": 1})


@pytest.mark.parametrize("path", PATHS)
def test_well_behaved_local_decisions_learn_as_they_name(path: str) -> None:
    """Within the caps every key a local-mode client's decide logic names stands: its own task types and tenants,
    ``~shared`` (capped by the client), and a task type's key for a tenant the client capped."""
    io = join_io([], Limits(max_task_types=5, max_tenants_per_task_type=5))
    local = [
        decision("plain"),
        decision("tenant", tenant="acme", state_key="acme|chat"),
        decision("shared", task_type="flood-1", state_key=SHARED_KEY, reasons={"capped": "max_task_types"}),
        decision("tenant-capped", tenant="globex", state_key="chat", reasons={"capped": "max_tenants"}),
        decision("code", task_type="code", state_key="code"),
        decision("no-model", task_type="junk", state_key="junk", model=None),  # serves none: no slot taken
    ]
    run(io, records(local), path)

    assert held(io) == {
        "plain": ("chat", False),
        "tenant": ("acme|chat", False),
        "shared": (SHARED_KEY, True),
        "tenant-capped": ("chat", True),
        "code": ("code", False),
    }
    assert set(io.foreign_keys.held.task_types) == {"chat", "code"}
    assert io.foreign_capped == Counter()


@pytest.mark.parametrize("path", PATHS)
def test_the_decide_loops_slots_count_against_the_cap(path: str) -> None:
    """A task type the decide loop holds keeps its key (no new state); a new one is admitted only while the decide
    loop's task types and the join's together are within ``max_task_types``, as a request's would be."""
    io = join_io([], Limits(max_task_types=3))
    decided = Admission()
    decided.task_types.update({"a": 1.0, "b": 1.0})
    io.decide_logic = type("DecideLogic", (), {"admission": decided})()
    flood = [decision(f"r-{t}", task_type=t, state_key=t) for t in ("a", "b", "c", "d", "e")]
    run(io, records(flood), path)

    assert {rid: key for rid, (key, _) in held(io).items()} == {
        "r-a": "a",
        "r-b": "b",
        "r-c": "c",
        "r-d": SHARED_KEY,
        "r-e": SHARED_KEY,
    }


@pytest.mark.parametrize("path", PATHS)
def test_a_decision_larger_than_max_payload_bytes_is_dead_lettered_with_its_payload(path: str) -> None:
    published: list[Any] = []
    io = join_io(published, max_payload_bytes=4096)
    big = decision("big", candidates=[{"model": "m1", "note": "x" * 8000}])
    batch = records([decision("small"), big, decision("after")])
    run(io, batch, path)

    assert set(held(io)) == {"small", "after"}
    [letter] = [item for item in published if item[0] == "dead letter"]
    _, raw, topic, partition, offset, reason, error = letter
    assert (raw, topic, partition, offset, reason) == (batch[1].value, TOPIC, 0, 101, "payload_too_large")
    assert f"decision is {len(batch[1].value)} bytes; at most 4096" in error


def test_slots_held_for_decisions_are_let_go_when_idle() -> None:
    from banditroute.limits import ForeignKeys  # the others run (and fail) on the code before bounds22 too

    keys, limits = ForeignKeys(), Limits(max_task_types=1, max_tenants_per_task_type=1)

    def check(task_type: str, tenant: str | None, key: str, now: float) -> str:
        return keys.check(limits, {}, lambda _t: True, None, task_type, tenant, key, now).key

    assert check("a", "x", "x|a", 0.0) == "x|a"
    assert check("a", "y", "y|a", 0.0) == "a"  # tenant cap
    assert check("b", None, "b", 0.0) == SHARED_KEY  # task type cap
    keys.evict_idle(10.0, 5.0)
    assert check("b", None, "b", 5.0) == SHARED_KEY  # "a" was named 5 s ago: still held
    keys.evict_idle(10.0, 20.0)
    assert keys.counts() == {"task_types_held": 0, "tenant_states_held": 0}
    assert check("b", None, "b", 20.0) == "b"
    assert check("a", "y", "y|a", 20.0) == SHARED_KEY  # "b" holds the one slot now


@pytest.mark.parametrize("path", PATHS)
def test_a_task_type_held_by_both_the_join_and_the_decide_loop_takes_one_slot(path: str) -> None:
    """A task type a local-mode client named first (held by the join) and then requested of this worker too (held
    by the decide loop) is one state: a new task type is still admitted while the two hold fewer than
    ``max_task_types`` together, as a request of it would be (review23: each was counted once per holder, and a
    well-behaved local decision learnt into ``~shared`` while the worker's cap had room)."""
    io = join_io([], Limits(max_task_types=3))
    decided = Admission()
    io.decide_logic = type("DecideLogic", (), {"admission": decided})()
    run(
        io,
        records(
            [decision("r-a", task_type="a", state_key="a"), decision("r-b", task_type="b", state_key="b")]
        ),
        path,
    )
    decided.task_types.update({"a": 1.0, "b": 1.0})  # then requests of them reach this worker's decide loop
    run(io, records([decision("r-c", task_type="c", state_key="c")], first=200), path)

    assert held(io)["r-c"] == ("c", False)
    assert io.foreign_capped == Counter()


@pytest.mark.parametrize("path", PATHS)
def test_a_tenant_held_by_both_the_join_and_the_decide_loop_takes_one_slot(path: str) -> None:
    """As for task types: a tenant of a task type held by the join and by the decide loop counts once against
    ``max_tenants_per_task_type``."""
    io = join_io([], Limits(max_tenants_per_task_type=3))
    decided = Admission()
    io.decide_logic = type("DecideLogic", (), {"admission": decided})()
    first = [decision(f"r-{n}", tenant=n, state_key=f"{n}|chat") for n in ("x", "y")]
    run(io, records(first), path)
    decided.tenants["chat"] = {"x": 1.0, "y": 1.0}
    run(io, records([decision("r-z", tenant="z", state_key="z|chat")], first=200), path)

    assert held(io)["r-z"] == ("z|chat", False)
    assert io.foreign_capped == Counter()


def test_a_full_cap_is_looked_at_again_when_a_size_changes_or_after_a_second() -> None:
    """``ForeignKeys._room`` walks the join's names only when the plain sum reaches the cap, and keeps a "no room"
    answer for a second while neither side's size changes (a flood past the cap does not walk per decision)."""
    from banditroute.limits import ForeignKeys

    keys, limits, decided = ForeignKeys(), Limits(max_task_types=3), Admission()

    def check(task_type: str, now: float) -> str:
        return keys.check(limits, {}, lambda _t: False, decided, task_type, None, task_type, now).key

    assert check("a", 0.0) == "a"
    decided.task_types.update({"a": 0.0, "b": 0.0})
    assert check("c", 0.0) == "c"  # a, b, c: "a" is one state
    assert check("d", 0.0) == SHARED_KEY
    del decided.task_types["b"]
    decided.task_types["c"] = 0.0  # same sizes, two names now held by both: a, c
    assert check("d", 0.5) == SHARED_KEY  # the answer of 0.0 stands for a second
    assert check("d", 1.0) == "d"
    del decided.task_types["c"]
    assert check("e", 1.0) == SHARED_KEY  # a, c, d
    del keys.held.task_types["c"]
    assert check("e", 1.0) == "e"  # a size changed: looked at again at once
