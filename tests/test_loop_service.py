"""The worker's loop supervisor: restarts after a failure with a backoff that grows only over close failures."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from banditroute.kafka.fence import Fenced
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


async def test_a_fenced_loop_restarts_with_a_warning_and_an_unexpected_failure_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reader fenced while its worker stalled (kafka/fence.py) restarts as designed: one warning line with the
    reason and how many so far, no traceback (it logged an error with one before). Any other failure keeps its
    error and traceback."""
    failures: list[Exception] = [
        Fenced("group membership not confirmed (generation 3, now -1)"),
        Fenced("group membership not confirmed (generation 3, now 4)"),
        RuntimeError("broker gone"),
    ]

    async def run() -> None:
        if failures:
            raise failures.pop(0)

    async def no_sleep(_seconds: float) -> None:
        pass

    counters: Counter[str] = Counter()
    service = LoopService("feedback_reader", run, lambda: None, counters, expected=(Fenced,))
    service.restart_sleep = no_sleep
    with caplog.at_level(logging.INFO, logger="banditroute.worker"):
        await service._supervise()
    rows = [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert [(level, traceback) for level, _, traceback in rows] == [
        (logging.WARNING, False),
        (logging.WARNING, False),
        (logging.ERROR, True),
    ]
    assert "generation 3, now 4" in rows[1][1] and "feedback_reader_fenced 2 so far" in rows[1][1]
    assert rows[2][1].startswith("feedback_reader loop failed; restarting in ")
    assert counters["feedback_reader_fenced"] == 2 and counters["feedback_reader_restarts"] == 3


async def test_a_fenced_loop_restarts_within_two_seconds_and_apart_from_other_failures() -> None:
    """Fenced is the worker rejoining the group after a stall, not a fault of the loop: its restarts wait at most
    EXPECTED_MAX_BACKOFF_S (2 s). Before, the waits doubled to 10 s ([0.5, 1, 2, 4, 8]): the reader, and the
    join's resync waiting for the decisions reader to catch up (the decide loop holding no partition meanwhile),
    restarted up to 10 s after the group had taken the worker back. Other failures keep their own backoff."""
    waits: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    failures: list[Exception] = [Fenced(f"generation {g}") for g in range(5)]
    failures += [RuntimeError("broker gone"), Fenced("again"), RuntimeError("broker gone")]

    async def run() -> None:
        if failures:
            raise failures.pop(0)

    counters: Counter[str] = Counter()
    service = LoopService("decision_reader", run, lambda: None, counters, expected=(Fenced,))
    service.clock, service.restart_sleep = lambda: 0.0, no_sleep  # every run fails at once
    await service._supervise()
    assert waits == [0.5, 1.0, 2.0, 2.0, 2.0] + [0.5, 2.0, 1.0]
    assert counters["decision_reader_fenced"] == 6 and counters["decision_reader_restarts"] == 8
