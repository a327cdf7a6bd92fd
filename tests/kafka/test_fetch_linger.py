"""On the real broker: while requests arrive faster than one per ``fetch_linger_ms``, the decide loop's fetches
wait at the broker for more, so its steps come at most about one per linger; a sparse stream and an idle loop
keep the consumer's own fetch settings, and every request is decided once either way (issue #16, lead30)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from banditroute.client import build_request
from banditroute.codec import encode
from banditroute.kafka.decide_service import DecideService
from banditroute.kafka.fetch_linger import LINGER_MIN_BYTES
from tests.kafka.helpers import create_topics, producer
from tests.kafka.test_priority_lane import PARTITIONS, decide_loop, decisions, start

pytestmark = pytest.mark.kafka

LINGER_MS = 25


class CountedSteps(DecideService):
    """The production loop; records when each step with requests began, and the fetch settings then."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps: list[tuple[float, int, int]] = []

    async def _step(self, batch: Any, *args: Any, **kwargs: Any) -> None:
        if batch:
            self.steps.append((time.monotonic(), *_settings(self)))
        await super()._step(batch, *args, **kwargs)


def _settings(service: DecideService) -> tuple[int, int]:
    """The consumer's fetch settings now: ``fetch_min_bytes`` and ``fetch_max_wait_ms`` (the loop must be running)."""
    assert service._consumer is not None
    fetcher = service._consumer._fetcher
    return fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms


async def _paced(bootstrap: str, prefix: str, ids: list[str], gap_s: float) -> float:
    """One request per id, ``gap_s`` apart, each sent on its own; returns the last send's
    time (``time.monotonic``)."""
    async with producer(bootstrap) as prod:
        futures = []
        for rid in ids:
            futures.append(
                await prod.send(
                    f"{prefix}.requests", encode(build_request("chat", request_id=rid)), key=rid.encode()
                )
            )
            await asyncio.sleep(gap_s)
        await asyncio.gather(*futures)
    return time.monotonic()


async def _decided_once(bootstrap: str, prefix: str, ids: list[str], task: asyncio.Task[None]) -> None:
    deadline = time.monotonic() + 60
    while True:
        counts = Counter(orjson.loads(r.value)["request_id"] for r in await decisions(bootstrap, prefix))
        if set(counts) >= set(ids):
            assert counts == Counter(ids), "a request was decided twice"
            return
        assert time.monotonic() < deadline and not task.done(), "not every request was decided"
        await asyncio.sleep(0.1)


async def _run(
    tmp_path: Path, prefix: str, bootstrap: str, ids: list[str], gap_s: float
) -> tuple[CountedSteps, float, tuple[int, int]]:
    """Decide ``ids`` sent ``gap_s`` apart; returns the loop, how long the sending took and its consumer's fetch
    settings once it stopped lingering after the last decision (its polls found nothing; 5 s at most)."""
    await create_topics(
        bootstrap, [f"{prefix}.{t}" for t in ("requests", "decisions", "deadletter")], PARTITIONS
    )
    service = decide_loop(tmp_path, prefix, bootstrap, CountedSteps, fetch_linger_ms=LINGER_MS, follow=True)
    task = await start(service)
    try:
        first = time.monotonic()
        last = await _paced(bootstrap, prefix, ids, gap_s)
        await _decided_once(bootstrap, prefix, ids, task)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if service.linger is None or not service.linger.lingering:
                break
            await asyncio.sleep(0.02)
        return service, last - first, _settings(service)
    finally:
        service.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_dense_stream_is_fetched_in_lingering_steps_and_decided_once(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    ids = [f"dense-{i}" for i in range(400)]
    service, sent_over_s, settings_after = await _run(tmp_path, unique_prefix, kafka_bootstrap, ids, 0.002)
    assert service.linger is not None and service.linger.switches >= 1
    lingering = [
        at
        for at, min_bytes, wait_ms in service.steps
        if (min_bytes, wait_ms) == (LINGER_MIN_BYTES, LINGER_MS)
    ]
    assert lingering, "no step was fetched while lingering"
    # a lingering fetch returns after LINGER_MS unless 64 KiB wait (these 400 requests are ~150 KiB in all):
    # the steps come about one per linger, not one per request or per few
    assert len(service.steps) <= sent_over_s / (LINGER_MS / 1000) * 1.5 + 10, (
        len(service.steps),
        sent_over_s,
    )
    # once the stream has stopped, an empty poll ends the linger and the consumer's own settings are back
    assert not service.linger.lingering and settings_after == (1, 100), "the linger did not end"


async def test_a_sparse_stream_keeps_the_consumer_s_own_fetches(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    ids = [f"sparse-{i}" for i in range(12)]
    # 16 lingers apart: only a stall of the test's process longer than ~0.4 s would put two in one step
    service, _, settings_after = await _run(tmp_path, unique_prefix, kafka_bootstrap, ids, 0.4)
    assert service.linger is not None and service.linger.switches == 0
    assert len(service.steps) == len(ids)  # one step per request: none waited for another
    assert (
        {(min_bytes, wait_ms) for _at, min_bytes, wait_ms in service.steps} == {(1, 100)} == {settings_after}
    )
