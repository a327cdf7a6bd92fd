"""The decide loop's run of common requests (``DecideService._run``) does what the request-at-a-time path
(``_handle``) does: over a poll mixing common requests with every kind that leaves the run (the SDK's text and a
text only the JSON path reads, duplicates, undecodable records, task types parked in the priority lane, keys
that place the decision elsewhere, replies, a decision that raises), the records appended per partition, the
dead letters, the lane, the handoff's entries, the counts and the decisions handed to the worker are the same
(``decision_ms`` aside: it is a duration). No broker: records come through aiokafka's fetch path
(kafka/fetch_double.py), batches go to a producer double."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from banditroute.agents.decide import DecideLogic, StateView
from banditroute.codec import DeadLetterCounter
from banditroute.config import PACKAGED_CONFIG, Registry, RouterConfig
from banditroute.kafka import raw_fetch
from banditroute.kafka.decide_service import SLICE_CHECK_EVERY, DecideService
from banditroute.kafka.fetch_double import read, record_batch
from banditroute.kafka.producer_double import MAX_BATCH_BYTES, AckingProducer

PARTITIONS = 3
CLOCK_S = 1_796_000_000.0
CREATED = "2026-11-30T00:00:00.000000+00:00"
_MS = re.compile(rb'"decision_ms":[^,]+')


class _Producer(AckingProducer):
    """Keeps every record batch's records and every single send (the dead letters); record batches of at most
    ``batch_bytes``."""

    def __init__(self, batch_bytes: int = MAX_BATCH_BYTES) -> None:
        super().__init__()
        self.batch_bytes = batch_bytes
        self.batches: list[tuple[str, int, list[tuple[bytes | None, bytes, Any]]]] = []
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_bytes, 0)

    async def send_batch(self, builder: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        records = list(DefaultRecordBatch(bytearray(builder._build())))
        assert [r.offset for r in records] == list(range(len(records)))  # offsets in sequence in every batch
        self.batches.append((topic, partition, [(r.key, _MS.sub(b"", r.value), r.headers) for r in records]))
        return await super().send_batch(builder, topic, partition=partition)

    async def send(self, topic: str, *, key: bytes | None, value: bytes, **_kw: Any) -> asyncio.Future[Any]:
        letter = orjson.loads(value)
        self.sent.append(
            (
                topic,
                key,
                orjson.dumps(
                    [letter["reason"], letter["source_offset"], letter["source_partition"], letter["error"]]
                ),
            )
        )
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class _Replies:
    """Keeps the replies sent (the loop's ReplySender)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, key: bytes, _payload: bytes) -> None:
        self.sent.append((topic, key))


def sdk_text(rid: str, task_type: str, tenant: str | None, reply_to: str | None) -> bytes:
    """A request as the SDK writes it: every field, keys sorted."""
    return orjson.dumps(
        {
            "candidates": None,
            "constraints": {"capabilities": [], "max_cost_usd": None, "max_latency_ms": None},
            "created_at": CREATED,
            "exclude": None,
            "metadata": {},
            "objective": None,
            "reply_to": reply_to,
            "request_id": rid,
            "schema_version": 1,
            "task_type": task_type,
            "tenant": tenant,
        }
    )


def _value(rng: random.Random, rid: str) -> bytes:
    kind = rng.random()
    task_type = rng.choice(["summarise", "code", "summarise", "code", "newtype"])
    if kind < 0.05:
        return b"{not json"
    if kind < 0.1:  # valid, but not a text the regular expressions read: the JSON path
        return orjson.dumps(
            {"task_type": task_type, "request_id": rid, "schema_version": 1, "created_at": CREATED}
        )
    short = {"schema_version": 1, "request_id": rid, "task_type": task_type, "created_at": CREATED}
    if kind < 0.15:
        short["reply_to"] = "replies.x"
    if kind < 0.3:
        return sdk_text(rid, task_type, rng.choice([None, "acme"]), short.get("reply_to"))
    return orjson.dumps(short)


def polled(
    rng: random.Random,
    step: int,
    per_partition: int,
    value: Callable[[str], bytes],
    duplicates: float = 0.05,
    keyed: float = 0.9,
    other_keys: Sequence[bytes] = (b"", b"other-key"),
) -> dict[tuple[str, int], tuple[int, bytes]]:
    """A poll of ``per_partition`` request records per partition: ``value(request_id)`` each, a share
    ``duplicates`` of them the request id before again, a share ``keyed`` keyed by their request id (the others
    by one of ``other_keys``)."""
    fetched = {}
    for partition in range(PARTITIONS):
        base = step * per_partition
        records = []
        for i in range(per_partition):
            rid = f"r{partition}-{base + i}"
            if rng.random() < duplicates and i:
                rid = f"r{partition}-{base + i - 1}"  # a duplicate of the one before
            key = rid.encode() if rng.random() < keyed else rng.choice(other_keys)
            records.append((key, value(rid)))
        fetched[("p.requests", partition)] = (base, record_batch(base, records, int(CLOCK_S * 1000)))
    return fetched


def _poll(rng: random.Random, step: int, per_partition: int) -> dict[tuple[str, int], tuple[int, bytes]]:
    return polled(rng, step, per_partition, lambda rid: _value(rng, rid))


def wired_service(logic: DecideLogic, handed: list[Any], partitions: int) -> DecideService:
    """A follower decide loop over ``partitions`` partitions of ``p.requests``, with the priority lane, its
    decisions handed to ``handed`` and its replies kept (``_Replies``), without a broker."""
    service = DecideService(
        logic,
        bootstrap="in-process",
        requests_topic="p.requests",
        decisions_topic="p.decisions",
        deadletter_topic="p.deadletter",
        group_id="p.decide",
        security={},
        max_payload_bytes=1 << 20,
        dead_letters=DeadLetterCounter(),
        own_thread=False,
        on_decisions=handed.extend,
        follow=True,
        priority_lane=True,
    )
    service._decision_partitions = partitions
    service.token = b"0123456789abcdef"
    service._headers = [("banditroute-decider", service.token)]
    service.assigned = frozenset(range(partitions))
    service._replies = _Replies()  # type: ignore[assignment]
    return service


def step_seen(service: DecideService, offsets: Any, handoff: Any, decisions: list[Any]) -> tuple[Any, ...]:
    """What a step left, to compare between two ways of deciding it: the offsets to commit, the handoff's join
    entries, the decisions handed on, the priority lane's length and the decided count."""
    return (
        sorted((tp.partition, o) for tp, o in offsets.items()),
        {p: list(entries) for p, entries in handoff[3].items()},
        decisions,
        len(service.lane),
        service.decided,
    )


def _service(run: bool, handed: list[Any], batch_bytes: int) -> tuple[DecideService, _Producer]:
    registry = Registry(RouterConfig.load(PACKAGED_CONFIG))
    logic = DecideLogic(registry, StateView(), np.random.default_rng(7), worker_id="w", clock=lambda: CLOCK_S)
    decide = logic.decide_encoded

    def failing(request: Any) -> Any:
        if request.request_id.endswith("7"):
            raise RuntimeError("a bug")
        return decide(request)

    logic.decide_encoded = failing  # type: ignore[method-assign]
    service = wired_service(logic, handed, PARTITIONS)
    if not run:  # every record through _handle
        service._run = lambda out, producer, tp, records, i, end: (i, None)  # type: ignore[method-assign]
    return service, _Producer(batch_bytes)


async def _steps(run: bool, batch_bytes: int) -> list[Any]:
    raw_fetch.install()
    handed: list[Any] = []  # the decisions handed to the worker (on_decisions)
    service, producer = _service(run, handed, batch_bytes)
    rng = random.Random(16)
    seen: list[Any] = []
    for step, per_partition in enumerate([5, SLICE_CHECK_EVERY * 3 + 5, 1, 70]):
        queue: asyncio.Queue[Any] = asyncio.Queue()
        committer: asyncio.Task[None] = asyncio.ensure_future(asyncio.sleep(0))
        batch = read(_poll(rng, step, per_partition), raw_fetch.raw_records)
        await service._step(batch, producer, queue, committer)
        await committer
        _futures, offsets, handoff = queue.get_nowait()
        decisions = [(d[0], d[1], d[2], _MS.sub(b"", d[4])) for d in handed]
        handed.clear()
        seen.append(step_seen(service, offsets, handoff, decisions))
    # per partition, the records in order (where a step ships mid-way depends on the clock: SHIP_SLICE_S)
    streams: dict[tuple[str, int], list[Any]] = {}
    for topic, partition, records in producer.batches:
        streams.setdefault((topic, partition), []).extend(records)
    if batch_bytes < MAX_BATCH_BYTES:
        assert max(len(records) for _t, _p, records in producer.batches) >= 3
        assert len(producer.batches) > len(streams)  # some batches were full and shipped mid-step
    seen.append((streams, producer.sent, service._replies.sent))  # type: ignore[union-attr]
    return seen


@pytest.mark.parametrize("batch_bytes", [MAX_BATCH_BYTES, 4096])  # 4 KiB: batches fill within a run
async def test_the_run_does_what_one_request_at_a_time_does(batch_bytes: int) -> None:
    with_run, without = await _steps(True, batch_bytes), await _steps(False, batch_bytes)
    assert with_run == without
    streams, sent, replies = with_run[-1]
    reasons = {orjson.loads(v)[0] for _t, _k, v in sent}
    assert {"duplicate_id", "malformed_json", "internal_error"} <= reasons  # every way out was taken
    assert sum(map(len, streams.values())) > 300 and replies
    # a task type the config does not list waits in the priority lane until it holds state: both took it
    assert any(decided[0] == "newtype" for step in with_run[:-1] for decided in step[2])
