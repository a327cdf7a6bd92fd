"""``wait_idle``: the CPU a process spent when the window that showed it idle began."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest

from banditroute.bench import common
from banditroute.bench.common import cpu_seconds, wait_idle

BURN = (
    "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\ntime.sleep(60)\n"
)


def _readings(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> None:
    """``cpu_seconds`` answers these in turn; sleeps take no time."""
    it: Iterator[float] = iter(values)
    monkeypatch.setattr(common, "cpu_seconds", lambda pid: next(it))

    async def no_wait(seconds: float) -> None:
        return None

    monkeypatch.setattr(common.asyncio, "sleep", no_wait)


def test_it_returns_the_reading_where_the_idle_window_began(monkeypatch: pytest.MonkeyPatch) -> None:
    # windows: 0 -> 1.0 (busy), 1.0 -> 2.0 (busy), 2.0 -> 2.05 (idle: under 0.15 x 0.5 s)
    _readings(monkeypatch, [0.0, 1.0, 2.0, 2.05])
    _, began = asyncio.run(wait_idle(1))
    assert began == 2.0


def test_never_idle_or_exited_gives_none(monkeypatch: pytest.MonkeyPatch) -> None:
    _readings(monkeypatch, [0.0, *(float(i) for i in range(1, 10_000))])
    assert asyncio.run(wait_idle(1, timeout_s=0.0))[1] is None
    _readings(monkeypatch, [0.0, 1.0, 0.0])  # the process exited: /proc reads 0.0
    assert asyncio.run(wait_idle(1))[1] is None
    _readings(monkeypatch, [0.0, 1.0, 0.0])
    with pytest.raises(RuntimeError, match="exited"):
        asyncio.run(wait_idle(1, strict=True))
    _readings(monkeypatch, [0.0, 1.0, 2.0])
    with pytest.raises(RuntimeError, match="not idle"):
        asyncio.run(wait_idle(1, timeout_s=0.0, strict=True))


def test_a_real_process_that_burns_then_sleeps() -> None:
    child = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        waited, began = asyncio.run(wait_idle(child.pid, timeout_s=60.0, strict=True))
        total = cpu_seconds(child.pid)
        assert waited >= 0.5 and began is not None  # at least one whole window
        assert 0.25 <= began <= total  # the burn (and the interpreter's start), not more than in all
    finally:
        child.kill()
        child.wait()
