"""SIGKILL the worker at random points under load, five times, restarting it each time.

After every restart, once the traffic sent so far is decided and learned: the learned state equals the one
recomputed from the outcomes topic, every feedback event is learned exactly once, every request has a decision,
and a request decided twice (the crash came between publishing and committing) shows by its decision id.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.kafka.router_world import Loop, observations, write_config
from tests.reliability.support import (
    assert_states_equal,
    decisions_of,
    reference_states,
    start_worker,
    wait_learned,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(480)]

KILLS = 5
PER_ROUND = 400


async def test_sigkill_under_load_five_times(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    prefix = unique_prefix
    config_dir = write_config(tmp_path / "config")
    workers = [start_worker(tmp_path, kafka_bootstrap, prefix, "w0", config_dir)]
    chooser = random.Random(99)
    feedback_rng = np.random.default_rng(12)
    sent_requests: list[str] = []
    report: list[str] = []
    try:
        async with Loop(kafka_bootstrap, prefix) as loop:
            await loop.run(100, feedback_rng, batch=50, timeout_s=90)  # warm: the worker is up and deciding
            sent_requests += loop.order[:]
            for kill in range(1, KILLS + 1):
                before = len(loop.order)
                load = asyncio.create_task(loop.run(PER_ROUND, feedback_rng, batch=40, timeout_s=120))
                await asyncio.sleep(chooser.uniform(0.2, 2.5))  # a random point under load
                assert workers[-1].alive(), f"worker died on its own; see {tmp_path}/w{kill - 1}.log"
                workers[-1].kill()
                workers.append(start_worker(tmp_path, kafka_bootstrap, prefix, f"w{kill}", config_dir))
                decided = await load
                assert len(decided) == PER_ROUND
                sent_requests = loop.order[:]
                assert len(sent_requests) == before + PER_ROUND

                # -- after the restart: decided, learned exactly once, equal to the reference --------------
                n = len(sent_requests)
                states = await wait_learned(kafka_bootstrap, prefix, n, timeout_s=90)
                learned = sum(observations(s) for s in states.values())
                assert learned == n, f"after kill {kill}: learned {learned} outcomes for {n} feedback events"
                reference = await reference_states(kafka_bootstrap, prefix, config_dir)
                assert_states_equal(states, reference)

                decisions = await decisions_of(kafka_bootstrap, prefix)
                per_request = Counter(d["request_id"] for d in decisions)
                assert set(per_request) == set(sent_requests), "a request without a decision (or a stray one)"
                assert all(d["decision_id"] == f"d:{d['request_id']}" for d in decisions)
                redecided = sum(c - 1 for c in per_request.values())
                report.append(f"kill {kill}: {n} requests, {redecided} re-decided, {learned:.0f} learned")
                assert workers[-1].alive()
    finally:
        codes = [w.terminate() for w in workers]
    print(f"\ncrash: {'; '.join(report)}; {time.monotonic() - t0:.1f} s")
    assert codes[-1] == 0, (
        f"last worker exited with {codes[-1]}; the end of {tmp_path}/w{KILLS}.log:\n{workers[-1].log_tail()}"
    )
