"""Floods of client-named keys on the real broker: the worker stays bounded and the normal workload unharmed.

1. ``FLOOD`` requests, each with its own task type, produced as fast as the client can, with feedback for every
   tenth decision, by a flooding client in a process of its own (:mod:`tests.reliability.flood_client`), while
   a normal workload on ``chat`` runs beside them at ``RATE`` requests per second (:mod:`tests.reliability.paced`;
   it skips the flood's decisions unparsed, as a real client reading its reply topic never sees them);
2. then ``FEEDBACK_FLOOD`` feedback events naming unknown request ids (half) and unknown models (half).

Checked: worker RSS at most twice its RSS after a quiet warm-up of the same worker; the state topic gains at
most ``max_task_types`` flood keys plus the shared one; ``/metrics`` has at most
:func:`~banditroute.web.metrics.series_bound` sample lines; every normal request decided, every normal
feedback learnt exactly once (state equal to the one recomputed from the outcomes topic); every flood
feedback event dead-lettered with its reason; every flood answer learnt once, except those whose capped decision
the join gave up (``limits.max_capped_in_flight``, 20,000 by default; only the full size reaches it), which are
dead-lettered as ``unknown_request`` instead, counted. The normal workload's latency is printed, not asserted
(no timing assertions in tests): each request's round trip as the client sees it (sent until its decision is
read), ``QUIET_N`` of them at the same rate before the flood and as many as the flood phase lasts (about 1,000
at 20,000), percentiles and the p99 ratio, with the p99 of its parts: the request until acknowledged, until
its decision was made (the decision record's timestamp: the router's share, reading, queueing, deciding), and
the decision until read (its produce and the client's fetch).

The issue asks for 200,000 of each; at the rates measured on the loaded 2-core machine (README, Flood test)
that takes minutes, too much of the suite's 12-minute budget. The suite runs 20,000 requests and 10,000 feedback events (1-2 minutes);
``BANDITROUTE_FLOOD=200000`` runs the full size. The bounds asserted do not depend on the size: the caps
hold from the 201st task type on.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from banditroute.limits import SHARED_KEY
from banditroute.web.metrics import series_bound
from tests.kafka.router_world import MODELS_YAML, Loop, write_config
from tests.reliability.paced import Trip, paced, percentiles
from tests.reliability.support import (
    assert_states_equal,
    learned_states,
    observations,
    reference_states,
    rss_kb,
    start_web_worker,
    wait_until,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

FLOOD = int(os.environ.get("BANDITROUTE_FLOOD", "20000"))
FEEDBACK_FLOOD = FLOOD // 2
FLOOD_NICE = int(os.environ.get("BANDITROUTE_FLOOD_NICE", "0"))
"""The flooding client's niceness (``BANDITROUTE_FLOOD_NICE=19``): on this 2-core machine it shares the cores
with the broker and the worker; in a deployment it would run on another host. A stand-in for that, measured
beside the default (0), never instead of it."""
CAP = 200
METRICS_TASK_TYPES = 20
STATE_KEYS = 50
RATE = 50.0
"""The normal workload's requests per second, quiet and under the flood alike."""
QUIET_N = 400
"""Normal requests timed in the quiet run (8 s at ``RATE``); the flood phase times as many as it lasts."""
POLICY = f"""defaults:
  lam: 10.0
  half_life: null
  join: {{wait_s: 60, keep_joined_s: 5}}
pooling: {{max_strength: 0}}  # the reference state is recomputed from the outcomes alone: no pooled priors
task_types:
  chat: {{}}
limits:
  max_task_types: {CAP}
  metrics_task_types: {METRICS_TASK_TYPES}
  metrics_state_keys: {STATE_KEYS}
"""


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:  # noqa: S310 - localhost
        body: bytes = resp.read()
        return body


async def stats(port: int) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(await asyncio.to_thread(get, port, "/api/stats"))
    return result


