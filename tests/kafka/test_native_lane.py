"""The decide loop's C lane (``_native.lane``, :meth:`DecideLogic.lane_parts`) decides what the Python loop
decides: over polls mixing the hot answer's common requests with every record that must leave the lane (another
task type or tenant, the SDK's text, a reply topic, a duplicate, a key of another partition, a date
``datetime`` refuses, text that is not a request, full record batches), the records appended per partition,
the dead letters, the lane of new task types, the handoff's entries, the counts and the decisions handed on are
the same with the lane and without it (``decided_at`` and ``decision_ms`` aside: the lane reads the system
clock). No broker (as ``test_decide_run``)."""

from __future__ import annotations

import asyncio
import gc
import random
import re
import time
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pytest

from banditroute import native
from banditroute.agents.decide import DecideLogic, StateView
from banditroute.config import PACKAGED_CONFIG, Registry, RouterConfig
from banditroute.core.state import replace_state
from banditroute.kafka import raw_fetch
from banditroute.kafka.decide_service import DecideService
from banditroute.kafka.fetch_double import read
from banditroute.kafka.producer_double import MAX_BATCH_BYTES
from tests.kafka.test_decide_run import (
    CREATED,
    PARTITIONS,
    _Producer,
    polled,
    sdk_text,
    step_seen,
    wired_service,
)

pytestmark = pytest.mark.skipif(
    native.loaded() is None, reason="the C extension is not built or switched off"
)

_TIMES = re.compile(rb'"decided_at":"[^"]*"|"decision_ms":[^,]+')


def _value(rng: random.Random, rid: str, tenant: str | None) -> bytes:
    """Mostly the hot answer's request (summarise, of ``tenant``), and now and then each kind that leaves the
    lane."""
    kind = rng.random()
    short: dict[str, Any] = {
        "schema_version": 1,
        "request_id": rid,
        "task_type": "summarise",
        "created_at": CREATED,
    }
    if tenant is not None:
        short["tenant"] = tenant
    if kind < 0.70:
        return orjson.dumps(short)
    if kind < 0.74:
        short["task_type"] = "code"
    elif kind < 0.76:
        short["task_type"] = "newtype"  # parked in the priority lane until it holds state
    elif kind < 0.79:
        short["tenant"] = "globex" if tenant else "acme"
    elif kind < 0.81:
        short["reply_to"] = "replies.x"
    elif kind < 0.83:
        short["created_at"] = rng.choice(
            ["2026-02-30T00:00:00Z", "2026-11-30T24:00:00Z", "0000-01-01T00:00:00Z", "2026-13-01T00:00:00Z"]
        )
    elif kind < 0.85:
        short["created_at"] = rng.choice(["2024-02-29T23:59:59Z", "2026-11-30T00:00:00.123Z"])  # valid
    elif kind < 0.87:
        return b"{not json"
    elif kind < 0.95:  # the SDK's text
        return sdk_text(rid, "summarise", rng.choice([tenant, tenant, "globex"]), None)
    else:  # valid, but only the JSON path reads it
        return orjson.dumps(
            {"task_type": "summarise", "request_id": rid, "schema_version": 1, "created_at": CREATED}
        )
    return orjson.dumps(short)


def _poll(
    rng: random.Random, step: int, per_partition: int, tenant: str | None
) -> dict[tuple[str, int], tuple[int, bytes]]:
    return polled(rng, step, per_partition, lambda rid: _value(rng, rid, tenant), 0.03, 0.97, (b"other-key",))


def _service(
    fused: bool, handed: list[Any], batch_bytes: int
) -> tuple[DecideService, _Producer, DecideLogic]:
    registry = Registry(RouterConfig.load(PACKAGED_CONFIG))
    view = StateView(prepare=False)
    logic = DecideLogic(registry, view, np.random.default_rng(11), worker_id="w")  # the system clock
    service = wired_service(logic, handed, PARTITIONS)
    if not fused:
        service.native_lane = None
    return service, _Producer(batch_bytes), logic


