"""Smoke runs of the benchmarks with tiny sizes: they run and report the documented keys (no timings asserted)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner


def test_scale_reports_grid_and_join_memory() -> None:
    from banditroute.bench.scale import run_scale_bench

    result = run_scale_bench(task_types=(10, 20), models=(3, 5), decisions=50, join_n=50)
    assert {"grid", "decide_vs_task_types", "join", "machine"} <= set(result)
    assert len(result["grid"]) == 4
    row = result["grid"][0]
    assert {
        "task_types",
        "models",
        "decide_us",
        "state_bytes_per_task_type",
        "served_bytes_per_task_type",
    } <= set(row)
    assert set(result["decide_vs_task_types"]) == {"3", "5"}
    join = result["join"]
    assert {"bytes_per_in_flight", "pending_value_bytes", "example_value", "target_bytes"} <= set(join)
    assert join["n"] == 50


@pytest.mark.parametrize("weight", [0.0, 0.8])
def test_policy_bench_takes_the_pooled_prior_weight_asked_for(weight: float) -> None:
    """``bench policy --pooled-prior-weight``: pooled priors in the state, that weight on them in the policy (0,
    all on the catalog's prior, was taken as 1, the pooled default, and reported as 0)."""
    from banditroute.bench.policy import bench_task
    from banditroute.core.models import NO_CONSTRAINTS
    from banditroute.core.plan import build_plan

    catalog, policy, state = bench_task(3, weight)
    assert policy.pooled_prior_weight == weight
    posterior = build_plan(state, catalog, policy, NO_CONSTRAINTS, 0.0).posterior
    assert posterior.pooled_weight is not None  # the robust mixture
    assert bench_task(3)[1].pooled_prior_weight == 1.0


def test_scale_command_json() -> None:
    from banditroute.cli.bench_cmd import bench

    out = CliRunner().invoke(
        bench,
        [
            "scale",
            "--format",
            "json",
            "--task-types",
            "10",
            "--models",
            "3",
            "--decisions",
            "20",
            "--join-n",
            "20",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "grid" in json.loads(out.output)


@pytest.mark.kafka
def test_all_quick_writes_results(kafka_bootstrap: str, tmp_path: Path) -> None:
    from banditroute.cli.bench_cmd import bench

    path = tmp_path / "results.json"
    out = CliRunner().invoke(
        bench,
        ["all", "--quick", "--format", "json", "--bootstrap", kafka_bootstrap, "--output", str(path)],
    )
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output)
    assert summary["results_file"] == str(path)
    results = json.loads(path.read_text())
    assert {"date", "policy", "e2e", "freshness", "scale", "machine"} <= set(results)
    e2e = results["e2e"]
    assert {"router_per_s", "relay_per_s", "ratio", "cpu_ratio", "added_ms", "workers", "machine"} <= set(e2e)
    assert set(e2e["latency_ms"]) == {"50"}
    half = str(round(e2e["router_per_s"] / 2))
    assert set(e2e["added_ms"]) == {"1000", "5000", half} == set(e2e["relay_latency_at_ms"])
    cores = os.cpu_count() or 1
    for level in [*e2e["latency_ms"].values(), *e2e["latency_at_ms"].values()]:
        assert {"p50", "p95", "p99", "target_per_s", "lost"} <= set(level)
        # the level's CPU budget: the driver's and the worker's shares of the machine's work, within its cores
        assert level["machine_busy_cores"] is not None, "no /proc/stat: the level's CPU budget is unknown"
        assert 0.0 < level["driver_cores"] <= level["machine_busy_cores"] + 0.1 <= cores + 0.2
        assert 0.0 < level["process_cores"] <= level["machine_busy_cores"] + 0.1
    assert all(set(added) == {"p50", "p99"} for added in e2e["added_ms"].values())
    assert set(e2e["workers"]) == {"1"} and e2e["workers"]["1"] > 0
    fresh = results["freshness"]
    assert {"p50_ms", "p99_ms", "n"} <= set(fresh)
    assert fresh["n"] + fresh["timeouts"] == 3


@pytest.mark.kafka
def test_route_local_mode_reports_latency_and_publish_lag(kafka_bootstrap: str, unique_prefix: str) -> None:
    from banditroute.cli.bench_cmd import bench

    out = CliRunner().invoke(
        bench,
        [
            "route",
            "--mode",
            "local",
            "-n",
            "300",
            "-c",
            "1",
            "--rate",
            "2000",
            "--warmup",
            "20",
            "--format",
            "json",
        ],
        env={"BANDITROUTE_KAFKA_BOOTSTRAP": kafka_bootstrap, "BANDITROUTE_TOPIC_PREFIX": unique_prefix},
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["mode"] == "local" and result["answered"] == 300 and result["published"] == 300
    assert {"p50", "p99", "p999"} <= set(result["latency_ms"]) and "p99" in result["publish_lag_ms"]
    assert result["cpu_us_per_route"] > 0


@pytest.mark.kafka
def test_route_local_sync_client_from_threads(kafka_bootstrap: str, unique_prefix: str) -> None:
    from banditroute.cli.bench_cmd import bench

    args = ["route", "--mode", "local", "--client", "sync", "-n", "300", "-c", "3", "--rate", "2000"]
    out = CliRunner().invoke(
        bench,
        [*args, "--warmup", "20", "--format", "json"],
        env={"BANDITROUTE_KAFKA_BOOTSTRAP": kafka_bootstrap, "BANDITROUTE_TOPIC_PREFIX": unique_prefix},
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["client"] == "sync" and result["answered"] == 300 and result["published"] == 300
    assert sum(result["models"].values()) == 300 and result["cpu_us_per_route"] > 0


@pytest.mark.kafka
def test_route_local_feedback_is_learnt_by_a_worker(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """``--feedback``: an outcome for half the measured local decisions, all learnt by a real worker."""
    from banditroute.cli.bench_cmd import bench
    from banditroute.config import PACKAGED_CONFIG
    from tests.kafka.helpers import WorkerProcess, worker_env

    env = worker_env(kafka_bootstrap, unique_prefix, str(PACKAGED_CONFIG), str(tmp_path / "data"))
    worker = WorkerProcess(env, str(tmp_path / "worker.log")).start()
    try:
        args = ["route", "--mode", "local", "-n", "400", "-c", "1", "--warmup", "20", "--feedback", "0.5"]
        out = CliRunner().invoke(bench, [*args, "--learn-timeout", "60", "--format", "json"], env=env)
    finally:
        worker.terminate()
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["published"] == 400
    learning = result["learning"]
    assert learning["feedback_sent"] == 200 and learning["learnt"] == 200
    assert learning["learnt_per_s"] > 0 and learning["learnt_s"] >= learning["feedback_sent_s"]


async def test_decide_path_decides_every_request_and_hands_each_to_the_join() -> None:
    from aiokafka.record.default_records import DefaultRecordBatch

    from banditroute.bench.decide_path import PARTITIONS, DecidePath, request_batch
    from banditroute.events import RoutingDecision
    from banditroute.kafka.producer_double import AckingProducer

    path = DecidePath()
    values: list[bytes] = []
    send_batch = AckingProducer.send_batch

    async def keeping(builder: Any, topic: str, *, partition: int) -> Any:
        values.extend(record.value for record in DefaultRecordBatch(bytearray(builder._build())))
        return await send_batch(path.producer, builder, topic, partition=partition)

    path.producer.send_batch = keeping  # type: ignore[method-assign]
    await path.warm_up(request_batch("p.requests", 0, 20))
    await path.step(request_batch("p.requests", 1, 20))
    n = 2 * 20 * PARTITIONS
    assert path.producer.records == n == len(values) == len(path.pending.held)
    decisions = [RoutingDecision.model_validate_json(value) for value in values]
    assert {d.request_id for d in decisions} == set(path.pending.held)
    assert sum(path.dashboard.decisions_by_model.values()) == n


async def test_canned_decide_answers_with_the_first_decision_and_each_request_s_own_join_entry() -> None:
    from banditroute.bench.decide_path import PARTITIONS, CannedDecide, DecidePath, request_batch

    path = DecidePath()
    await path.warm_up(request_batch("p.requests", 0, 20))
    logic = path.service.logic
    canned = CannedDecide(logic)
    logic.decide_encoded = canned  # type: ignore[method-assign]
    before = Counter(path.dashboard.decisions_by_model)
    await path.step(request_batch("p.requests", 1, 20))
    assert canned.first is not None
    first_decided, first_served = canned.first
    assert first_served is not None
    assert path.producer.records == 2 * 20 * PARTITIONS == len(path.pending.held)
    step_ids = {f"r{p}-{20 + i}" for p in range(PARTITIONS) for i in range(20)}
    assert step_ids <= set(path.pending.held)  # every request's own entry reached the join
    # each answer after the first repeats the first's summary: the step's count is all on its model
    counted = Counter(path.dashboard.decisions_by_model)
    counted.subtract(before)
    assert +counted == {(first_decided[0], first_decided[1]): 20 * PARTITIONS}


def test_canned_decide_refuses_a_first_decision_without_a_join_entry() -> None:
    from banditroute.bench.decide_path import CannedDecide

    class Refusing:  # a decide step whose first answer serves no model (a rejection)
        def decide_encoded(self, request: Any) -> tuple[Any, None]:
            return ("bench", None, "requests", 0.0, b"{}"), None

    canned = CannedDecide(Refusing())  # type: ignore[arg-type]
    with pytest.raises(SystemExit, match="served no model"):
        canned(object())  # type: ignore[arg-type]


def test_rebuild_command_prints_a_line_per_catalog_size_and_refuses_no_repetitions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from banditroute.bench.rebuild import main

    main(["--models", "2", "3", "--reps", "2", "--draws", "20"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["models=2", "models=3"]
    with pytest.raises(SystemExit):  # before: statistics.StatisticsError (no median of nothing)
        main(["--reps", "0"])
    assert "--reps: must be at least 1" in capsys.readouterr().err


def test_rebuild_reports_each_part_of_a_plan_rebuild() -> None:
    from banditroute.bench.rebuild import run_rebuild_bench

    result = run_rebuild_bench(models=3, reps=4, draws=50)
    assert (result["models"], result["reps"], result["propensity_samples"]) == (3, 4, 50)
    for key in ("rebuild_us", "build_plan_us", "thompson_mc_us", "first_block_us"):
        assert result[key] > 0.0
