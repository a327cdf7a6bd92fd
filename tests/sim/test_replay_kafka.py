"""``replay --through-kafka``: the recorded outcomes through a real worker on the real broker capture what the
in-process replay captures with a comparable feedback delay, within the in-process replay's seed noise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from banditroute.sim.replay import default_setup, replay
from banditroute.sim.replay_kafka import comparable_delay
from banditroute.sim.table import load_outcomes

pytestmark = pytest.mark.kafka

REQUESTS, SEED, DELAY, LAM = 3000, 0, 100, 20.0


def _in_process(seed: int, policy: str = "thompson") -> float:
    table = load_outcomes()
    setup = default_setup(table, LAM)  # the worker pools quality priors over task types with the same cap
    result = replay(
        table,
        lam=LAM,
        requests=REQUESTS,
        seed=seed,
        policies=[policy],
        delay=comparable_delay(DELAY),
        setup=setup,
    )
    captured = result.summary(result.runs[0])["captured"]
    assert captured is not None
    return float(captured)


def test_through_kafka_captures_what_the_in_process_replay_captures(kafka_bootstrap: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITROUTE_")}
    env["BANDITROUTE_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    argv = ["replay", "--through-kafka", "--requests", str(REQUESTS), "--seed", str(SEED)]
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
    (run,) = report["policies"]
    assert run["name"] == "thompson_kafka"
    through_kafka = run["captured"]

    noise = [_in_process(seed) for seed in range(10)]
    mean, sd = float(np.mean(noise)), float(np.std(noise, ddof=1))
    same_seed = _in_process(SEED)
    report_line = (
        f"captured through Kafka {through_kafka:+.2f}; in process {same_seed:+.2f} (seed {SEED}), "
        f"seeds 0-9 {mean:+.2f} ± {sd:.2f}"
    )
    print(report_line)
    assert abs(through_kafka - mean) <= 3 * sd, report_line
    assert abs(through_kafka - same_seed) <= 3 * sd, report_line
