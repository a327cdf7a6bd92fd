"""Two workers on the real broker: a worker stalled past its session timeout, then continued, learns no outcome a
second time (nor loses one).

B is stopped (SIGSTOP) until A holds every partition; feedback is then sent to B's old partitions (A decides and
joins it), B is continued and more feedback goes to those partitions at once, while B's readers still hold them
(they learn of the revocation only once faust's consumer does). Every outcome must be learnt exactly once: the
state topic's events per task type are the warm-up's plus the feedback sent, no more, no fewer. Before the
fencing of the join and the learner (2026-12-02), B joined the feedback it read again at its decision's position
(the new owner had joined it at the feedback's), another source, and the learner took both.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from tests.kafka.router_world import Loop
from tests.reliability.support import wait_until
from tests.reliability.test_rebalance_moved import _compacted_events, _request_in, running, two_workers

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

TYPES = ("chat", "summarize")
WARM, STOPPED, CONTINUED = 10, 30, 30
SETTLE_S = 20.0
"""How long the state topic must keep the expected counts once it reaches them (a late duplicate shows up)."""


async def test_a_worker_stalled_past_its_session_learns_no_outcome_twice(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    prefix, rng = unique_prefix, np.random.default_rng(1717)
    a, b, logs = two_workers(tmp_path, kafka_bootstrap, prefix)

    async def split() -> list[int] | None:
        """B's feedback partitions once each worker holds half of them (None until then)."""
        held = (await a.partitions("feedback_reader"), await b.partitions("feedback_reader"))
        if held[0] is None or held[1] is None or len(held[0]) != 2 or len(held[1]) != 2:
            return None
        return held[1]

    with running(a, b, logs) as stall:
        b_own = await wait_until(split, 180)
        assert b_own, f"A and B never held two feedback partitions each:\n{logs()}"
        async with Loop(kafka_bootstrap, prefix) as loop:
            for task_type in TYPES:
                await loop.run(WARM, rng, batch=WARM, timeout_s=90, task_type=task_type)
            expected = dict.fromkeys(TYPES, WARM)

            async def learnt() -> bool:
                return await _compacted_events(kafka_bootstrap, prefix) == expected

            assert await wait_until(learnt, 90), f"warm-up not learnt:\n{logs()}"

            stall.stop()

            async def a_holds_all() -> bool:
                return await a.partitions("feedback_reader") == [0, 1, 2, 3]

            assert await wait_until(a_holds_all, 120), f"A did not take B's partitions:\n{logs()}"
            for task_type in TYPES:
                await loop.answer([_request_in(b_own, task_type) for _ in range(STOPPED)], rng, timeout_s=90)
            expected = dict.fromkeys(TYPES, WARM + STOPPED)
            assert await wait_until(learnt, 90), (
                f"A did not learn what B's partitions were sent: "
                f"{await _compacted_events(kafka_bootstrap, prefix)}:\n{logs()}"
            )

            stall.cont()
            for task_type in TYPES:  # at once: B's readers still hold its old partitions
                await loop.answer(
                    [_request_in(b_own, task_type) for _ in range(CONTINUED)], rng, timeout_s=90
                )
            expected = dict.fromkeys(TYPES, WARM + STOPPED + CONTINUED)

            async def at_least() -> bool:
                events = await _compacted_events(kafka_bootstrap, prefix)
                return all(events.get(t, 0) >= n for t, n in expected.items())

            await wait_until(at_least, 180)
            await asyncio.sleep(SETTLE_S)  # a duplicate may come after the expected count is reached
            events = await _compacted_events(kafka_bootstrap, prefix)
        b_counters = (await b.get("/api/stats") or {}).get("counters", {})
        held = {k: v for k, v in b_counters.items() if k.startswith("lease_")}
        print(
            f"\nexpected {expected}, learnt {events}; B's writes held: {held}; {time.monotonic() - t0:.1f} s"
        )
        assert events == expected, (
            f"outcomes learnt per task type {events}, feedback sent {expected} (exactly once: "
            f"{sum(events.values()) - sum(expected.values()):+d}):\n{logs()}"
        )
        # the scenario: B, continued, went to write as the owner of its old partitions (and waited)
        assert held.get("lease_waits", 0) >= 1, b_counters
        assert a.worker.alive() and b.worker.alive(), logs()
