"""bench/tail_probe.py's summary of one paced level, on records made here (no broker): the slowest 1 % split
before and after the decision, collections and steps counted inside the level only, the step cost fit, and the
threads' shares from schedstat samples."""

from __future__ import annotations

from typing import Any

import pytest

from banditroute.bench.tail_probe import summarize_level

START = 1_000.0


def _level() -> tuple[dict[str, Any], dict[str, Any], list[list[float]]]:
    rows = []
    for i in range(
        1000
    ):  # 1,000 requests over 1 s: 2 ms before and 3 ms after the decision, ten slow after it
        sent = i / 1000.0
        after = 0.050 if i % 100 == 7 else 0.003
        rows.append([sent, sent + 0.002, sent + 0.002 + after])
    trace = {"start_unix_s": START, "rows": rows}
    worker = {
        "gc": [
            [START - 5.0, 0.200, 2, 0.150],  # at start-up: outside the level
            [START + 0.5, 0.004, 0, 0.003],
            [START + 0.6, 0.010, 1, 0.008],
        ],
        # steps: 100 us fixed + 5 us per record
        "steps": [
            [START + k / 50, START + k / 50 + 0.001, n, (100 + 5 * n) / 1e6]
            for k, n in enumerate([10, 20, 40, 80])
        ],
        "acks": [[START + 0.1, START + 0.104]],
        "tids": {"decide": 1, "main": 2},
    }
    sched: list[list[float]] = [[START - 10.0, 3, 0, 0, 0]]
    for k in range(
        11
    ):  # the decide thread: half a core, a quarter runnable; the main thread a tenth; another
        t = START + k / 10  # thread with more CPU over the run (start-up) than either, none in the level
        sched.append([t, 1, k * 50e6, k * 25e6, k * 10])
        sched.append([t, 2, k * 10e6, 0, k])
        sched.append([t, 3, 9e9, 0, 5])
    return trace, worker, sched


def test_the_slowest_are_split_before_and_after_the_decision() -> None:
    out = summarize_level(*_level())
    assert out["requests"] == 1000
    assert out["slowest_1pct"]["after_decision_ms"] == pytest.approx(50.0, abs=0.1)
    assert out["slowest_1pct"]["before_decision_ms"] == pytest.approx(2.0, abs=0.1)
    assert out["all"]["after_decision_p50_ms"] == pytest.approx(3.0, abs=0.1)


def test_collections_and_steps_inside_the_level_only() -> None:
    out = summarize_level(*_level())
    assert set(out["gc"]) == {"0", "1"}
    assert out["gc"]["1"]["max_cpu_ms"] == pytest.approx(8.0)
    assert out["steps"]["cpu_fixed_us"] == pytest.approx(100.0, abs=0.5)
    assert out["steps"]["cpu_per_record_us"] == pytest.approx(5.0, abs=0.01)
    assert out["acknowledged_ms"]["p50"] == pytest.approx(4.0, abs=0.01)


def test_thread_shares_from_schedstat_by_the_workers_thread_ids() -> None:
    out = summarize_level(*_level())
    assert out["decide_thread"]["cpu_pct"] == pytest.approx(50.0, abs=0.5)
    assert out["decide_thread"]["run_queue_wait_pct"] == pytest.approx(25.0, abs=0.5)
    assert out["main_thread"]["cpu_pct"] == pytest.approx(10.0, abs=0.5)
