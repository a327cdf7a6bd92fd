"""The decisions reader's batches (``JoinIO._join_decisions``): local decisions are joined in runs, everything
else one record at a time. On a batch of every kind of record the reader meets (local decisions, ones that
serve no model, duplicates, a decision whose feedback came first, ticks, the worker's own decisions, another
worker's, records that are not decisions, a decision the join fails on), the join ends exactly where the
per-record path (``JoinIO._join_record`` for every record, as before the runs) leaves it: the same entries,
outcomes, dead letters, counters and local-decision counts."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any, NamedTuple

import orjson
import pytest

from banditroute.agents.join import FeedbackRecord, JoinLogic, JoinPolicy, JoinResult
from banditroute.agents.pending import PendingStore
from banditroute.join_io import TICK_HEADER, JoinIO, header
from banditroute.kafka.decision_publisher import ORIGIN_HEADER
from banditroute.kafka.handoff import DECIDER_HEADER
from banditroute.limits import Limits
from banditroute.web.top import TopTaskTypes

TOPIC = "t.decisions"
TOKEN = b"this-assignment"
LOCAL = ((ORIGIN_HEADER, b"local"),)


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


class _Snapshot:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.routes: dict[str, Any] = {}

    def is_per_tenant(self, task_type: str) -> bool:
        return True


class _Registry:
    model_names = frozenset({"m1", "m2"})

    def __init__(self, limits: Limits | None = None) -> None:
        self.snapshot = _Snapshot(limits or Limits())

    def join_policy(self, task_type: str) -> JoinPolicy:
        if task_type == "boom":
            raise LookupError("no join policy for 'boom'")
        return JoinPolicy(wait_s=30.0 if task_type == "chat" else 5.0)

    def state_key(self, tenant: str | None, task_type: str) -> str:
        return task_type if tenant is None else f"{tenant}|{task_type}"


class _Topic:
    def get_topic_name(self) -> str:
        return TOPIC


class _Decider:
    token = TOKEN


def decision(request_id: str, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "decision_id": f"d:{request_id}",
        "request_id": request_id,
        "task_type": "chat",
        "tenant": None,
        "model": "m1",
        "fallbacks": ["m2"],
        "propensity": 0.25,
        "candidates": [{"model": "m1", "sampled_utility": 0.5, "mean_utility": 0.4}],
        "policy": {"name": "thompson", "version": "v1"},
        "state_version": 3,
        "reasons": {"capped": None},
        "worker_id": "client-a",
        "is_default_route": False,
        "shadow": False,
        "state_key": "chat",
    }
    event.update(fields)
    return event


def the_batch() -> list[Record]:
    """Two partitions' records in reader order."""
    rows: list[tuple[int, Any, tuple[tuple[str, bytes], ...]]] = [
        (0, decision("r1"), LOCAL),
        (0, decision("r2", worker_id="client-b", model="m2", fallbacks=[]), LOCAL),
        (0, decision("r3", model=None), LOCAL),  # served no model: counted, nothing held
        (0, decision("r4", shadow=True), LOCAL),
        (0, decision("r1"), LOCAL),  # the same request again: a duplicate
        (0, decision("r5", tenant="acme", state_key=None), LOCAL),  # the registry's state key
        (0, decision("early"), LOCAL),  # its feedback was parked first: joined now
        (0, b"", ((TICK_HEADER, b"100.5"),)),
        (0, decision("r6", reasons={"capped": "task_types"}), LOCAL),
        (0, decision("own"), ((DECIDER_HEADER, TOKEN),)),  # handed over in memory
        (0, decision("r7", task_type="boom", state_key="boom"), LOCAL),  # the join fails on it
        (0, decision("r8"), LOCAL),
        (1, b"not json", LOCAL),
        (1, [1, 2], LOCAL),
        (1, decision("r9", worker_id=None), LOCAL),
        (1, {k: v for k, v in decision("r10").items() if k != "worker_id"}, LOCAL),  # no client id
        (1, decision("r11", propensity="x"), ()),  # no origin header: not counted, and it fails
        (1, decision("r12"), ()),
        (1, decision("w1"), ((DECIDER_HEADER, b"another-worker"),)),
        (1, decision("r13", task_type="code", state_key="code"), LOCAL),
        (1, b"", ((TICK_HEADER, b"not a time"),)),
        (1, decision("r14"), ((ORIGIN_HEADER, b"remote"),)),
    ]
    out = []
    for i, (partition, value, headers) in enumerate(rows):
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        out.append(Record(TOPIC, partition, 10 + i, raw, headers))
    return out


