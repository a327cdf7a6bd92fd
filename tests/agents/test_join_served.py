"""The join's fast path for handed-over decisions (``JoinLogic.on_served``, ``encode_fresh``) against the
entry the dataclass path stores, on generated decisions (fixed seeds)."""

from __future__ import annotations

import random
from collections import deque
from typing import Any

import pytest

from banditroute.agents.join import TAG_WORKER, FeedbackRecord, JoinLogic, JoinPolicy, JoinResult
from banditroute.agents.pending import Pending, PendingStore, encode_fresh
from banditroute.served import served_fields

POLICIES = {"chat": JoinPolicy(wait_s=120.0), "code": JoinPolicy(wait_s=0.75), "x.y": JoinPolicy(wait_s=33.3)}


def generated(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Decisions of every shape the join stores: tenants or not, a state key other than the task type, a
    decision id other than ``d:<request_id>``, another policy, no fallbacks, odd propensities."""
    out = []
    for i in range(n):
        request_id = f"r{i}-{rng.getrandbits(40):x}"
        task_type = rng.choice(list(POLICIES))
        tenant = rng.choice([None, "acme", "t-2"])
        decision: dict[str, Any] = {
            "request_id": request_id,
            "decision_id": rng.choice([f"d:{request_id}", f"d:{request_id}", f"other:{i}"]),
            "task_type": task_type,
            "tenant": tenant,
            "model": rng.choice(["m1", "m2", "gpt-ü"]),
            "fallbacks": rng.sample(["a", "b", "c", "d"], rng.randint(0, 3)),
            "propensity": rng.choice([1.0, 0.5, rng.random(), 1e-7]),
            "state_version": rng.randint(0, 10**12),
            "policy": rng.choice(
                [{"name": "thompson", "version": "1"}, {"name": "greedy", "version": "v"}, {}]
            ),
        }
        if rng.random() < 0.5:
            decision["state_key"] = rng.choice([task_type, f"{tenant}/{task_type}"])
        if rng.random() < 0.7:
            decision["reasons"] = {"capped": rng.choice([None, None, "task_types", "tenants"])}
        out.append(decision)
    return out


def reference_entry(decision: dict[str, Any], offset: int, now_s: float) -> Pending:
    """The entry the join built per decision before the fast path (its dataclass path)."""
    return Pending(
        decision_id=decision["decision_id"],
        task_key=decision.get("task_key") or decision.get("state_key") or decision["task_type"],
        task_type=decision["task_type"],
        tenant=decision.get("tenant"),
        model=decision["model"],
        fallbacks=tuple(decision.get("fallbacks") or ()),
        propensity=float(decision["propensity"]),
        state_version=int(decision["state_version"]),
        policy=str((decision.get("policy") or {}).get("name", "thompson")),
        deadline_s=now_s + POLICIES[decision["task_type"]].wait_s,
        dec_off=offset,
    )


def make(max_capped: int | None = None) -> JoinLogic:
    return JoinLogic(PendingStore({}), {}, lambda t: POLICIES[t], max_capped=lambda: max_capped)


def test_encode_fresh_is_the_dataclass_encoding() -> None:
    rng = random.Random(16)
    for i, decision in enumerate(generated(rng, 3000)):
        now_s = 1.7e9 + rng.random() * 1e6
        entry = reference_entry(decision, i * 7, now_s)
        entry.deadline_s = round(entry.deadline_s * 1000) / 1000.0
        fast = encode_fresh(served_fields(decision), round(entry.deadline_s * 1000), i * 7)
        assert fast == entry.encode(decision["request_id"])
        back = Pending.decode(fast, decision["request_id"])
        assert back == entry


@pytest.mark.parametrize("max_capped", [None, 50])
def test_on_served_stores_what_the_dataclass_path_stored(max_capped: int | None) -> None:
    rng = random.Random(17)
    decisions = generated(rng, 2000)
    fast, slow = make(max_capped), make(max_capped)
    now_s = 1.75e9 + 0.123456
    batch = [(i % 3, 100 + i, served_fields(d)) for i, d in enumerate(decisions)]
    result, reference = JoinResult(), JoinResult()
    fast.on_served(batch, now_s, TAG_WORKER, result)
    for partition, offset, served in batch:
        decision = decisions[offset - 100]
        slow._store(served[0], reference_entry(decision, offset, now_s), partition)
        if (decision.get("reasons") or {}).get("capped") is not None:
            slow._track_capped(partition, served[0], reference)
    assert result.outcomes == [] and result.counters == reference.counters
    assert bool(result.counters) == (max_capped is not None)  # capped decisions given up past the bound
    assert isinstance(fast.pending, PendingStore) and isinstance(slow.pending, PendingStore)
    assert fast.pending.held == slow.pending.held and not fast.pending.durable
    assert fast._deadlines == slow._deadlines and fast._capped == slow._capped
    for partition in range(3):
        assert fast.oldest_unresolved(partition) == slow.oldest_unresolved(partition)
    # the same decisions again (re-decided after a crash): those still held count as duplicates, stored once
    held = sum(1 for _p, _o, served in batch[:10] if served[0] in fast.pending)
    assert held > 0
    again = JoinResult()
    fast.on_served(batch[:10], now_s + 1, TAG_WORKER, again)
    assert again.counters.get("duplicate_decisions") == held
    if max_capped is None:
        assert fast.pending.held == slow.pending.held


@pytest.mark.parametrize("max_capped", [None, 50])
def test_on_served_in_partition_runs_equals_one_decision_at_a_time(max_capped: int | None) -> None:
    """A handoff holds runs of one partition (each record batch's decisions): one call over the runs, with
    decisions already held (re-decided) inside them, stores what one call per decision stores."""
    rng = random.Random(20)
    decisions = generated(rng, 1500)
    batch = [
        ((i // rng.choice([1, 40, 200])) % 4, 100 + i, served_fields(d)) for i, d in enumerate(decisions)
    ]
    first, again = batch[:1000], batch[900:]  # the second handoff repeats 100 decisions of the first
    rng.shuffle(again)
    again.sort(key=lambda item: item[0])  # runs again, the repeated ones among the new ones
    whole, single = make(max_capped), make(max_capped)
    results: list[JoinResult] = [JoinResult(), JoinResult()]
    for i, handoff in enumerate((first, again)):
        now_s = 1.75e9 + i
        whole.on_served(handoff, now_s, TAG_WORKER, results[0])
        for item in handoff:
            single.on_served([item], now_s, TAG_WORKER, results[1])
    assert results[0].counters == results[1].counters and results[0].counters.get("duplicate_decisions")
    assert isinstance(whole.pending, PendingStore) and isinstance(single.pending, PendingStore)
    assert whole.pending.held == single.pending.held and whole.pending.durable == single.pending.durable
    assert whole._deadlines == single._deadlines and whole._capped == single._capped
    for partition in range(4):
        assert whole.oldest_unresolved(partition) == single.oldest_unresolved(partition)


def test_on_served_joins_feedback_that_came_first() -> None:
    join = make()
    decision = generated(random.Random(18), 1)[0]
    decision["task_type"] = "chat"
    early = FeedbackRecord(
        {
            "request_id": decision["request_id"],
            "model": decision["model"],
            "quality": 0.5,
            "idempotency_key": "k",
        },
        b"{}",
        partition=0,
        offset=9,
    )
    parked = join.on_feedback(early, now_s=1.0)
    assert parked.outcomes == [] and decision["request_id"] in join.early
    result = JoinResult()
    join.on_served([(0, 5, served_fields(decision))], 2.0, TAG_WORKER, result)
    assert len(result.outcomes) == 1 and result.outcomes[0]["model"] == decision["model"]
    assert decision["request_id"] not in join.early


def test_skip_own_stops_at_every_record_of_someone_else() -> None:
    from collections import deque

    from banditroute.kafka.handoff import skip_own

    rng = random.Random(19)
    for _ in range(300):
        # a partition's log: own record batches with foreign records (ticks, local-mode decisions) between
        owner: list[bool] = []
        ranges: deque[tuple[int, int]] = deque()
        while len(owner) < 60:
            if rng.random() < 0.3:
                owner.append(False)
            else:
                n = rng.randint(1, 6)
                ranges.append((len(owner), len(owner) + n))
                owner.extend([True] * n)
        at = rng.randint(0, len(owner))
        expected = at
        while expected < len(owner) and owner[expected] and any(f <= expected < e for f, e in ranges):
            expected += 1
        assert skip_own(ranges, at) == expected
        assert all(first > expected for first, _end in ranges)


@pytest.mark.parametrize("bad", [(0,), (2, 5), (6, 7), (3, 4)])
def test_a_handoff_goes_on_past_each_decision_the_join_fails_on(bad: tuple[int, ...]) -> None:
    """``JoinIO._served_past_failures`` (both join paths) resumes after the decision ``on_served`` failed on
    (``JoinLogic.failed_at``, relative to the slice it was given): every failed index reported once, in order,
    and every other decision of the handoff joined, whether the failures are first, last, apart or adjacent."""
    from types import SimpleNamespace

    from banditroute.join_io import JoinIO

    decisions = generated(random.Random(21), 8)
    # a join table record no join wrote under these request ids: the join fails to decode it
    durable = {decisions[i]["request_id"]: b"not a pending entry" for i in bad}
    join = JoinLogic(PendingStore(durable), {}, lambda t: POLICIES[t], max_capped=lambda: None)
    handoff = [(0, 10 + i, served_fields(d)) for i, d in enumerate(decisions)]
    result = JoinResult()
    failures = JoinIO._served_past_failures(
        SimpleNamespace(join=join),  # type: ignore[arg-type]
        handoff,
        1.75e9,
        TAG_WORKER,
        lambda: result,
    )
    assert [i for i, _exc in failures] == list(bad)
    joined = {d["request_id"] for i, d in enumerate(decisions) if i not in bad}
    assert set(join.pending.held) == joined
