"""bench.worker_instr's arithmetic: per-thread CPU per request over a drain, less each thread's idle rate, and the
instructions of a callgrind dump (no broker, no valgrind)."""

from __future__ import annotations

from pathlib import Path

import pytest

from banditroute.bench.worker_instr import dump_total, per_request, thread_times


def test_per_request_less_the_idle_rate_and_new_threads_from_zero() -> None:
    before = {1: (10.0, 2.0, 100), 2: (1.0, 0.0, 5)}
    after = {1: (12.0, 3.0, 400), 2: (1.5, 0.0, 5), 3: (0.25, 0.25, 10)}  # thread 3 started in the drain
    idle = {
        1: (12.1, 3.0, 400),
        2: (1.5, 0.0, 5),
        3: (0.25, 0.25, 10),
    }  # 10 s idle: thread 1 at 1 % of a core
    rows = per_request(before, after, idle, idle_s=10.0, busy_s=20.0, requests=100_000)
    assert rows[1]["raw"] == pytest.approx(30.0)  # 3 s over 100,000 requests
    assert rows[1]["work"] == pytest.approx(28.0)  # less 0.01 x 20 s
    assert rows[1]["sys"] == pytest.approx(10.0)
    assert rows[1]["faults"] == pytest.approx(0.003)
    assert rows[1]["idle_pct"] == pytest.approx(1.0)
    assert rows[2]["raw"] == pytest.approx(5.0) and rows[2]["idle_pct"] == 0.0
    assert rows[3]["raw"] == pytest.approx(5.0) and rows[3]["sys"] == pytest.approx(2.5)


def test_thread_times_of_this_process() -> None:
    import os

    times = thread_times(os.getpid())
    assert os.getpid() in times
    user, system, faults = times[os.getpid()]
    assert user >= 0.0 and system >= 0.0 and faults > 0


def test_dump_total(tmp_path: Path) -> None:
    dump = tmp_path / "callgrind.out.1.2-01"
    dump.write_text(
        "# callgrind format\nversion: 1\nevents: Ir\nfn=(1) main\n0 5\nsummary: 123456\ntotals: 123456\n"
    )
    assert dump_total(str(dump)) == 123456
    (tmp_path / "empty").write_text("events: Ir\n")
    assert dump_total(str(tmp_path / "empty")) == 0