async def normal_rounds(
    loop: Loop, rng: np.random.Generator, rounds: int, phases: list[tuple[float, float, float]] | None = None
) -> list[float]:
    """Closed-loop rounds of 20 chat requests; returns each request's round trip (ms): its round's time to
    send the requests, have them decided and send their feedback. ``phases`` gets each round's three parts."""
    times: list[float] = []
    for _ in range(rounds):
        t0 = time.monotonic()
        decided = await loop.run(20, rng, batch=20, timeout_s=180, phases=phases)
        times += [(time.monotonic() - t0) * 1000.0] * len(decided)
    return times


async def flood_from_another_process(
    bootstrap: str, prefix: str, n: int, seed: int
) -> asyncio.subprocess.Process:
    """The flooding client (:mod:`tests.reliability.flood_client`) in a process of its own (at ``FLOOD_NICE``)."""
    nice = ["nice", "-n", str(FLOOD_NICE)] if FLOOD_NICE else []
    return await asyncio.create_subprocess_exec(
        *nice,
        sys.executable,
        "-m",
        "tests.reliability.flood_client",
        bootstrap,
        prefix,
        str(n),
        str(seed),
        stdout=asyncio.subprocess.PIPE,
        cwd=str(Path(__file__).parents[2]),
    )


def latency_report(quiet: dict[str, Trip], flooded: dict[str, Trip]) -> str:
    """The normal workload's round trips, quiet and under the flood: percentiles, the p99 ratio, and the p99 of
    each part of the way (:attr:`Trip.parts_ms`)."""
    q = np.array([t.round_trip_ms for t in quiet.values()])
    f = np.array([t.round_trip_ms for t in flooded.values()])
    q_parts = np.array([t.parts_ms for t in quiet.values()])
    f_parts = np.array([t.parts_ms for t in flooded.values()])

    def parts(a: np.ndarray) -> str:
        return " / ".join(f"{v:.0f}" for v in np.nanpercentile(a, 99, axis=0))

    ratio = float(np.percentile(f, 99) / np.percentile(q, 99))
    return (
        f"normal round trip at {RATE:.0f}/s p50 / p90 / p99 / max: quiet {percentiles(q)} ms ({len(q)} requests), "
        f"under the flood {percentiles(f)} ms ({len(f)} requests); p99 ratio {ratio:.2f}; "
        f"p99 of its parts (acknowledged / decided, the router's share / read): quiet {parts(q_parts)}, "
        f"flood {parts(f_parts)} ms; {worst_report(flooded)}"
    )


def worst_report(trips: dict[str, Trip]) -> str:
    """The slowest 1 % of the flood phase's round trips (those at and above its p99): over how many seconds they
    were sent, and the mean of their way in three legs: sent until acknowledged (client and broker), acknowledged
    until decided (the worker's fetch, queueing and deciding), decided until read (its produce and the client's
    fetch). A p99 over ~1,000 requests is the ~10 slowest: one stall of 0.3 s makes it."""
    slow = sorted(trips.values(), key=lambda t: t.round_trip_ms)[-max(1, math.ceil(len(trips) / 100)) :]
    sent = [t.sent for t in slow]
    legs = np.array([(t.acked - t.sent, t.decided - t.acked, t.read - t.decided) for t in slow]) * 1000.0
    return (
        f"slowest 1 % under the flood ({len(slow)}, sent within {max(sent) - min(sent):.1f} s of each other): "
        f"acknowledged / then decided / then read, mean {' / '.join(f'{v:.0f}' for v in np.nanmean(legs, axis=0))} ms"
    )


