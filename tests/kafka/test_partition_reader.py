"""On the real broker: a PartitionReader starts each partition where its own group committed, else where the seed
group (faust's, which read the topic before the reader did) committed, else at the earliest offset; it commits
what its handler returned from."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from banditroute.kafka.partition_reader import PartitionReader, Skip
from tests.kafka.helpers import create_topics, producer

pytestmark = pytest.mark.kafka


async def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets])
        await consumer.commit({TopicPartition(topic, p): o for p, o in offsets.items()})
    finally:
        await consumer.stop()


async def _read(bootstrap: str, topic: str, group: str, seed: str) -> list[tuple[int, int]]:
    """(partition, offset) of every record a reader of both partitions reads up to the end."""
    seen: list[tuple[int, int]] = []

    async def handle(records: list[object]) -> None:
        seen.extend((r.partition, r.offset) for r in records)  # type: ignore[attr-defined]

    reader = PartitionReader(
        handle, bootstrap=bootstrap, topic=topic, group_id=group, security={}, seed_group=seed
    )
    task = asyncio.ensure_future(reader.run())
    try:
        await reader.assign([0, 1])
        await asyncio.wait_for(reader.caught_up.wait(), 30)
    finally:
        await reader.assign(())  # after the batch in hand is handled and committed
        reader.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
    return seen


async def test_reader_starts_at_own_then_seed_then_earliest(kafka_bootstrap: str, unique_prefix: str) -> None:
    topic = f"{unique_prefix}.fb"
    await create_topics(kafka_bootstrap, [topic], partitions=2)
    async with producer(kafka_bootstrap) as prod:
        for partition in (0, 1):
            for i in range(10):
                await prod.send(topic, f"{partition}/{i}".encode(), partition=partition)
        await prod.flush()
    seed, own = f"{unique_prefix}-faust", f"{unique_prefix}-own"
    await _commit(kafka_bootstrap, seed, topic, {0: 4})  # faust read partition 0 up to 4, nothing of 1
    first = await _read(kafka_bootstrap, topic, own, seed)
    assert sorted(first) == [(0, o) for o in range(4, 10)] + [(1, o) for o in range(10)]
    # the reader's own commit wins over the seed from then on: nothing is read again
    async with producer(kafka_bootstrap) as prod:
        await prod.send(topic, b"0/10", partition=0)
        await prod.flush()
    assert await _read(kafka_bootstrap, topic, own, seed) == [(0, 10)]


def _own_ranges(kinds: str) -> list[tuple[int, int]]:
    """The offset ranges of the ``O`` runs in ``kinds`` (one letter per record: ``O`` own, ``o`` someone else's)."""
    ranges: list[tuple[int, int]] = []
    for offset, kind in enumerate(kinds):
        if kind != "O":
            continue
        if ranges and ranges[-1][1] == offset:
            ranges[-1] = (ranges[-1][0], offset + 1)
        else:
            ranges.append((offset, offset + 1))
    return ranges


async def test_steady_reader_reads_every_record_between_the_skipped_ranges_once(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    """Caught up, with a ``skip``: the partitions stay paused and one fetch reads the gaps of all of them; every
    record outside the ranges the join holds is handed over exactly once and in order, none inside them, and the
    commits reach the ends."""
    topic, group = f"{unique_prefix}.dec", f"{unique_prefix}-dec"
    layouts = {0: "ooOOOOOoOOOoo", 1: "OOOOOOOOoOOOOOOOO", 2: "oOoOoOoOoOoOoooo", 3: "OOOOOOOO"}
    await create_topics(kafka_bootstrap, [topic], partitions=len(layouts))
    ranges = {p: _own_ranges(kinds) for p, kinds in layouts.items()}
    seen: list[tuple[int, int]] = []

    async def handle(records: list[object]) -> None:
        seen.extend((r.partition, r.offset) for r in records)  # type: ignore[attr-defined]

    async def skip(positions: dict[int, int]) -> Skip:
        jumps: dict[int, int] = {}
        next_own: dict[int, int] = {}
        for partition, at in positions.items():
            for start, end in ranges[partition]:
                if start <= at < end:
                    at = jumps[partition] = end
            later = [start for start, _ in ranges[partition] if start >= at]
            if later:
                next_own[partition] = later[0]
        return Skip(jumps, next_own, settled=frozenset(positions))

    reader = PartitionReader(
        handle, bootstrap=kafka_bootstrap, topic=topic, group_id=group, security={}, skip=skip
    )
    task = asyncio.ensure_future(reader.run())
    others = sorted((p, o) for p, kinds in layouts.items() for o, kind in enumerate(kinds) if kind == "o")
    try:
        await reader.assign(layouts)
        await asyncio.wait_for(reader.caught_up.wait(), 30)  # an empty topic: steady from now on
        async with producer(kafka_bootstrap) as prod:
            for partition, kinds in layouts.items():
                for offset, kind in enumerate(kinds):
                    await prod.send(topic, f"{kind}{partition}/{offset}".encode(), partition=partition)
            await prod.flush()
        for _ in range(300):
            if len(seen) >= len(others) and reader.positions() == {p: len(k) for p, k in layouts.items()}:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # nothing more comes, and the steady commits (every 100 ms) reach the ends
    finally:
        reader.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
    assert sorted(seen) == others and len(seen) == len(set(seen))
    for partition in layouts:
        offsets = [o for p, o in seen if p == partition]
        assert offsets == sorted(offsets)
    assert reader.skipped == sum(len(k) for k in layouts.values()) - len(others)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        committed = {p: await consumer.committed(TopicPartition(topic, p)) for p in layouts}
    finally:
        await consumer.stop()
    assert committed == {p: len(kinds) for p, kinds in layouts.items()}
