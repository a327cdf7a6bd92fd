"""Fuzzing a running worker: >= 10,000 bad events on every input topic, interleaved with valid traffic.

The worker must never die; every bad event must reach the dead-letter topic exactly once with the reason the
decode layer gives it (matched by source topic, partition and offset); every valid request must be decided
exactly once, every valid feedback learned exactly once, and every count must reconcile.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.kafka.router_world import Loop, feedback_for, observations, read_all, request, write_config
from tests.reliability.fuzz import CATALOG, FEEDBACK, REQUESTS, bad_stream
from tests.reliability.support import (
    Sent,
    dead_letters,
    decisions_of,
    produce_bulk,
    start_worker,
    wait_learned,
    wait_until,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(420)]

MODELS = ("premium", "balanced", "budget")
MAX_BYTES = 65_536
N_VALID_REQUESTS = 1000
N_MISMATCH = 100  # valid requests restricted to premium/balanced whose only feedback names budget


def valid_catalog(i: int) -> bytes:
    """An 'updated' event that restates a configured model as it is (so routing does not change)."""
    name, cost, latency = [("premium", 0.02, 900), ("balanced", 0.002, 500), ("budget", 0.0005, 300)][i % 3]
    return orjson.dumps(
        {
            "schema_version": 1,
            "action": "updated",
            "model": name,
            "price_in_per_1k_usd": 0.0,
            "price_out_per_1k_usd": 0.0,
            "cost_per_call_usd": cost,
            "latency_ms": latency,
            "updated_at": datetime.now(UTC).isoformat(),
        }
    )


def interleave(valid: list[Any], bad: list[Any], rng: random.Random) -> list[Any]:
    """Both lists merged in random positions, each keeping its own order."""
    tags = [0] * len(valid) + [1] * len(bad)
    rng.shuffle(tags)
    vi, bi = iter(valid), iter(bad)
    return [next(vi) if t == 0 else next(bi) for t in tags]


async def test_fuzzed_inputs_are_dead_lettered_and_valid_ones_processed(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    prefix = unique_prefix
    topic = {name: f"{prefix}.{name}" for name in (REQUESTS, FEEDBACK, CATALOG)}
    rng = random.Random(2024)
    bad_requests = bad_stream(REQUESTS, 4000, MODELS, MAX_BYTES, first_seed=1)
    bad_feedback = bad_stream(FEEDBACK, 4000, MODELS, MAX_BYTES, first_seed=2)
    bad_catalog = bad_stream(CATALOG, 1500, MODELS, MAX_BYTES, first_seed=3)
    generated_s = time.monotonic() - t0

    config_dir = write_config(tmp_path / "config")
    worker = start_worker(tmp_path, kafka_bootstrap, prefix, "w1", config_dir)
    expected: dict[tuple[str, int, int], str] = {}  # source position -> reason
    try:
        async with Loop(kafka_bootstrap, prefix) as loop:
            producer = AIOKafkaProducer(
                bootstrap_servers=kafka_bootstrap, linger_ms=5, acks="all", max_request_size=2_000_000
            )
            await producer.start()
            try:
                # -- phase 1: requests (valid and bad) and the catalog (valid and bad) -------------------
                valid_reqs = [request() for _ in range(N_VALID_REQUESTS)]
                for r in valid_reqs[:N_MISMATCH]:
                    r["candidates"] = ["premium", "balanced"]
                valid_items = [
                    ("v", topic[REQUESTS], r["request_id"].encode(), orjson.dumps(r)) for r in valid_reqs
                ]
                valid_items += [
                    ("v", topic[CATALOG], f"cat-{i}".encode(), valid_catalog(i)) for i in range(60)
                ]
                bad_items = [
                    (reason, topic[e.topic], e.key, e.raw) for e, reason in bad_requests + bad_catalog
                ]
                plan = interleave(valid_items, bad_items, rng)
                sent = await produce_bulk(producer, [(t, k, v) for _, t, k, v in plan])
                note(expected, plan, sent)

                decided = await loop.await_decisions([r["request_id"] for r in valid_reqs], timeout_s=120)
                by_request = {d["request_id"]: d for d in decided}
                assert all(d["model"] in MODELS for d in decided)

                # -- phase 2a: feedback for every valid decision (but the mismatch ones) and bad feedback -
                fb_rng = np.random.default_rng(5)
                good_fb = [feedback_for(d, fb_rng) for d in decided[N_MISMATCH:]]
                valid_items = [
                    ("v", topic[FEEDBACK], f["request_id"].encode(), orjson.dumps(f)) for f in good_fb
                ]
                bad_items = [(reason, topic[FEEDBACK], e.key, e.raw) for e, reason in bad_feedback]
                plan = interleave(valid_items, bad_items, rng)
                sent = await produce_bulk(producer, [(t, k, v) for _, t, k, v in plan])
                note(expected, plan, sent)
                states = await wait_learned(kafka_bootstrap, prefix, len(good_fb), timeout_s=120)
                assert sum(observations(s) for s in states.values()) == len(good_fb)

                # -- phase 2b: events that decode but must not be used ---------------------------------
                semantic: list[tuple[str, str, bytes, bytes]] = []
                for i in range(100):  # feedback for requests nobody made
                    ghost = f"ghost-{uuid.uuid4().hex}"
                    fb = {
                        **good_fb[0],
                        "request_id": ghost,
                        "decision_id": f"d:{ghost}",
                        "idempotency_key": ghost,
                    }
                    if i % 2:
                        del fb["request_id"]  # names only the decision
                    semantic.append(("unknown_request", topic[FEEDBACK], ghost.encode(), orjson.dumps(fb)))
                for fb in good_fb[:100]:  # exact replays of joined feedback (same idempotency key)
                    semantic.append(
                        ("duplicate_feedback", topic[FEEDBACK], fb["request_id"].encode(), orjson.dumps(fb))
                    )
                for fb in good_fb[100:200]:  # second feedback with another key
                    again = {**fb, "idempotency_key": f"{fb['idempotency_key']}-again", "quality": 1.0}
                    semantic.append(
                        (
                            "duplicate_feedback",
                            topic[FEEDBACK],
                            fb["request_id"].encode(),
                            orjson.dumps(again),
                        )
                    )
                for d in decided[:N_MISMATCH]:  # budget was never a candidate of these requests
                    fb = feedback_for(d, fb_rng, model="budget")
                    semantic.append(
                        ("model_mismatch", topic[FEEDBACK], d["request_id"].encode(), orjson.dumps(fb))
                    )
                for d in decided[N_MISMATCH : N_MISMATCH + 50]:  # a decision id that is not this request's
                    fb = feedback_for(
                        d, fb_rng, decision_id="d:someone-else", idempotency_key=uuid.uuid4().hex
                    )
                    semantic.append(
                        ("unknown_request", topic[FEEDBACK], d["request_id"].encode(), orjson.dumps(fb))
                    )
                for r in valid_reqs[-100:]:  # the same request id again
                    semantic.append(
                        ("duplicate_id", topic[REQUESTS], r["request_id"].encode(), orjson.dumps(r))
                    )
                rng.shuffle(semantic)
                sent = await produce_bulk(producer, [(t, k, v) for _, t, k, v in semantic])
                note(expected, semantic, sent)
            finally:
                await producer.stop()

        n_bad = len(expected)
        assert n_bad >= 10_000

        # -- reconcile ------------------------------------------------------------------------------------
        async def all_letters() -> list[dict[str, Any]] | None:
            letters = await dead_letters(kafka_bootstrap, prefix)
            return letters if len(letters) >= n_bad else None

        letters = await wait_until(all_letters, timeout_s=120, interval_s=1.0)
        letters = letters or await dead_letters(kafka_bootstrap, prefix)
        got = Counter((dl["source_topic"], dl["source_partition"], dl["source_offset"]) for dl in letters)
        missing = Counter(
            (pos[0].rsplit(".", 1)[-1], reason) for pos, reason in expected.items() if pos not in got
        )
        assert sum(got.values()) == n_bad, (
            f"{sum(got.values())} dead letters for {n_bad} bad events; missing {missing}"
        )
        assert all(c == 1 for c in got.values()), "an event was dead-lettered twice"
        assert set(got) == set(expected), "dead letters do not match the bad events by position"
        wrong = [
            (pos, dl["reason"], expected[pos], dl["error"])
            for dl in letters
            if expected[(pos := (dl["source_topic"], dl["source_partition"], dl["source_offset"]))]
            != dl["reason"]
        ]
        assert not wrong, wrong[:10]
        assert all(dl["error"] for dl in letters)

        decisions = await decisions_of(kafka_bootstrap, prefix)
        ids = Counter(d["request_id"] for d in decisions)
        assert set(ids) == {r["request_id"] for r in valid_reqs}, "a decision for an invalid request"
        assert all(c == 1 for c in ids.values()), "a request was decided twice without a crash"
        assert all(d["decision_id"] == f"d:{d['request_id']}" for d in decisions)
        assert by_request.keys() == ids.keys()

        outcomes = [orjson.loads(r.value) for r in await read_all(kafka_bootstrap, f"{prefix}.outcomes")]
        assert sorted(o["request_id"] for o in outcomes) == sorted(f["request_id"] for f in good_fb)
        states = await wait_learned(kafka_bootstrap, prefix, len(good_fb), timeout_s=10)
        assert sum(observations(s) for s in states.values()) == len(good_fb)
        assert worker.alive(), "the worker died"
        print(
            f"\nfuzz: {n_bad} bad events ({Counter(expected.values())}), {N_VALID_REQUESTS} valid requests, "
            f"{len(good_fb)} valid feedback; generated in {generated_s:.1f} s, total {time.monotonic() - t0:.1f} s"
        )
    finally:
        code = worker.terminate()
    assert code == 0, f"worker exited with {code}; see {tmp_path / 'w1.log'}"


def note(
    expected: dict[tuple[str, int, int], str], plan: list[tuple[str, str, bytes, bytes]], sent: list[Sent]
) -> None:
    """Record where each bad event of ``plan`` landed (valid ones are tagged 'v')."""
    for (tag, *_), where in zip(plan, sent, strict=True):
        if tag != "v":
            expected[(where.topic, where.partition, where.offset)] = tag