async def flood_feedback(bootstrap: str, prefix: str, n: int) -> None:
    """Half naming request ids nobody made, half naming models nobody has."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1)
    await producer.start()
    try:
        now = datetime.now(UTC).isoformat()
        for i in range(n):
            rid = f"ghost-{i}-{uuid.uuid4().hex[:8]}"
            model = "balanced" if i % 2 else f"model-{uuid.uuid4().hex}"
            doc = {
                "schema_version": 1,
                "request_id": rid,
                "model": model,
                "quality": 1.0,
                "cost_usd": 0.001,
                "observed_at": now,
                "idempotency_key": f"{rid}:{model}"[:128],
            }
            await producer.send(f"{prefix}.feedback", key=rid.encode(), value=orjson.dumps(doc))
        await producer.flush()
    finally:
        await producer.stop()


async def test_task_type_and_feedback_floods_stay_bounded(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    prefix = unique_prefix
    config_dir = write_config(tmp_path / "config", MODELS_YAML, POLICY)
    worker, port = start_web_worker(tmp_path, kafka_bootstrap, prefix, config_dir)
    pid = worker.proc.pid
    rng = np.random.default_rng(5)
    report: list[str] = []
    try:
        async with Loop(kafka_bootstrap, prefix, skip_key_prefix=b"flood-") as loop:
            # -- quiet: warm the worker up, then take its RSS and the normal workload's decision times --------
            await normal_rounds(loop, rng, 15)
            # This process is the normal workload's client and also holds pytest, the suite's modules and the
            # readers' records: its full collections took 0.4-1.3 s under load and fell in the flood's rounds
            # (gc.callbacks; docs/benchmarks.md, "Flood p99: the measuring client"), timed as the router's
            # delay. What exists now is frozen (the worker does the same, gc_tuning.py), so they walk only
            # what the rounds allocate (no collection here: it would add its time); undone in the finally.
            gc.freeze()
            quiet = await paced(loop, rng, RATE, count=QUIET_N)
            assert await wait_until(lambda: stats_ok(port), 60)
            quiet_rss = rss_kb(pid)
            peak = quiet_rss

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, rss_kb(pid))
                    await asyncio.sleep(0.5)

            watcher = asyncio.create_task(watch())
            # -- the task type flood, with the normal workload beside it ----------------------------------
            t_flood = time.monotonic()
            letters_before = (await stats(port))["dead_letters"]
            flooder = await flood_from_another_process(kafka_bootstrap, prefix, FLOOD, 6)
            reading = asyncio.create_task(flooder.communicate())
            flooded = await paced(loop, rng, RATE, until=reading.done)
            out, _ = await reading
            flood_s = time.monotonic() - t_flood
            assert flooder.returncode == 0, f"the flooding client failed ({flooder.returncode})"
            answered = orjson.loads(out.splitlines()[-1])
            assert answered["seen"] == FLOOD, (
                f"only {answered['seen']} of {FLOOD} flood requests were decided"
            )
            flood_answers = answered["answered"]
            normal_n = normal_count(loop)

            async def unanswered() -> int:
                """Flood feedback dead-lettered as unknown_request: its capped decision was given up."""
                letters = (await stats(port))["dead_letters"]
                return int(letters.get("unknown_request", 0) - letters_before.get("unknown_request", 0))

            # normal feedback and the flood's answers are learnt: exactly once, equal to the reference; past
            # limits.max_capped_in_flight, flood answers for given-up decisions are dead-lettered instead
            async def all_learnt() -> dict[str, Any] | None:
                states = await learned_states(kafka_bootstrap, prefix)
                done = sum(observations(s) for s in states.values())
                return states if done + await unanswered() >= normal_n + flood_answers else None

            states = await wait_until(all_learnt, 180)
            if not states:
                now = await learned_states(kafka_bootstrap, prefix)
                counters = (await stats(port))["counters"]
                raise AssertionError(
                    f"learnt {sum(observations(s) for s in now.values())} of {normal_n} normal + {flood_answers} "
                    f"flood feedback; chat {observations(now['chat']) if 'chat' in now else None}; "
                    f"worker counters {counters}; dead letters {(await stats(port))['dead_letters']}"
                )
            await asyncio.sleep(2.0)
            states = await learned_states(kafka_bootstrap, prefix)
            assert observations(states["chat"]) == normal_n, "normal feedback lost or learnt twice"
            assert_states_equal(states, await reference_states(kafka_bootstrap, prefix, config_dir))
            flood_keys = set(states) - {"chat", SHARED_KEY}
            assert len(flood_keys) <= CAP and SHARED_KEY in states
            given_up = int((await stats(port))["counters"].get("capped_given_up", 0))
            lost_answers = await unanswered()
            assert (
                sum(observations(s) for k, s in states.items() if k != "chat") + lost_answers == flood_answers
            )
            assert lost_answers <= given_up, (
                "flood feedback dead-lettered although its decision was not given up"
            )

            metrics = (await asyncio.to_thread(get, port, "/metrics")).decode()
            series = [line for line in metrics.splitlines() if line and not line.startswith("#")]
            bound = series_bound(1 + METRICS_TASK_TYPES, STATE_KEYS, 3)
            assert len(series) <= bound
            capped = [
                line
                for line in series
                if line.startswith('banditroute_capped_requests_total{cap="max_task_types"}')
            ]
            assert capped and float(capped[0].split()[-1]) == FLOOD - CAP
            lane = (await stats(port))["low_lane"]
            # every flood request named a new task type, so each waited in the lane or, past its bound, in the
            # spill topic; chat (listed) never did
            assert lane["parked_total"] + lane["spilled_total"] == FLOOD and lane["parked"] == 0, lane
            rss_after_requests = rss_kb(pid)

            # -- the feedback flood ----------------------------------------------------------------------
            t_fb = time.monotonic()
            before = (await stats(port))["dead_letters"]
            await flood_feedback(kafka_bootstrap, prefix, FEEDBACK_FLOOD)

            async def all_dead_lettered() -> dict[str, int] | None:
                now = (await stats(port))["dead_letters"]
                grew = {r: now.get(r, 0) - before.get(r, 0) for r in ("unknown_model", "unknown_request")}
                return grew if sum(grew.values()) >= FEEDBACK_FLOOD else None

            grew = await wait_until(all_dead_lettered, 240)
            letters = (await stats(port))["dead_letters"]
            counters = (await stats(port))["counters"]
            half = FEEDBACK_FLOOD // 2
            expected = {"unknown_model": half, "unknown_request": FEEDBACK_FLOOD - half}
            assert grew == expected, f"{letters} {counters}"
            fb_s = time.monotonic() - t_fb
            after = await normal_rounds(loop, rng, 5)  # still deciding and learning
            assert len(after) == 100
            final = await wait_until(lambda: chat_learnt(kafka_bootstrap, prefix, normal_count(loop)), 120)
            assert final, "normal feedback after the floods was not learnt exactly once"
            watcher.cancel()
            peak = max(peak, rss_kb(pid))
            assert worker.alive()
            report = [
                f"{FLOOD} task types in {flood_s:.0f} s (flooding client at nice {FLOOD_NICE}), "
                f"{FEEDBACK_FLOOD} bad feedback in {fb_s:.0f} s",
                f"RSS quiet {quiet_rss / 1024:.0f} MiB, after the task type flood {rss_after_requests / 1024:.0f} "
                f"MiB, peak {peak / 1024:.0f} MiB",
                f"/metrics {len(series)} lines (bound {bound})",
                f"state keys {len(states)} (flood {len(flood_keys)}, cap {CAP})",
                f"capped decisions given up {given_up} (their feedback dead-lettered: {lost_answers} of "
                f"{flood_answers})",
                latency_report(quiet, flooded),
            ]
            assert peak <= 2 * quiet_rss, "; ".join(report)
    finally:
        gc.unfreeze()
        code = worker.terminate()
    print(f"\nflood: {'; '.join(report)}; {time.monotonic() - t0:.0f} s")
    assert code == 0, f"worker exited with {code}; see {tmp_path}/w0.log"


def normal_count(loop: Loop) -> int:
    """Normal requests decided (the loop's reader sees the flood's decisions too)."""
    return sum(1 for r in loop.order if not r.startswith("flood-"))


async def stats_ok(port: int) -> bool:
    try:
        await stats(port)
        return True
    except OSError:
        return False


async def chat_learnt(bootstrap: str, prefix: str, n: int) -> bool:
    states = await learned_states(bootstrap, prefix)
    return "chat" in states and observations(states["chat"]) == n
