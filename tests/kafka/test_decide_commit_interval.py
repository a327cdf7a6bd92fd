"""On the real broker: the decide loop commits its requests' offsets at most every ``commit_interval_ms``
(issue #16, commit21).

Acknowledged steps wait for the next commit, and each is handed to the join (``on_pending``) only with the commit
that covers it; the decisions callbacks of the steps go home with that commit's wake-up, not one per step. An
assignment (the barrier) and a graceful stop commit what is acknowledged at once; a loop that dies with steps
held loses only their commit, so the next run decides them again (as after a crash between publish and commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from banditroute.client import build_request
from banditroute.codec import encode
from banditroute.kafka.decide_service import DecideService
from banditroute.kafka.handoff import Handoff
from tests.kafka.helpers import create_topics, producer
from tests.kafka.test_priority_lane import PARTITIONS, committed, decide_loop, decisions, start

pytestmark = pytest.mark.kafka


class TimedCommits(DecideService):
    """The production loop; records when each commit was made and how many steps it covered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commit_log: list[tuple[float, int]] = []

    async def _commit_and_hand_over(self, consumer: Any, offsets: Any, handoffs: list[Any]) -> None:
        self.commit_log.append((time.monotonic(), len(handoffs)))
        await super()._commit_and_hand_over(consumer, offsets, handoffs)


def _service(
    tmp_path: Path, prefix: str, bootstrap: str, interval_ms: int, own_thread: bool, **kwargs: Any
) -> TimedCommits:
    return decide_loop(
        tmp_path,
        prefix,
        bootstrap,
        TimedCommits,
        own_thread=own_thread,
        follow=True,
        commit_interval_ms=interval_ms,
        **kwargs,
    )


async def _topics(bootstrap: str, prefix: str) -> None:
    await create_topics(
        bootstrap, [f"{prefix}.{t}" for t in ("requests", "decisions", "deadletter")], PARTITIONS
    )


async def _send(
    bootstrap: str, prefix: str, ids: list[str], pause_s: float = 0.0, wave: int = 0
) -> list[Any]:
    """Produce a chat request per id (``wave`` at a time, ``pause_s`` apart); returns the record metadata."""
    sent = []
    async with producer(bootstrap) as prod:
        for start_at in range(0, len(ids), wave or len(ids)):
            futures = [
                await prod.send(
                    f"{prefix}.requests", encode(build_request("chat", request_id=rid)), key=rid.encode()
                )
                for rid in ids[start_at : start_at + (wave or len(ids))]
            ]
            sent.extend(await asyncio.gather(*futures))
            if pause_s:
                await asyncio.sleep(pause_s)
    return sent


def _per_partition(sent: list[Any]) -> dict[int, int]:
    return {p: sum(1 for m in sent if m.partition == p) for p in range(PARTITIONS)}


