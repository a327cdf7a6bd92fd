"""On the real broker: the decide loop's record batches are written with the producer's compression
(``decisions_compression``; snappy by default), and read back by a plain aiokafka consumer as the same decisions."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.consumer import fetcher
from aiokafka.record.default_records import DefaultRecordBatch

from banditroute.client import build_request
from banditroute.codec import encode
from banditroute.kafka import native_batch
from banditroute.kafka.decide_service import DecideService
from banditroute.settings import Settings
from tests.kafka.helpers import consume, create_topics, producer
from tests.kafka.test_priority_lane import PARTITIONS, decide_loop, start

pytestmark = pytest.mark.kafka

REQUESTS = 300
CODEC = {
    None: DefaultRecordBatch.CODEC_NONE,
    "snappy": DefaultRecordBatch.CODEC_SNAPPY,
    "zstd": DefaultRecordBatch.CODEC_ZSTD,
}
"""A ``compression_type`` → the compression bits of the record batches it writes."""


def test_the_worker_compresses_with_snappy_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BANDITROUTE_DECISIONS_COMPRESSION", raising=False)
    assert Settings().decisions_compression == "snappy"


@pytest.mark.parametrize("compression", [None, "snappy", "zstd"])
async def test_decisions_are_written_compressed_and_read_back(
    kafka_bootstrap: str,
    unique_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    compression: str | None,
) -> None:
    codecs: list[int] = []
    original = fetcher.MemoryRecords

    class Recorded:
        """aiokafka's fetched records, noting each record batch's compression bits."""

        def __init__(self, raw: Any) -> None:
            self._records = original(raw)

        def next_batch(self) -> Any:
            batch = self._records.next_batch()
            if batch is not None:
                codecs.append(batch.compression_type)
            return batch

        def __getattr__(self, name: str) -> Any:
            return getattr(self._records, name)

    await create_topics(
        kafka_bootstrap, [f"{unique_prefix}.{t}" for t in ("requests", "decisions", "deadletter")], PARTITIONS
    )
    async with producer(kafka_bootstrap) as prod:
        for i in range(REQUESTS):
            rid = f"c-{i}"
            await prod.send(
                f"{unique_prefix}.requests", encode(build_request("chat", request_id=rid)), key=rid.encode()
            )
    service = decide_loop(
        tmp_path, unique_prefix, kafka_bootstrap, DecideService, follow=True, compression=compression
    )
    task = await start(service)
    try:
        deadline = time.monotonic() + 60
        while service.decided < REQUESTS:
            assert time.monotonic() < deadline and not task.done(), "the requests were not decided"
            await asyncio.sleep(0.05)
    finally:
        service.stop()
        await task
    # recorded from here on: the decisions topic's batches only (not the decide loop's reads of the requests)
    monkeypatch.setattr(fetcher, "MemoryRecords", Recorded)
    records = await consume(kafka_bootstrap, f"{unique_prefix}.decisions", count=REQUESTS)
    decisions = [orjson.loads(r.value) for r in records]
    assert sorted(d["request_id"] for d in decisions) == sorted(f"c-{i}" for i in range(REQUESTS))
    assert all(d["model"] for d in decisions)
    assert codecs and set(codecs) == {CODEC[compression]}
    # written by the C loop into the C batch writer (kafka/native_batch.py), not by aiokafka's builder
    assert service.native_decided > 0 or native_batch.ENABLED is False