def join_io(published: list[Any], limits: Limits | None = None, max_payload_bytes: int = 65_536) -> Any:
    io: Any = object.__new__(JoinIO)
    io.registry, io.decisions, io.decider = _Registry(limits), _Topic(), _Decider()
    io.settings = SimpleNamespace(max_payload_bytes=max_payload_bytes)
    io.join = JoinLogic(PendingStore({}), {}, io.registry.join_policy, max_capped=lambda: 100)
    io.client_top, io.local_decisions, io.counters = TopTaskTypes(), Counter(), Counter()
    io.foreign_capped = Counter()
    io._init_join()
    feedback = {"request_id": "early", "model": "m1", "quality": 0.9}
    io.join.on_feedback(FeedbackRecord(feedback, orjson.dumps(feedback), 0, 40), now_s=99.0)

    async def finish(results: list[JoinResult]) -> None:
        for result in results:
            published.append(("result", result.outcomes, result.rejections, dict(result.counters)))

    async def dead_letter(raw: Any, topic: str, partition: int, offset: int, reason: str, error: str) -> None:
        published.append(("dead letter", raw, topic, partition, offset, reason, error))

    io._finish_join, io._dead_letter = finish, dead_letter
    return io


async def per_record(io: Any, records: list[Record]) -> None:
    """The decisions reader's batch as it was joined before the runs (main at c2a6fbf): record by record."""
    results: list[JoinResult] = []
    for record in records:
        origin = header(record.headers, DECIDER_HEADER)
        if origin is not None and origin == io.decider.token:
            if record.offset >= io._handed.get(record.partition, 0):
                first = io._ahead.get(record.partition, (record.offset, 0))[0]
                io._ahead[record.partition] = (first, record.offset)
            continue
        await io._join_record(record, results, worker=origin is not None)
    await io._finish_join(results)


def published_in_order(published: list[Any]) -> list[Any]:
    """What goes to Kafka, in order: outcomes and rejections, dead letters; and the counters, summed."""
    out: list[Any] = []
    counters: Counter[str] = Counter()
    for item in published:
        if item[0] == "result":
            out.extend(("outcome", o["request_id"], o["src"], o["off"]) for o in item[1])
            out.extend(("rejection", r.reason, r.offset) for r in item[2])
            counters.update(item[3])
        else:
            out.append(item[:6])
    return [*out, sorted(counters.items())]


def test_runs_leave_the_join_where_the_per_record_path_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("banditroute.join_io.time.time", lambda: 100.0)
    batched_out: list[Any] = []
    single_out: list[Any] = []
    batched, single = join_io(batched_out), join_io(single_out)
    asyncio.run(batched._join_decisions(the_batch()))
    asyncio.run(per_record(single, the_batch()))

    assert published_in_order(batched_out) == published_in_order(single_out)
    assert [item[4] for item in batched_out if item[0] == "dead letter"] == [20, 22, 23, 25, 26]
    assert [o[1] for o in published_in_order(batched_out) if o[0] == "outcome"] == ["early"]
    assert batched.join.pending.held == single.join.pending.held
    assert set(batched.join.pending.held) == {"r1", "r2", "r5", "r6", "r8", "r9", "r12", "w1", "r13", "r14"}
    assert batched.join.pending.durable == single.join.pending.durable
    assert set(batched.join.pending.durable) == {"early"}
    assert batched.join.early == single.join.early == {}
    assert (
        batched.local_decisions
        == single.local_decisions
        == Counter({("client-a", "m1"): 9, ("client-a", "None"): 1, ("client-b", "m2"): 1, ("None", "m1"): 1})
    )
    assert batched.join._deadlines == single.join._deadlines
    assert batched.join._capped == single.join._capped
    for partition in (0, 1):
        assert batched.join.oldest_unresolved(partition) == single.join.oldest_unresolved(partition)
    assert batched._ahead == single._ahead == {0: (19, 19)}
    assert batched._only_own is False
    assert batched.counters["own_decisions_read"] == 1


@pytest.mark.parametrize("batched", [True, False])
def test_local_decision_counts_stay_bounded_whatever_names_the_decisions_carry(
    monkeypatch: pytest.MonkeyPatch, batched: bool
) -> None:
    """Any process that writes the decisions topic names the client id and the model of a local decision: made-up
    models and over-long client ids are counted under ``other``, so the counters (one Prometheus series each) stay
    within (named clients + 1) x (catalog models + None + other). Before review21: one pair per model name."""
    monkeypatch.setattr("banditroute.join_io.time.time", lambda: 100.0)
    io = join_io([])
    flood = [
        Record(
            TOPIC,
            0,
            100 + i,
            orjson.dumps(decision(f"f{i}", worker_id=f"client-{i % 3}", model=f"made-up-{i}")),
            LOCAL,
        )
        for i in range(2_000)
    ]
    flood += [
        Record(TOPIC, 1, 100 + i, orjson.dumps(decision(f"g{i}", worker_id="x" * 200 + str(i))), LOCAL)
        for i in range(50)
    ]
    flood.append(
        Record(TOPIC, 1, 500, orjson.dumps(decision("known", worker_id="client-0", model="m2")), LOCAL)
    )
    if batched:
        asyncio.run(io._join_decisions(flood))
    else:
        asyncio.run(per_record(io, flood))

    assert io.local_decisions == Counter(
        {
            ("client-0", "other"): 667,
            ("client-1", "other"): 667,
            ("client-2", "other"): 666,
            ("client-0", "m2"): 1,
            ("other", "m1"): 50,
        }
    )
