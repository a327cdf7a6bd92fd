"""The router end to end on the real broker: it learns, recovers exactly after SIGKILL, scales to two workers,
and rejects feedback it must not learn from."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from aiokafka import TopicPartition

from banditroute.kafka.admin import admin_client
from tests.kafka.helpers import WorkerProcess, worker_env
from tests.kafka.router_world import (
    BEST,
    CHAT_PARTITION,
    Loop,
    assert_states_equal,
    feedback_for,
    learned_states,
    observations,
    read_all,
    reference_states,
    request,
    wait_learned,
    write_config,
)

pytestmark = pytest.mark.kafka


async def committed_offsets(bootstrap: str, prefix: str) -> dict[str, int]:
    """Per consumer group (faust's and the join's and learner's readers'), the sum of the offsets committed for
    the feedback and outcomes topics."""
    tps = [TopicPartition(f"{prefix}.feedback", p) for p in range(4)]
    tps += [TopicPartition(f"{prefix}.outcomes", p) for p in range(2)]
    out: dict[str, int] = {}
    async with admin_client(bootstrap) as admin:
        for group in (prefix, f"{prefix}.join-feedback", f"{prefix}.learn"):
            offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
            out[group] = sum(max(0, meta.offset) for meta in offsets.values())
    return out


def worker(tmp_path: Path, bootstrap: str, prefix: str, name: str, config_dir: Path) -> WorkerProcess:
    env = worker_env(bootstrap, prefix, str(config_dir), str(tmp_path / f"data-{name}"))
    return WorkerProcess(env, str(tmp_path / f"{name}.log")).start()


async def test_learns_the_best_cost_performance_model(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    config_dir = write_config(tmp_path / "config")
    w = worker(tmp_path, kafka_bootstrap, unique_prefix, "w1", config_dir)
    try:
        async with Loop(kafka_bootstrap, unique_prefix) as loop:
            decided = await loop.run(2500, np.random.default_rng(7), batch=50, timeout_s=90)
        last = [d["model"] for d in decided[-500:]]
        share = last.count(BEST) / len(last)
        assert share >= 0.8, f"best model got {share:.0%} of the last 500 decisions"
        assert all(0 < d["propensity"] <= 1 for d in decided)
        # feedback and outcomes are read by the worker's own readers: faust never fetched (nor committed) them
        committed = await committed_offsets(kafka_bootstrap, unique_prefix)
        assert committed[unique_prefix] == 0
        assert committed[f"{unique_prefix}.join-feedback"] > 0 and committed[f"{unique_prefix}.learn"] > 0
    finally:
        code = w.terminate()
        assert code == 0, f"worker exited with {code}; see {tmp_path / 'w1.log'}"


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigkill_recovers_exactly(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, workers: int
) -> None:
    config_dir = write_config(tmp_path / "config")
    procs = [worker(tmp_path, kafka_bootstrap, unique_prefix, f"w{i}", config_dir) for i in range(workers)]
    restarted: list[WorkerProcess] = []
    rng = np.random.default_rng(11)
    n = 1200

    def chaos(start: int) -> None:
        if start == 600:  # mid-stream: SIGKILL one worker and start a replacement
            procs[0].kill()
            restarted.append(worker(tmp_path, kafka_bootstrap, unique_prefix, "w-restarted", config_dir))

    try:
        async with Loop(kafka_bootstrap, unique_prefix) as loop:
            decided = await loop.run(n, rng, batch=50, between=chaos, timeout_s=120)
        assert len({d["request_id"] for d in decided}) == n
        states = await wait_learned(kafka_bootstrap, unique_prefix, n, timeout_s=90)
        learned = sum(observations(s) for s in states.values())
        assert learned == n, f"learned {learned} outcomes for {n} feedback events"
        reference = await reference_states(kafka_bootstrap, unique_prefix, config_dir)
        assert_states_equal(states, reference)
    finally:
        for p in procs + restarted:
            p.terminate()


async def test_bad_feedback_is_counted_and_not_learned(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    config_dir = write_config(tmp_path / "config")
    w = worker(tmp_path, kafka_bootstrap, unique_prefix, "w1", config_dir)
    rng = np.random.default_rng(3)
    try:
        async with Loop(kafka_bootstrap, unique_prefix) as loop:
            reqs = [request(), {**request(), "candidates": ["premium", "balanced"]}, request()]
            for r in reqs:
                await loop.send("requests", r, r["request_id"])
            await loop.flush()
            d1, d2, d3 = await loop.await_decisions([r["request_id"] for r in reqs])
            # records on `outcomes` the learner cannot use (only the join should write there): dead-lettered,
            # and every partition's learning goes on past them (the good outcome below lands behind one)
            assert loop.producer is not None
            outcomes = f"{unique_prefix}.outcomes"
            bad_outcomes = 0
            for partition in sorted(await loop.producer.partitions_for(outcomes)):
                for raw in (b"not json", orjson.dumps({"model": "budget"})):
                    await loop.producer.send(outcomes, key=b"x", value=raw, partition=partition)
                    bad_outcomes += 1
            # a well-formed outcome outside its task key's partition (the join writes it there): learnt there, its
            # state would be written by whoever holds this partition, beside the state partition's owner
            misrouted = {"task_key": "chat", "model": "balanced", "quality": 1.0, "src": 999, "off": 0}
            wrong = 1 - CHAT_PARTITION  # 2 state partitions
            await loop.producer.send(outcomes, key=b'"chat"', value=orjson.dumps(misrouted), partition=wrong)
            await loop.flush()
            good = feedback_for(d1, rng)
            await loop.send("feedback", good, d1["request_id"])
            bad = [
                (feedback_for(d1, rng, idempotency_key="again"), d1["request_id"], "duplicate_feedback"),
                (
                    feedback_for(d3, rng, request_id="never-requested", decision_id=None),
                    "never-requested",
                    "unknown_request",
                ),
                # budget was not among the candidates of request 2, so nobody routed it there
                (feedback_for(d2, rng, model="budget"), d2["request_id"], "model_mismatch"),
            ]
            for fb, key, _ in bad:
                await loop.send("feedback", fb, key)
            await loop.flush()
        expected = sorted(
            [reason for *_, reason in bad]
            + ["malformed_json", "validation_error"] * (bad_outcomes // 2)
            + ["validation_error"]  # the misrouted outcome
        )
        deadline = time.monotonic() + 60
        reasons: list[str] = []
        while time.monotonic() < deadline:
            letters = await read_all(kafka_bootstrap, f"{unique_prefix}.deadletter")
            reasons = sorted(orjson.loads(r.value)["reason"] for r in letters)
            if reasons == expected:
                break
            await asyncio.sleep(0.5)
        assert reasons == expected
        states = await learned_states(kafka_bootstrap, unique_prefix)
        assert sum(observations(s) for s in states.values()) == 1
    finally:
        w.terminate()