async def _until(condition: Any, task: asyncio.Task[None], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline and not task.done(), what
        await asyncio.sleep(0.02)


async def test_steps_share_a_commit_per_interval_and_are_handed_over_with_it(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    interval_s, waves, per_wave = 0.5, 40, 10
    await _topics(kafka_bootstrap, unique_prefix)
    handoffs: list[Handoff] = []
    batches: list[int] = []
    service = _service(
        tmp_path,
        unique_prefix,
        kafka_bootstrap,
        int(interval_s * 1000),
        own_thread=True,  # the worker's way: callbacks go home to this loop
        on_pending=handoffs.append,
        on_decisions=lambda batch: batches.append(len(batch)),
    )
    task = await start(service)
    try:
        posts_before = service.home_posts
        sent = await _send(
            kafka_bootstrap, unique_prefix, [f"r-{i}" for i in range(waves * per_wave)], 0.025, per_wave
        )
        await _until(
            lambda: sum(len(h.decisions) for h in handoffs) == len(sent),
            task,
            "not every decision was handed over",
        )
        posts = service.home_posts - posts_before
    finally:
        service.stop()
        await task
    commits = [(at, n) for at, n in service.commit_log if n]
    # several steps per commit, and the commits at least the interval apart (a slow machine only spaces them more)
    assert len(handoffs) == sum(n for _at, n in commits) > len(commits)
    gaps = [b[0] - a[0] for a, b in zip(commits, commits[1:], strict=False)]
    assert gaps and min(gaps) >= interval_s * 0.9, gaps
    # every step once, in order; every decision's callback delivered, with one wake-up per commit, not per step
    seqs = [h.seq for h in handoffs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert sum(batches) == len(sent)
    assert posts <= len(service.commit_log) + 2 < len(handoffs)
    assert await committed(kafka_bootstrap, unique_prefix) == _per_partition(sent)


async def _decided_not_committed(
    tmp_path: Path, prefix: str, bootstrap: str, ids: list[str]
) -> tuple[TimedCommits, asyncio.Task[None], list[Handoff], list[Any]]:
    """A running loop whose commit interval (60 s) does not pass in a test, once it has decided ``ids`` and its
    sends are acknowledged: its steps held, neither committed nor handed over. Returns the loop, its task, the
    handoffs list and the requests' record metadata."""
    await _topics(bootstrap, prefix)
    handoffs: list[Handoff] = []
    service = _service(tmp_path, prefix, bootstrap, 60_000, own_thread=False, on_pending=handoffs.append)
    task = await start(service)
    try:
        sent = await _send(bootstrap, prefix, ids)
        await _until(lambda: service.decided == len(ids) and service._producer_idle(), task, "not decided")
        # ``decided`` counts a decision before its step's sends are submitted, so "idle" can hold while the
        # last step's sends have not started: wait for every decision to be readable on the topic
        deadline = time.monotonic() + 60.0
        while len(await decisions(bootstrap, prefix)) < len(ids):
            assert time.monotonic() < deadline and not task.done(), "decisions not on the topic"
            await asyncio.sleep(0.1)
    except BaseException:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise
    return service, task, handoffs, sent


async def test_an_assignment_and_a_stop_commit_what_is_acknowledged_at_once(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    service, task, handoffs, first = await _decided_not_committed(
        tmp_path, unique_prefix, kafka_bootstrap, [f"a-{i}" for i in range(200)]
    )
    try:
        await asyncio.sleep(0.3)  # the committer has seen every acknowledgement
        # acknowledged, yet neither committed nor handed over: the interval has not passed
        assert handoffs == []
        assert await committed(kafka_bootstrap, unique_prefix) == dict.fromkeys(range(PARTITIONS), 0)
        await service.assign(range(PARTITIONS))  # a rebalance's hand-over: returns once committed
        assert await committed(kafka_bootstrap, unique_prefix) == _per_partition(first)
        assert sum(len(h.decisions) for h in handoffs) == 200
        second = await _send(kafka_bootstrap, unique_prefix, [f"b-{i}" for i in range(100)])
        await _until(lambda: service.decided == 300 and service._producer_idle(), task, "not decided")
    finally:
        service.stop()
        await task
    assert await committed(kafka_bootstrap, unique_prefix) == _per_partition(first + second)
    assert sum(len(h.decisions) for h in handoffs) == 300


async def test_a_loop_that_dies_with_steps_held_has_them_decided_again(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    _held, task, handoffs, sent = await _decided_not_committed(
        tmp_path, unique_prefix, kafka_bootstrap, [f"r-{i}" for i in range(150)]
    )
    task.cancel()  # no graceful stop: the held steps' commit is lost, as at a crash
    with pytest.raises(asyncio.CancelledError):
        await task
    assert handoffs == []  # nothing handed over that was not committed
    assert await committed(kafka_bootstrap, unique_prefix) == dict.fromkeys(range(PARTITIONS), 0)
    again = _service(tmp_path, unique_prefix, kafka_bootstrap, 0, own_thread=False)
    task = await start(again)
    try:
        await _until(lambda: again.decided == 150, task, "the next run did not decide every request again")
    finally:
        again.stop()
        await task
    assert await committed(kafka_bootstrap, unique_prefix) == _per_partition(sent)
    records = await decisions(kafka_bootstrap, unique_prefix)
    # every request decided twice on the topic: by the killed loop and again by the next run
    assert len({r.key for r in records}) == 150 and len(records) == 300
