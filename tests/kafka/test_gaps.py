"""On the real broker: the gap reader, shared by the join and the learn agents, serves concurrent reads of
different partitions correctly (it once reassigned its consumer under a running read and crashed an agent)."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace

import pytest

from banditroute.kafka.gaps import GapFiller
from tests.kafka.helpers import create_topics, producer

pytestmark = pytest.mark.kafka


async def test_concurrent_gap_reads_of_two_partitions(kafka_bootstrap: str, unique_prefix: str) -> None:
    topics = [f"{unique_prefix}.a", f"{unique_prefix}.b"]
    await create_topics(kafka_bootstrap, topics, partitions=2)
    async with producer(kafka_bootstrap) as prod:
        for topic in topics:
            for partition in (0, 1):
                for i in range(50):
                    await prod.send(topic, f"{topic}/{partition}/{i}".encode(), partition=partition)
        await prod.flush()
    counters: Counter[str] = Counter()
    gaps = GapFiller(kafka_bootstrap, {}, counters)
    try:
        ranges = [(topic, partition, 5, 45) for topic in topics for partition in (0, 1)]
        results = await asyncio.gather(*(gaps.fetch(*r) for r in ranges))
        for (topic, partition, start, end), records in zip(ranges, results, strict=True):
            assert [r.offset for r in records] == list(range(start, end))
            assert records[0].value == f"{topic}/{partition}/{start}".encode()
        # a stream that jumps from offset 9 to 20 gets 10..19 read for it, counted
        gaps.last_offsets[(topics[0], 1)] = 9
        missed = await gaps.missed(SimpleNamespace(topic=topics[0], partition=1, offset=20))
        assert [r.offset for r in missed] == list(range(10, 20))
        assert counters == {"stream_gaps": 1, "stream_gap_records": 10}
    finally:
        await gaps.stop()
