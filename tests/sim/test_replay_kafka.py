"""``replay --through-kafka``: the recorded outcomes through a real worker on the real broker capture what the
in-process replay captures on the same request stream with a comparable feedback delay, within the noise of the
in-process sampler's own draws (the band, about +0.82 to +0.98, rules out a worker that does not learn or
learns with ten times the delay; in process, twice the delay gives +0.85 and passes, three times +0.80); in
budget mode it splits and spends the budget as the in-process replay does."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest

from banditroute.core.codec import decode_state
from banditroute.kafka.topics import read_topic
from banditroute.settings import Settings
from banditroute.sim.replay import default_setup, replay
from banditroute.sim.replay_kafka import comparable_delay, replay_through_kafka, worker_config
from banditroute.sim.suite import budget_levels
from banditroute.sim.synthetic import SyntheticSpec, generate
from banditroute.sim.table import OutcomeTable, load_outcomes, write_outcomes
from banditroute.sim.worker_process import worker_process

pytestmark = pytest.mark.kafka

REQUESTS, SEED, DELAY, LAM = 3000, 0, 100, 20.0
STREAM_SEED = 1
CAPTURE_TABLE = SyntheticSpec(
    "kafka_capture", models=4, task_types=3, prompts_per_task=500, graded=True, seed=5
)
"""The capture test's outcomes: four models, three task types, two of them led by different models by wide
margins (utility +0.33 and +0.27 over the next model; the third led by one of the two by +0.07), so that the
per-task oracle gains 0.14 over the best single model and ``captured`` says little besides whether and how soon
the router learns (in process, 20 draw seeds of stream 1: +0.90 +/- 0.01; uniform -0.63; Thompson with ten
times the delay +0.43).

