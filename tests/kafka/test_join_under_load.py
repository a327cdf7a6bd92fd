"""On the real broker, under load: feedback sent the moment its decision is read is joined, every time.

A 30-minute soak once dead-lettered thousands of such feedback events as ``unknown_request`` although their
decisions had been published: the join read the decisions back from the topic and lagged behind the feedback.
The worker's own decisions now reach the join in memory; decisions published by others (local-mode clients
write straight to ``decisions``) still come through the decisions reader, and their feedback waits for it. The
reader reads none of the worker's own decisions back (its counters, from ``/api/stats``): it seeks past them and
reads only what lies between.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from banditroute.kafka.local import free_port
from tests.kafka.helpers import WorkerProcess, wait_for, worker_env
from tests.kafka.router_world import feedback_for, read_all, request, wait_topics, write_config

pytestmark = pytest.mark.kafka

RATE_PER_S = 5000
SECONDS = 6.0


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - the test's own localhost worker
        body: bytes = resp.read()
        return body


def _local_decision(like: dict[str, Any]) -> dict[str, Any]:
    """A decision as a local-mode client publishes it: no request on ``requests``, no worker header."""
    request_id = f"local-{uuid.uuid4().hex}"
    return {**like, "request_id": request_id, "decision_id": f"d:{request_id}", "worker_id": None}


async def test_feedback_right_after_each_decision_is_always_joined(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    config_dir = write_config(tmp_path / "config")
    port = free_port()
    env = worker_env(
        kafka_bootstrap,
        unique_prefix,
        str(config_dir),
        str(tmp_path / "data"),
        BANDITROUTE_WEB_ENABLED="true",
        BANDITROUTE_WEB_PORT=str(port),
    )
    worker = WorkerProcess(env, str(tmp_path / "worker.log")).start()
    topic = {
        t: f"{unique_prefix}.{t}" for t in ("requests", "decisions", "feedback", "outcomes", "deadletter")
    }
    rng = np.random.default_rng(5)
    feedback_sent: set[str] = set()
    try:
        await wait_topics(kafka_bootstrap, [topic["requests"], topic["decisions"], topic["feedback"]])
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=1, acks="all")
        consumer = AIOKafkaConsumer(
            topic["decisions"],
            bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=5,
        )
        await producer.start()
        await consumer.start()
        try:
            sent = 0

            async def load() -> None:
                nonlocal sent
                start = time.perf_counter()
                while (elapsed := time.perf_counter() - start) < SECONDS:
                    for _ in range(int(elapsed * RATE_PER_S) - sent):
                        r = request()
                        await producer.send(
                            topic["requests"], key=r["request_id"].encode(), value=orjson.dumps(r)
                        )
                        sent += 1
                    await asyncio.sleep(0.002)

            async def answer(until: float) -> None:
                """Feedback for every decision the moment it is read; every tenth also gets a local-mode twin
                (decision published by the 'client', its feedback right after)."""
                answered = 0
                while time.monotonic() < until and (answered < sent or not loaded.is_set()):
                    batch = await consumer.getmany(timeout_ms=100)
                    for records in batch.values():
                        for rec in records:
                            if not rec.value or rec.key is None:
                                continue
                            decision = orjson.loads(rec.value)
                            if decision["request_id"] in feedback_sent or decision["model"] is None:
                                continue
                            pairs = [decision]
                            if decision["request_id"].startswith("local-"):
                                continue  # our own local-mode decision, answered when it was sent
                            answered += 1
                            if answered % 10 == 0:
                                local = _local_decision(decision)
                                key = local["request_id"].encode()
                                await producer.send(topic["decisions"], key=key, value=orjson.dumps(local))
                                pairs.append(local)
                            for d in pairs:
                                fb = feedback_for(d, rng)
                                key = d["request_id"].encode()
                                await producer.send(topic["feedback"], key=key, value=orjson.dumps(fb))
                                feedback_sent.add(d["request_id"])

            loaded = asyncio.Event()
            answering = asyncio.ensure_future(answer(time.monotonic() + SECONDS + 60))
            await load()
            loaded.set()
            await answering
            await producer.flush()
        finally:
            await producer.stop()
            await consumer.stop()
        locals_sent = sum(r.startswith("local-") for r in feedback_sent)
        assert locals_sent > 0 and len(feedback_sent) - locals_sent == sent

        outcomes: dict[str, Any] = {}

        async def joined() -> bool:
            for rec in await read_all(kafka_bootstrap, topic["outcomes"]):
                o = orjson.loads(rec.value)
                outcomes[o["request_id"]] = o
            return len(outcomes) >= len(feedback_sent)

        deadline = time.monotonic() + 90
        while not await joined() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the broker
            print(
                f"  {90 - deadline + time.monotonic():.1f} s: {len(outcomes)} of {len(feedback_sent)} joined"
            )
            await asyncio.sleep(1.0)
        waited = 90 - deadline + time.monotonic()
        print(f"\njoined {len(outcomes)} of {len(feedback_sent)} {waited:.1f} s after the load")
        letters = [orjson.loads(r.value) for r in await read_all(kafka_bootstrap, topic["deadletter"])]
        assert [(d["reason"], d["error"]) for d in letters] == []
        missing = feedback_sent - set(outcomes)
        if missing:  # say what the worker held, not only which ids (a CI run once missed ~all local ones)
            stats = orjson.loads(await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/api/stats"))
            local_missing = sum(r.startswith("local-") for r in missing)
            log_lines = (tmp_path / "worker.log").read_text(errors="replace").splitlines()
            errors = [line[:400] for line in log_lines if '"level":"error"' in line or "Traceback" in line]
            pytest.fail(
                f"{len(missing)} feedback events not joined ({local_missing} of {locals_sent} local-mode ones) "
                f"after {waited:.0f} s; e.g. {sorted(missing)[:3]}; the worker's "
                f"/api/stats: {orjson.dumps(stats).decode()[:6000]}; its last errors: {errors[-15:]}",
                pytrace=False,
            )
        assert {o["kind"] for o in outcomes.values()} == {"feedback"}
        assert await wait_for(worker.alive, 1)
        stats = orjson.loads(await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/api/stats"))
        counters = stats["counters"]
        # every decision of the worker's was handed over and skipped, not read back from the topic; on a loaded
        # machine a batch whose handoff comes more than the reader's hold (1 s) after it is in the log is read
        # back (by its header, and not joined again): allowed for at most 1 % of them
        read, skipped = counters.get("own_decisions_read", 0), counters.get("own_decisions_skipped", 0)
        print(f"\nown decisions: {skipped} skipped, {read} read back, of {sent}; readers: {stats['readers']}")
        assert read + skipped >= sent, counters
        assert read <= sent // 100, counters
    finally:
        code = worker.terminate()
        assert code == 0, f"worker exited with {code}; see {tmp_path / 'worker.log'}"
