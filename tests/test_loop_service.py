"""The worker's loop supervisor: restarts after a failure with a backoff that grows only over close failures."""

from __future__ import annotations

from collections import Counter

from banditroute.services import HEALTHY_S, MAX_BACKOFF_S, LoopService, restart_backoff


def test_backoff_starts_again_after_a_healthy_run() -> None:
    assert restart_backoff(8.0, ran_s=HEALTHY_S) == 0.5
    assert restart_backoff(8.0, ran_s=HEALTHY_S - 1) == 8.0
    assert restart_backoff(MAX_BACKOFF_S, ran_s=3600.0, first_s=0.25) == 0.25


async def test_supervisor_restarts_a_failing_loop_and_counts_it() -> None:
    waits: list[float] = []
    clock = iter([0.0, 1.0, 1.0, 2.0, 2.0, 100.0, 100.0, 101.0, 101.0])  # (start, failure) of each run

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    runs = 0

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs < 5:
            raise RuntimeError("broker gone")

    stopped: list[bool] = []
    counters: Counter[str] = Counter()
    service = LoopService("reader", run, lambda: stopped.append(True), counters)
    service.clock, service.restart_sleep = lambda: next(clock), no_sleep
    await service._supervise()
    # close failures double the wait; the one after a 98-second run starts from the shortest again
    assert waits == [0.5, 1.0, 0.5, 1.0]
    assert counters["reader_restarts"] == 4 and runs == 5 and stopped == [True]
