"""On the real broker: the decide loop's pipeline under a backlog (issue #16's tail).

A long step ships its decisions in slices (``SHIP_SLICE_S``) instead of all at its end, and the committer lets
the steps waiting for it share one commit. Neither may change what the join and a restart see: every step is
handed over once, in order, each record batch exactly where the acknowledgement put it, and the committed
offsets reach the end of what was decided.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from banditroute.client import build_request
from banditroute.codec import encode
from banditroute.kafka import decide_service
from banditroute.kafka.handoff import Handoff
from tests.kafka.helpers import create_topics, producer
from tests.kafka.test_decide_commit_interval import TimedCommits
from tests.kafka.test_priority_lane import PARTITIONS, committed, decide_loop, start

pytestmark = pytest.mark.kafka

REQUESTS = 4000


async def test_a_backlog_is_shipped_in_slices_and_handed_over_in_order(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decide_service, "SHIP_SLICE_S", 0.0)  # every step ships every 32 decisions
    await create_topics(
        kafka_bootstrap,
        [f"{unique_prefix}.{t}" for t in ("requests", "decisions", "deadletter")],
        PARTITIONS,
    )
    async with producer(kafka_bootstrap) as prod:
        futures = []
        for i in range(REQUESTS):
            rid = f"r-{i}"
            futures.append(
                await prod.send(
                    f"{unique_prefix}.requests",
                    encode(build_request("chat", request_id=rid)),
                    key=rid.encode(),
                )
            )
        sent = await asyncio.gather(*futures)
    per_partition = {p: sum(1 for m in sent if m.partition == p) for p in range(PARTITIONS)}
    handoffs: list[Handoff] = []
    service = decide_loop(
        tmp_path,
        unique_prefix,
        kafka_bootstrap,
        TimedCommits,
        follow=True,
        on_pending=handoffs.append,
        max_batch=500,
    )
    task = await start(service)
    try:
        deadline = time.monotonic() + 60
        while sum(len(h.decisions) for h in handoffs) < REQUESTS:
            assert time.monotonic() < deadline and not task.done(), "not every decision was handed over"
            await asyncio.sleep(0.05)
    finally:
        service.stop()
        await task
    # every step once, in order
    seqs = [h.seq for h in handoffs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    steps_per_commit = [n for _at, n in service.commit_log]
    assert sum(steps_per_commit) == len(handoffs) and min(steps_per_commit) >= 1
    # the record batches follow each other in each partition, and every decision sits where its batch says
    ends: dict[int, int] = {}
    for handoff in handoffs:
        for partition, first, after in handoff.ranges:
            assert first == ends.get(partition, 0) and after > first
            ends[partition] = after
        for partition, offset, _served in handoff.decisions:
            assert any(p == partition and a <= offset < b for p, a, b in handoff.ranges)
    assert ends == per_partition
    offsets = [(p, o) for h in handoffs for p, o, _s in h.decisions]
    assert len(set(offsets)) == REQUESTS
    # a step of hundreds of decisions shipped more than one record batch to a partition
    assert any(len([r for r in h.ranges if r[0] == p]) > 1 for h in handoffs for p in range(PARTITIONS))
    assert await committed(kafka_bootstrap, unique_prefix) == per_partition