async def _steps(fused: bool, batch_bytes: int) -> tuple[list[Any], DecideService]:
    raw_fetch.install()
    handed: list[Any] = []
    service, producer, logic = _service(fused, handed, batch_bytes)
    rng = random.Random(35)
    seen: list[Any] = []
    native_before = 0
    steps = [(3, None), (600, None), (1, None), (900, None), (40, None), (500, "acme"), (300, "acme")]
    for step, (per_partition, tenant) in enumerate(steps):
        queue: asyncio.Queue[Any] = asyncio.Queue()
        committer: asyncio.Task[None] = asyncio.ensure_future(asyncio.sleep(0))
        if step == 3:  # a learnt state replaces the prior between two polls: the kept answer is made again
            state = logic.registry.snapshot.state_for(None)
            assert logic.states.offer("summarise", replace_state(state, version=state.version + 1))
        if step == 4:  # an eviction due within the poll (the lane stops there; the Python loop evicts)
            logic._next_evict = time.time() + 0.002
        batch = read(_poll(rng, step, per_partition, tenant), raw_fetch.raw_records)
        if fused and per_partition > 100:  # the step crosses a second of the clock (the lane stops there)
            await asyncio.sleep(-time.time() % 1.0 - 0.002 if -time.time() % 1.0 > 0.002 else 0.0)
        before = time.time()
        gc.disable()  # no collection untracks the Python loop's tuples: the lane's untracked ones are counted alone
        try:
            await service._step(batch, producer, queue, committer)
        finally:
            gc.enable()
        after = time.time()
        await committer
        _futures, offsets, handoff = queue.get_nowait()
        decisions = [(d[0], d[1], d[2], _TIMES.sub(b"", d[4])) for d in handed]
        # the lane's summaries and join entries are not walked by the cyclic collector (atomic items)
        if fused:
            taken = service.native_decided - native_before
            assert sum(not gc.is_tracked(d) for d in handed) >= taken
            entries = [e for entries in handoff[3].values() for e in entries if e is not None]
            assert sum(not gc.is_tracked(e) for e in entries) >= taken
        native_before = service.native_decided
        for d in handed:  # every decision's text parses, with the time it was made and its duration
            event = orjson.loads(d[4])
            decided_at = datetime.fromisoformat(event["decided_at"]).timestamp()
            assert before - 0.001 <= decided_at <= after and event["decided_at"].endswith("Z")
            assert event["decision_ms"] == d[3] >= 0.0
        handed.clear()
        seen.append(
            (
                *step_seen(service, offsets, handoff, decisions),
                len(service.duplicates),
                sorted(logic.admission.task_types),
                sorted((t, sorted(tenants)) for t, tenants in logic.admission.tenants.items()),
            )
        )
    streams: dict[tuple[str, int], list[Any]] = {}
    for topic, partition, records in producer.batches:
        streams.setdefault((topic, partition), []).extend(
            (key, _TIMES.sub(b"", value), headers) for key, value, headers in records
        )
    seen.append((streams, producer.sent, service._replies.sent))  # type: ignore[union-attr]
    assert logic._hot is not None
    seen.append(logic._hot[1].pos)  # the hot block's rows taken
    # the duplicate tables hold the same ids: every request id of every poll, asked again
    seen.append(
        [service.duplicates.check(f"r{p}-{n}") is None for p in range(PARTITIONS) for n in range(4000)]
    )
    return seen, service


@pytest.mark.parametrize("batch_bytes", [MAX_BATCH_BYTES, 4096])  # 4 KiB: batches fill within the lane
async def test_the_c_lane_decides_what_the_python_loop_decides(batch_bytes: int) -> None:
    gc.collect()
    assert gc.isenabled()
    (fused, service), (python, reference) = await _steps(True, batch_bytes), await _steps(False, batch_bytes)
    assert gc.isenabled()  # the lane turns the collector off only for its own call
    assert fused == python
    assert reference.native_decided == 0
    assert service.native_decided > 0.3 * service.decided  # the lane took many (30 % of records leave it)
    streams, sent, replies = fused[-3]
    tenants = [b'"tenant":"acme"' in value for records in streams.values() for _k, value, _h in records]
    assert sum(tenants) > 800  # the last two polls' hot answer is a tenant's
    reasons = {orjson.loads(v)[0] for _t, _k, v in sent}
    assert {"duplicate_id", "malformed_json", "validation_error"} <= reasons  # invalid dates among them
    assert replies and sum(map(len, streams.values())) > 2000


def test_valid_time_refuses_what_datetime_refuses() -> None:
    extension = native.loaded()
    assert extension is not None
    rng = random.Random(5)
    texts = [
        b"2024-02-29T00:00:00Z",
        b"2023-02-29T00:00:00Z",
        b"0000-01-01T00:00:00Z",
        b"9999-12-31T23:59:59Z",
    ]
    for _ in range(20_000):
        year = rng.choice([0, 1, 1900, 2000, 2023, 2024, 2100, 2400, 9999, rng.randrange(10_000)])
        month, day, hour = rng.randrange(15), rng.randrange(33), rng.randrange(26)
        minute, second = rng.randrange(62), rng.randrange(62)
        zone = rng.choice(["Z", "+00:00", ".123Z"])
        texts.append(f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{zone}".encode())
    for text in texts:
        try:
            datetime.fromisoformat(text.decode())
            valid = True
        except ValueError:
            valid = False
        assert extension.valid_time(text) is valid, text