The shipped two-model example is too close a race for this: its per-task oracle gains little over the best
single model, so ``captured`` there is a ratio of small numbers. Through Kafka on its stream 1 it ranged
+0.17 (CI) to +0.82, against +0.64 +/- 0.10 for the in-process draws, and no band tells a worker that learns
from one that learns late."""


def _in_process(
    table: OutcomeTable, policy: str = "thompson", draw_seed: int | None = None, delay: int = DELAY
) -> float:
    setup = default_setup(table, LAM)  # the worker pools quality priors over task types with the same cap
    result = replay(
        table,
        lam=LAM,
        requests=REQUESTS,
        seed=STREAM_SEED,
        policies=[policy],
        delay=comparable_delay(delay),
        setup=setup,
        draw_seed=draw_seed,
    )
    captured = result.summary(result.runs[0])["captured_expected"]
    assert captured is not None
    return float(captured)


def test_through_kafka_captures_what_the_in_process_replay_captures(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    data = write_outcomes(generate(CAPTURE_TABLE), tmp_path / "outcomes.csv")
    table = load_outcomes(data)  # as the run through Kafka reads it
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITROUTE_")}
    env["BANDITROUTE_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    argv = [
        "replay",
        "--through-kafka",
        "--data",
        str(data),
        "--requests",
        str(REQUESTS),
        "--seed",
        str(STREAM_SEED),
    ]
    argv += ["--delay", str(DELAY), "--objective-lambda", str(LAM), "--format", "json"]
    done = subprocess.run(
        [sys.executable, "-m", "banditroute", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["requests"] == REQUESTS and report["through_kafka"]["comparable_delay"] == DELAY
    # the table is the clear race it is meant to be: the per-task oracle gains well over the best single model
    assert report["oracle"]["mean_utility"] - report["best_single_model"]["mean_utility"] >= 0.1, report
    (run,) = report["policies"]
    assert run["name"] == "thompson_kafka"
    through_kafka = run["captured_expected"]  # the chosen models' mean utilities: no prompt-draw noise

    # the reference: the same request stream in process, the sampler's draws apart (through Kafka the worker
    # draws with its own sampler, and pools priors on its own clock). Fourteen runs through Kafka, five of them
    # beside three CPU hogs: +0.867 to +0.917
    noise = [_in_process(table, draw_seed=k) for k in range(20)]
    mean, sd = float(np.mean(noise)), float(np.std(noise, ddof=1))
    margin = max(4 * sd, 0.08)
    report_line = (
        f"captured_expected through Kafka {through_kafka:+.3f}; in process on the same stream (seed {STREAM_SEED}), "
        f"draw seeds 0-19 {mean:+.3f} ± {sd:.3f} ({min(noise):+.3f} to {max(noise):+.3f}); margin {margin:.3f}"
    )
    print(report_line)
    # the band tells learning from not learning and from learning late: uniform and Thompson with ten times
    # the delay fall outside it
    assert _in_process(table, "uniform", draw_seed=0) < mean - margin, report_line
    assert _in_process(table, draw_seed=0, delay=10 * DELAY) < mean - margin, report_line
    assert abs(through_kafka - mean) <= margin, report_line


BUDGET_REQUESTS, BUDGET_FRACTION = 3000, 0.25


def _in_process_budget(seed: int, budget: float, shared: bool = True) -> tuple[float, float]:
    """(mean quality, mean cost) of the in-process replay in budget mode (the budget split over task types when
    ``shared``, as the suite's ``thompson``; else each task type on its own budget)."""
    table = load_outcomes()
    setup = default_setup(table, LAM, budget, shared_budget=shared)
    result = replay(
        table,
        lam=LAM,
        budget=budget,
        requests=BUDGET_REQUESTS,
        seed=seed,
        policies=["thompson"],
        delay=comparable_delay(DELAY),
        setup=setup,
    )
    summary = result.summary(result.runs[0])
    return float(summary["mean_quality"]), float(summary["mean_cost_usd"])


async def _offsets(settings: Settings) -> dict[str, float]:
    """The newest budget offset of each state key on the worker's state topic."""
    out: dict[str, float] = {}
    async for record in read_topic(settings, settings.topic("state")):
        if record.key and record.value:
            out[str(orjson.loads(record.key))] = decode_state(record.value).budget_offset_usd
    return out


def test_budget_mode_through_kafka_splits_one_budget_as_the_in_process_replay(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Budget mode through a real worker: its learner divides the one budget over the task types (the offsets
    reach the state topic), it spends the budget, and its quality is the in-process split's within that
    replay's seed noise."""
    table = load_outcomes()
    budget = dict(budget_levels(table))[BUDGET_FRACTION]
    prefix = f"budgetsplit{uuid.uuid4().hex[:8]}"
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, app_id=prefix)
    config = worker_config(table, LAM, tmp_path / "config", budget=budget)
    with worker_process(kafka_bootstrap, prefix, config, tmp_path, BANDITROUTE_SEED=str(SEED)):
        result = asyncio.run(
            replay_through_kafka(
                settings, table, lam=LAM, budget=budget, requests=BUDGET_REQUESTS, seed=SEED, block=DELAY
            )
        )
    offsets = asyncio.run(_offsets(settings))
    summary = result.summary(result.runs[0])
    quality, cost = float(summary["mean_quality"]), float(summary["mean_cost_usd"])
    noise = [_in_process_budget(seed, budget)[0] for seed in range(10)]
    mean, sd = float(np.mean(noise)), float(np.std(noise, ddof=1))
    line = (
        f"through Kafka: quality {quality:.4f}, cost / budget {cost / budget:.3f}, offsets {offsets}; "
        f"in process (split) seeds 0-9: quality {mean:.4f} ± {sd:.4f}"
    )
    print(line)
    assert set(offsets) == set(table.task_types), line
    assert sum(1 for v in offsets.values() if v != 0.0) >= len(offsets) - 1, (
        line
    )  # the worker split the budget
    # generous: the worker recomputes the shares about once a second, not after every round, and its sampler
    # draws apart from the replay's. Nine runs at load 5-9: 0.98-1.09 of the budget, quality 0.958-1.000 of the
    # budget oracle's (in process: 0.974-1.012, mean 0.992); with the split off through Kafka too, ~1 % under
    # the in-process replay, which is the worker path's, not the split's
    assert abs(cost / budget - 1.0) <= 0.15, line
    assert quality >= mean - max(5 * sd, 0.04), line
