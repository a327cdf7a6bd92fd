"""``banditroute bench freshness``: feedback produced -> first decision that uses the updated posterior.

One ``banditroute worker`` subprocess on the broker (own topics, web disabled). Per sample: send a request and
read its decision (``state_version`` v, model m); produce the feedback for it at t0; then send a probe request
every ``PROBE_INTERVAL_S`` and read decisions until one of a probe sent after t0 carries a ``state_version``
above v, arriving at t1. Freshness = t1 - t0: join, outcome, learn, the state view, and one request -> decision
round trip (the way a client sees it), to within the probe interval.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from banditroute.bench.common import (
    BenchWorker,
    TopicTail,
    create_topics,
    delete_topics,
    machine,
    new_prefix,
    percentiles,
    request_bytes,
)
from banditroute.kafka.outbox import Outbox

PROBE_INTERVAL_S = 0.005
SAMPLE_TIMEOUT_S = 10.0
START_TIMEOUT_S = 90.0


class Decisions(TopicTail):
    """Decisions by request id, read in the background, with their arrival time."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic)
        self.seen: dict[str, tuple[float, dict[str, Any]]] = {}
        self.arrived = asyncio.Event()

    def on_batch(self, batch: dict[Any, list[Any]], now: float) -> None:
        for records in batch.values():
            for rec in records:
                if rec.value:
                    d = orjson.loads(rec.value)
                    self.seen.setdefault(d["request_id"], (now, d))
                    self.arrived.set()

    async def wait(self, request_id: str, timeout_s: float) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while request_id not in self.seen:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no decision for {request_id} in {timeout_s} s")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), 0.1)
            except TimeoutError:
                pass
        return self.seen[request_id]


def feedback_bytes(decision: dict[str, Any], quality: float) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "request_id": decision["request_id"],
            "decision_id": decision["decision_id"],
            "model": decision["model"],
            "quality": quality,
            "cost_usd": 0.001,
            "latency_ms": 100.0,
            "observed_at": datetime.now(UTC).isoformat(),
            "idempotency_key": f"{decision['request_id']}:{decision['model']}",
        }
    )


async def run_freshness_bench(bootstrap: str, *, samples: int = 30) -> dict[str, Any]:
    prefix = new_prefix("fresh")
    topics = {name: f"{prefix}.{name}" for name in ("requests", "decisions", "feedback")}
    await create_topics(bootstrap, topics.values())
    worker = BenchWorker(bootstrap, prefix)
    decisions = Decisions(bootstrap, topics["decisions"])
    producer = Outbox(bootstrap, {}, linger_ms=0, acks=1)
    await decisions.start()
    worker.start()
    results: list[float] = []
    probes: list[int] = []
    timeouts = 0

    async def ask(task_type: str = "bench") -> str:
        rid = uuid.uuid4().hex
        await producer.send(topics["requests"], key=rid.encode(), value=request_bytes(rid, task_type))
        return rid

    try:
        await decisions.wait(await ask(), START_TIMEOUT_S)  # the worker is up and deciding
        for i in range(samples):
            _, first = await decisions.wait(await ask(), SAMPLE_TIMEOUT_S)
            version = int(first["state_version"])
            rid = first["request_id"]
            t0 = time.perf_counter()
            await producer.send(
                topics["feedback"], key=rid.encode(), value=feedback_bytes(first, float(i % 2))
            )
            sent: list[str] = []
            found: float | None = None
            while found is None and time.perf_counter() - t0 < SAMPLE_TIMEOUT_S:
                sent.append(await ask())
                await asyncio.sleep(PROBE_INTERVAL_S)
                for probe in sent:
                    got = decisions.seen.get(probe)
                    if got is not None and int(got[1]["state_version"]) > version:
                        found = got[0]
                        break
            if found is None:
                timeouts += 1
                continue
            results.append((found - t0) * 1000.0)
            probes.append(len(sent))
        stats = percentiles(results)
        return {
            "p50_ms": stats["p50"],
            "p99_ms": stats["p99"],
            "max_ms": stats["max"],
            "n": len(results),
            "timeouts": timeouts,
            "probes_per_sample_mean": sum(probes) / len(probes) if probes else 0.0,
            "method": {
                "probe_interval_ms": PROBE_INTERVAL_S * 1000.0,
                "measures": "feedback produce -> arrival of the first decision with a higher state_version",
                "worker": "banditroute worker subprocess, web disabled, defaults (snapshot_interval_ms 50)",
            },
            "machine": machine(bootstrap),
        }
    finally:
        worker.stop()
        await decisions.stop()
        await producer.stop()
        await delete_topics(bootstrap, prefix)
