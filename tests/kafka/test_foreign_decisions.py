"""Decisions written to the ``decisions`` topic by something other than a worker (a broken local-mode SDK, any
process with write access) on the real broker: the state keys they name reach the ``state`` topic only within the
worker's ``limits``, the rest learn into ``~shared``; a decision larger than ``max_payload_bytes`` is
dead-lettered with its payload, and nothing of it is learnt (``join_io.JoinIO._foreign_served``)."""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from banditroute.client import RouterClient
from banditroute.kafka.decision_publisher import ORIGIN_HEADER
from banditroute.settings import Settings
from tests.kafka.helpers import producer
from tests.kafka.router_world import MODELS_YAML, learned_states, observations, read_all, write_config
from tests.reliability.support import start_web_worker

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

FORGED = 30


def forged(request_id: str, task_type: str, **fields: Any) -> dict[str, Any]:
    """A decision as a local-mode client writes it (the fields the join reads), naming its own state key."""
    return {
        "schema_version": 1,
        "decision_id": f"d:{request_id}",
        "request_id": request_id,
        "task_type": task_type,
        "tenant": None,
        "model": "balanced",
        "fallbacks": [],
        "propensity": 0.5,
        "candidates": [],
        "policy": {"name": "thompson", "version": "v1"},
        "state_version": 0,
        "reasons": {"capped": None},
        "worker_id": "forger",
        "is_default_route": False,
        "shadow": False,
        "state_key": task_type,
        **fields,
    }


def feedback(request_id: str) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "request_id": request_id,
        "decision_id": f"d:{request_id}",
        "model": "balanced",
        "quality": 1.0,
        "cost_usd": 0.002,
        "observed_at": "2026-12-03T00:00:00+00:00",
        "idempotency_key": f"{request_id}:balanced",
    }


def stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stats", timeout=10) as resp:
        return dict(orjson.loads(resp.read()))


async def test_forged_decisions_grow_the_state_topic_only_within_the_caps(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    prefix = unique_prefix
    policy = (
        "defaults:\n  lam: 10.0\n  half_life: null\n  join: {wait_s: 120}\nlimits:\n  max_task_types: 2\n"
    )
    config_dir = write_config(tmp_path / "config", MODELS_YAML, policy)
    settings = Settings.model_validate(
        {"kafka_bootstrap": kafka_bootstrap, "topic_prefix": prefix, "config_dir": str(config_dir)}
    )
    worker, port = start_web_worker(tmp_path, kafka_bootstrap, prefix, config_dir)
    try:
        async with RouterClient(settings, start_timeout_s=30.0) as remote:  # the decide loop holds "chat"
            assert (await remote.route("chat", timeout_s=90.0)).state_key == "chat"
        local = [(ORIGIN_HEADER, b"local")]
        big = forged("too-big", "chat", candidates=[{"model": "balanced", "note": "x" * 70_000}])
        async with producer(kafka_bootstrap, acks="all") as p:
            for i in range(FORGED):
                rid = f"forged-{i}"
                await p.send(
                    f"{prefix}.decisions",
                    orjson.dumps(forged(rid, f"made-up-{i}")),
                    rid.encode(),
                    headers=local,
                )
            await p.send(
                f"{prefix}.decisions", orjson.dumps(forged("known", "chat")), b"known", headers=local
            )
            sent_big = await p.send_and_wait(
                f"{prefix}.decisions", orjson.dumps(big), b"too-big", headers=local
            )
            await p.flush()
            for rid in [f"forged-{i}" for i in range(FORGED)] + ["known", "too-big"]:
                await p.send(f"{prefix}.feedback", orjson.dumps(feedback(rid)), rid.encode())
            await p.flush()

        # every forged decision's outcome is learnt (31), and the big one's feedback finds no decision
        deadline, seen = time.monotonic() + 60, stats(port)
        while time.monotonic() < deadline and (
            seen["learned"] < FORGED + 1 or seen["dead_letters"]["unknown_request"] < 1
        ):
            await asyncio.sleep(0.3)
            seen = await asyncio.to_thread(stats, port)
        assert seen["learned"] == FORGED + 1, seen["counters"]
        states = await learned_states(kafka_bootstrap, prefix)
        # the decide loop's "chat", one made-up task type within max_task_types (2; whichever the join read
        # first: they are spread over the partitions), and ~shared for the rest
        [own] = set(states) - {"chat", "~shared"}
        assert set(states) == {"chat", own, "~shared"} and own.startswith("made-up-"), sorted(states)
        assert observations(states["~shared"]) == FORGED - 1
        assert observations(states["chat"]) == 1 and observations(states[own]) == 1
        assert seen["foreign_capped"]["max_task_types"] == FORGED - 1

        letters = [orjson.loads(r.value) for r in await read_all(kafka_bootstrap, f"{prefix}.deadletter")]
        assert sorted(letter["reason"] for letter in letters) == ["payload_too_large", "unknown_request"]
        [too_big] = [letter for letter in letters if letter["reason"] == "payload_too_large"]
        assert (too_big["source_partition"], too_big["source_offset"]) == (
            sent_big.partition,
            sent_big.offset,
        )
        assert too_big["original_size"] == len(orjson.dumps(big))
        assert (
            base64.b64decode(too_big["original"])
            == orjson.dumps(big)[: len(base64.b64decode(too_big["original"]))]
        )
    finally:
        assert worker.terminate() == 0, worker.log_tail()
