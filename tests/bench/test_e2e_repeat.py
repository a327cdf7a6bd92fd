"""``bench e2e --repeat``: repeated runs summarised as medians, ranges and target counts (pure: no broker)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from click.testing import CliRunner

from banditroute.bench.e2e import run_summary, summarise_runs


def _run(
    ratio: float,
    router: float,
    cpu: tuple[float, float],
    half_p99: float,
    p99_1000: float,
    paced_cpu: tuple[float, float, float] = (0.5, 0.5, 0.5),
) -> dict[str, Any]:
    """The keys of one ``run_e2e_bench`` result that the summary reads (its half-sustained level keyed by the
    run's own rate, as the bench does)."""
    half = str(round(router / 2))
    relay_cpu, router_cpu = cpu
    return {
        "ratio": ratio,
        "cpu_ratio": relay_cpu / router_cpu,
        "router_per_s": router,
        "relay_per_s": router / ratio,
        "decide_only_ratio": 0.9,
        "router": {"cpu_us_per_request": router_cpu, "per_s": router},
        "relay": {"cpu_us_per_request": relay_cpu},
        "added_ms": {
            "1000": {"p50": 1.0, "p99": p99_1000},
            "5000": {"p50": 2.0, "p99": 4.0},
            half: {"p50": 3.0, "p99": half_p99},
        },
        "added_ms_half_sustained_rate": half,
        "cpu_ratio_at": dict(zip(("1000", "5000", half), paced_cpu, strict=True)),
        "latency_at_ms": {"1000": {"p50": 11.0, "p99": 20.0 + p99_1000}},
        "relay_latency_at_ms": {"1000": {"p50": 10.0, "p99": 20.0}},
        "workers": {"1": router},
        "workers_detail": {"1": {"per_s": router}},
        "method": {"partitions": 4},
        "machine": {"cpus": 2},
    }


RUNS = [
    _run(0.40, 40_000.0, (4.0, 16.0), 30.0, 2.0, (0.30, 0.40, 0.45)),
    _run(0.55, 60_000.0, (4.0, 12.0), 8.0, -3.0, (0.60, 0.55, 0.50)),
    _run(0.50, 50_000.0, (5.0, 15.0), 12.0, 11.0, (0.65, 0.35, 0.40)),
]


def test_medians_ranges_and_targets_met_per_run() -> None:
    out = summarise_runs(RUNS)
    assert out["ratio"] == pytest.approx(0.50)
    assert out["router_per_s"] == pytest.approx(50_000.0)
    assert out["cpu_ratio"] == pytest.approx(1 / 3)  # 0.25, 0.333, 0.333
    assert out["spread"]["ratio"] == {"min": 0.40, "max": 0.55}
    # each run's half-sustained level is its own rate (20,000, 30,000, 25,000/s): summarised under half the median
    assert out["added_ms_half_sustained_rate"] == "25000"
    assert set(out["added_ms"]) == {"1000", "5000", "25000"}
    assert out["added_ms"]["25000"] == {"p50": 3.0, "p99": 12.0}
    assert out["spread"]["added_ms"]["25000"]["p99"] == {"min": 8.0, "max": 30.0}
    assert out["added_ms"]["1000"]["p99"] == pytest.approx(2.0)
    assert out["met"] == {
        "ratio >= 0.5": 2,
        "cpu_ratio >= 0.5": 0,
        "added p99 <= 10 ms at 1000/s": 2,
        "added p99 <= 10 ms at 5000/s": 3,
        "added p99 <= 10 ms at half sustained": 1,
        "cpu_ratio >= 0.5 at 1000/s": 2,
        "cpu_ratio >= 0.5 at 5000/s": 1,
        "cpu_ratio >= 0.5 at half sustained": 1,
        "of": 3,
    }
    # the CPU ratio at each paced rate, the half-sustained level again under half the median rate
    assert out["cpu_ratio_at"] == pytest.approx({"1000": 0.60, "5000": 0.40, "25000": 0.45})
    assert out["spread"]["cpu_ratio_at"]["1000"] == {"min": 0.30, "max": 0.65}
    assert out["runs"] == [run_summary(r) for r in RUNS]  # in the order run
    assert [run["latency_at_ms"]["1000"]["p99"] for run in out["runs"]] == [
        22.0,
        17.0,
        31.0,
    ]  # raw levels kept
    assert out["workers"] == {"1": 40_000.0}  # the first run's: the only one that measures them


def test_an_even_count_takes_the_middle_two() -> None:
    out = summarise_runs(RUNS[:2])
    assert out["ratio"] == pytest.approx(0.475)
    assert out["met"]["of"] == 2


def test_a_level_missing_from_a_run_is_left_out_of_its_median() -> None:
    partial = _run(0.45, 45_000.0, (4.0, 14.0), 9.0, 1.0)
    del partial["added_ms"]["5000"]
    out = summarise_runs([*RUNS, partial])
    assert out["met"]["added p99 <= 10 ms at 5000/s"] == 3
    assert out["spread"]["added_ms"]["5000"]["p99"] == {"min": 4.0, "max": 4.0}


def test_no_runs_is_an_error() -> None:
    with pytest.raises(ValueError, match="no runs"):
        summarise_runs([])


@pytest.mark.parametrize("value", ["0", "51", "x"])
def test_the_command_refuses_a_repeat_out_of_range(value: str) -> None:
    from banditroute.cli.bench_cmd import bench

    out = CliRunner().invoke(bench, ["e2e", "--repeat", value, "--bootstrap", "127.0.0.1:1"])
    assert out.exit_code == 2
    assert "--repeat" in out.output


def test_the_commands_default_drain_is_the_benchs() -> None:
    """The CLI writes the default out (its module does not import the bench's): the two must agree."""
    from banditroute.bench.e2e import DRAIN_REQUESTS, run_e2e_bench
    from banditroute.cli.bench_cmd import bench

    options = {p.name: p for p in bench.commands["e2e"].params}
    assert options["requests"].default == DRAIN_REQUESTS
    assert inspect.signature(run_e2e_bench).parameters["requests"].default == DRAIN_REQUESTS


@pytest.mark.kafka
def test_the_command_runs_twice_on_the_broker_and_reports_the_summary(kafka_bootstrap: str) -> None:
    import json

    from banditroute.cli.bench_cmd import bench

    args = ["e2e", "--bootstrap", kafka_bootstrap, "--repeat", "2", "-n", "300", "--seconds", "0.5"]
    out = CliRunner().invoke(bench, [*args, "--format", "json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert len(result["runs"]) == 2 and result["met"]["of"] == 2
    assert {"ratio", "cpu_ratio", "router_per_s", "relay_per_s", "spread", "workers", "machine"} <= set(
        result
    )
    half = result["added_ms_half_sustained_rate"]
    assert set(result["added_ms"]) == {"1000", "5000", half}
    assert all(set(level) == {"p50", "p99"} for level in result["added_ms"].values())
    assert all(set(run["latency_at_ms"]) == set(run["added_ms"]) for run in result["runs"])  # the raw levels
    assert set(result["cpu_ratio_at"]) <= {"1000", "5000", half}
    assert all(ratio > 0 for ratio in result["cpu_ratio_at"].values())
    rates = sorted(run["router_per_s"] for run in result["runs"])  # a 300-request drain may time none: 0
    assert result["router_per_s"] == pytest.approx((rates[0] + rates[1]) / 2)
