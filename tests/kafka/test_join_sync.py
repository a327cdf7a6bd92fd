"""On the real broker: when the join takes its partitions again (``JoinIO._sync``: a new assignment, or the decide
loop restarted), its in-memory pending entries are dropped and the decisions reader reads them again from its
committed offset. A reader batch that was still in hand then must not commit past them."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from banditroute.join_io import JoinIO
from banditroute.kafka.partition_reader import PartitionReader, Skip
from banditroute.kafka.staged import StagedTable
from tests.kafka.helpers import create_topics, producer

pytestmark = pytest.mark.kafka


class _Decider:
    runs = 1
    shipped = 0
    shipped_to: dict[int, int] = {}  # noqa: RUF012 - read only

    async def assign(self, _partitions: Any) -> None:
        return None


class _Reader:
    def __init__(self) -> None:
        self.partitions: frozenset[int] = frozenset()

    async def assign(self, partitions: Any, *, unless: Any = None) -> None:
        if unless is None or not unless():
            self.partitions = frozenset(partitions)


class _Join:
    """The join's part here: decision 3 of partition 0 still waits for its feedback, in memory only."""

    keep_uncommitted = False

    def __init__(self) -> None:
        self.unresolved = {0: 3}
        self.forgotten = asyncio.Event()

    def oldest_unresolved(self, partition: int) -> int | None:
        return self.unresolved.get(partition)

    def oldest_unacknowledged(self, _partition: int) -> int | None:
        return None  # every resolution acknowledged

    def forget_held(self) -> None:
        self.unresolved = {}
        self.forgotten.set()

    def rebuild_index(self, _partition_of: Any) -> None:
        return None


async def test_a_batch_in_hand_when_the_join_lets_go_does_not_commit_past_its_pending_decisions(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    topic = f"{unique_prefix}.decisions"
    await create_topics(kafka_bootstrap, [topic], partitions=1)
    async with producer(kafka_bootstrap) as prod:
        for offset in range(10):
            await prod.send(topic, f"decision {offset}".encode(), partition=0)
        await prod.flush()
    io: Any = object.__new__(JoinIO)
    io.join, io.decider, io.counters = _Join(), _Decider(), Counter()
    io.feedback_reader, io.learn_reader = _Reader(), _Reader()
    io.pending_view = io.early_view = StagedTable(SimpleNamespace(data={}), lambda _key: 0)  # nothing held
    io._init_join()
    seen: list[int] = []
    in_skip, gate = asyncio.Event(), asyncio.Event()

    async def handle(records: list[Any]) -> None:
        seen.extend(r.offset for r in records)

    async def skip(_positions: dict[int, int]) -> Skip:  # the reader's steady state: hold its batch here once
        in_skip.set()
        await gate.wait()
        return Skip()

    reader = PartitionReader(
        handle,
        bootstrap=kafka_bootstrap,
        topic=topic,
        group_id=f"{unique_prefix}-join-decisions",
        security={},
        floor=io._join_floor,
        skip=skip,
    )
    io.decision_reader = reader
    task = asyncio.ensure_future(reader.run())
    try:
        await reader.assign([0])
        await asyncio.wait_for(reader.caught_up.wait(), 30)  # read 0-9, committed 3 (the floor)
        await asyncio.wait_for(in_skip.wait(), 30)  # the next batch is in hand
        assert seen == list(range(10))
        seen.clear()
        sync = asyncio.ensure_future(io._sync(frozenset({0}), lambda: False))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(io.join.forgotten.wait(), 0.5)
        await asyncio.sleep(0.2)  # past the steady commit interval
        gate.set()
        await asyncio.wait_for(sync, 30)
    finally:
        gate.set()
        reader.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
    assert seen == list(range(3, 10))  # the pending decision 3 (and all after it) read again
