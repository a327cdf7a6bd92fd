"""SIGTERM the worker while it joins a stream of feedback, restart it, and check that nothing was lost and nothing
learned twice: a graceful stop cancels the readers mid-batch (faust stops its services), so a feedback batch may be
cut off between its join-table flush, its outcomes and its commit.

After the restart, once every feedback event sent is learned: the learned observations equal the feedback events
sent (none lost, none twice), the learned state equals the one recomputed from the outcomes topic, and nothing was
dead-lettered (feedback read again by the next owner must find its decision or its resolution).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.kafka.router_world import Loop, feedback_for, observations, read_all, request, write_config
from tests.reliability.support import (
    assert_states_equal,
    dead_letters,
    reference_states,
    start_worker,
    wait_learned,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(240)]

WARM = 100
STOPS = 3
STREAM = 2000
CHUNK = 100


async def test_sigterm_while_feedback_is_joined_loses_nothing_and_learns_nothing_twice(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    prefix, rng, chooser = unique_prefix, np.random.default_rng(5), random.Random(17)
    config_dir = write_config(tmp_path / "config")
    workers = [start_worker(tmp_path, kafka_bootstrap, prefix, "w0", config_dir)]
    report: list[str] = []
    try:
        async with Loop(kafka_bootstrap, prefix) as loop:
            await loop.run(WARM, rng, batch=50, timeout_s=90)  # the worker is up, deciding and joining
            for stop in range(1, STOPS + 1):
                requests = [request() for _ in range(STREAM)]
                for r in requests:
                    await loop.send("requests", r, r["request_id"])
                await loop.flush()
                decided = await loop.await_decisions([r["request_id"] for r in requests], timeout_s=60)
                outcomes_before = len(await read_all(kafka_bootstrap, f"{prefix}.outcomes"))

                midway = asyncio.Event()
                stop_after = chooser.randrange(2, STREAM // CHUNK - 2)  # chunks sent before the SIGTERM

                async def stream_feedback(
                    decided: list[dict[str, Any]] = decided,
                    stop_after: int = stop_after,
                    midway: Any = midway,
                ) -> None:
                    for chunk, start in enumerate(range(0, STREAM, CHUNK)):
                        for d in decided[start : start + CHUNK]:
                            await loop.send("feedback", feedback_for(d, rng), d["request_id"])
                        await loop.flush()
                        if chunk == stop_after:
                            midway.set()
                        await asyncio.sleep(0.01)

                sending = asyncio.create_task(stream_feedback())
                await midway.wait()  # the worker is joining the stream; more of it comes while it stops
                worker = workers[-1]
                assert worker.alive(), f"worker died on its own; see {worker.log_path}"
                code = await asyncio.to_thread(worker.terminate)
                assert code == 0, f"the stopped worker exited with {code}:\n{worker.log_tail()}"
                joined = len(await read_all(kafka_bootstrap, f"{prefix}.outcomes")) - outcomes_before
                report.append(f"stop {stop}: {joined} of {STREAM} joined before the exit")
                workers.append(start_worker(tmp_path, kafka_bootstrap, prefix, f"w{stop}", config_dir))
                await sending

        sent = WARM + STOPS * STREAM
        states = await wait_learned(kafka_bootstrap, prefix, sent, timeout_s=90)
        learned = sum(observations(s) for s in states.values())
        assert learned == sent, f"learned {learned} outcomes for {sent} feedback events; {report}"
        assert_states_equal(states, await reference_states(kafka_bootstrap, prefix, config_dir))
        letters = await dead_letters(kafka_bootstrap, prefix)
        assert [(d["reason"], d["error"][:120]) for d in letters] == []
        assert workers[-1].alive()
    finally:
        codes = [w.terminate() for w in workers]
    print(
        f"\ngraceful stops: {'; '.join(report)}; {learned:.0f} learned of {sent}; {time.monotonic() - t0:.1f} s"
    )
    assert codes[-1] == 0, f"the last worker exited with {codes[-1]}:\n{workers[-1].log_tail()}"
