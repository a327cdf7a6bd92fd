"""A closed loop on the real broker: produce requests, read decisions, answer with simulated feedback."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from banditroute.agents.learn import LearnLogic
from banditroute.client import partitions_of
from banditroute.config import Registry, RouterConfig
from banditroute.core import decode_state
from banditroute.core.state import PRIOR_B
from banditroute.settings import Settings

MODELS_YAML = """models:
  - {name: premium, cost_per_call_usd: 0.02, latency_ms: 900}
  - {name: balanced, cost_per_call_usd: 0.002, latency_ms: 500}
  - {name: budget, cost_per_call_usd: 0.0005, latency_ms: 300}
"""
POLICY_YAML = """defaults:
  lam: 10.0
  half_life: null
  join: {wait_s: 120}
"""
# True means and costs: utility = q - 10 c -> premium 0.60, balanced 0.78 (best), budget 0.445.
TRUTH = {"premium": (0.80, 0.02), "balanced": (0.80, 0.002), "budget": (0.45, 0.0005)}
BEST = "balanced"


def write_config(folder: Path, models: str = MODELS_YAML, policy: str = POLICY_YAML) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.yaml").write_text(models)
    (folder / "policy.yaml").write_text(policy)
    (folder / "rules.yaml").write_text("rules: []\n")
    return folder


def request(task_type: str = "chat", request_id: str | None = None) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "request_id": request_id or uuid.uuid4().hex,
        "task_type": task_type,
        "created_at": datetime.now(UTC).isoformat(),
    }


def feedback_for(decision: dict[str, Any], rng: np.random.Generator, **override: Any) -> dict[str, Any]:
    model = decision["model"]
    quality_p, cost = TRUTH[model]
    return {
        "schema_version": 1,
        "request_id": decision["request_id"],
        "decision_id": decision["decision_id"],
        "model": model,
        "quality": float(rng.random() < quality_p),
        "cost_usd": cost,
        "latency_ms": 100.0,
        "observed_at": datetime.now(UTC).isoformat(),
        "idempotency_key": f"{decision['request_id']}:{model}",
        **override,
    }


@dataclass
class Loop:
    bootstrap: str
    prefix: str
    producer: AIOKafkaProducer | None = None
    consumer: AIOKafkaConsumer | None = None
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    skip_key_prefix: bytes | None = None
    """Decisions whose key starts with this are skipped unparsed (another client's, which a real client
    would not read: it gets its own through its reply topic)."""

    async def __aenter__(self) -> Loop:
        await wait_topics(
            self.bootstrap, [f"{self.prefix}.{t}" for t in ("requests", "decisions", "feedback")]
        )
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=2, acks="all")
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            f"{self.prefix}.decisions",
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
        )
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.producer is not None and self.consumer is not None
        await self.producer.stop()
        await self.consumer.stop()

    async def send(self, suffix: str, value: dict[str, Any], key: str) -> None:
        assert self.producer is not None
        await self.producer.send(f"{self.prefix}.{suffix}", key=key.encode(), value=orjson.dumps(value))

    async def flush(self) -> None:
        assert self.producer is not None
        await self.producer.flush()

    async def await_decisions(self, request_ids: list[str], timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Read decisions until every request in ``request_ids`` has one (first decision per request wins)."""
        assert self.consumer is not None
        deadline = time.monotonic() + timeout_s
        missing = [r for r in request_ids if r not in self.decisions]
        while missing and time.monotonic() < deadline:
            batch = await self.consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    if not rec.value:  # the worker's tick records carry no value
                        continue
                    if self.skip_key_prefix and rec.key and rec.key.startswith(self.skip_key_prefix):
                        continue
                    d = orjson.loads(rec.value)
                    if d["request_id"] not in self.decisions:
                        self.decisions[d["request_id"]] = d
                        self.order.append(d["request_id"])
            missing = [r for r in request_ids if r not in self.decisions]
        if missing:
            raise AssertionError(
                f"{len(missing)} of {len(request_ids)} requests got no decision in {timeout_s} s"
            )
        return [self.decisions[r] for r in request_ids]

    async def run(
        self,
        n: int,
        rng: np.random.Generator,
        *,
        batch: int = 50,
        between: Callable[[int], Any] | None = None,
        timeout_s: float = 60.0,
        phases: list[tuple[float, float, float]] | None = None,
        task_type: str = "chat",
    ) -> list[dict[str, Any]]:
        """``n`` requests of ``task_type`` in rounds of ``batch``: send, await decisions, send feedback for each
        (:meth:`answer`). ``phases`` gets each round's seconds spent sending its requests (until acknowledged),
        waiting for their decisions and sending their feedback."""
        out: list[dict[str, Any]] = []
        for start in range(0, n, batch):
            if between is not None:
                maybe = between(start)
                if asyncio.iscoroutine(maybe):
                    await maybe
            reqs = [request(task_type) for _ in range(min(batch, n - start))]
            out.extend(await self.answer(reqs, rng, timeout_s=timeout_s, phases=phases))
        return out

    async def answer(
        self,
        requests: list[dict[str, Any]],
        rng: np.random.Generator,
        *,
        timeout_s: float = 60.0,
        phases: list[tuple[float, float, float]] | None = None,
    ) -> list[dict[str, Any]]:
        """Send ``requests``, await their decisions and send simulated feedback for each; returns the
        decisions (``phases``: see :meth:`run`)."""
        t0 = time.monotonic()
        for r in requests:
            await self.send("requests", r, r["request_id"])
        await self.flush()
        t1 = time.monotonic()
        decided = await self.await_decisions([r["request_id"] for r in requests], timeout_s=timeout_s)
        t2 = time.monotonic()
        for d in decided:
            await self.send("feedback", feedback_for(d, rng), d["request_id"])
        await self.flush()
        if phases is not None:
            phases.append((t1 - t0, t2 - t1, time.monotonic() - t2))
        return decided


async def read_compacted(bootstrap: str, topic: str, timeout_s: float = 30.0) -> dict[bytes, bytes]:
    """Latest value per key of a topic, read to its current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(await partitions_of(consumer, topic))]
        if not tps:
            return {}
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        latest: dict[bytes, bytes] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await caught_up(consumer, ends):
                break
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    if rec.key is None:
                        continue
                    if rec.value is None:  # a tombstone removes the key
                        latest.pop(rec.key, None)
                    else:
                        latest[rec.key] = rec.value
        return latest
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every record of a topic up to its current end, in partition order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in sorted(await partitions_of(consumer, topic))]
        if not tps:
            return out
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await caught_up(consumer, ends):
                break
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


async def learned_states(bootstrap: str, prefix: str) -> dict[str, Any]:
    raw = await read_compacted(bootstrap, f"{prefix}.state")
    return {orjson.loads(k): decode_state(v) for k, v in raw.items()}


def observations(state: Any) -> float:
    return float(state.observations.sum())


async def wait_topics(bootstrap: str, names: list[str], timeout_s: float = 60.0) -> None:
    """Wait until the worker has created ``names`` (clients must not auto-create them with other layouts)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if set(names) <= set(await admin.list_topics()):
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"topics {names} were not created within {timeout_s} s")
    finally:
        await admin.close()


async def caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def wait_learned(bootstrap: str, prefix: str, expected: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """Poll the state topic until ``expected`` outcomes are learned, then give a duplicate time to show up."""
    deadline = time.monotonic() + timeout_s
    states: dict[str, Any] = {}
    while time.monotonic() < deadline:
        states = await learned_states(bootstrap, prefix)
        if sum(observations(s) for s in states.values()) >= expected:
            await asyncio.sleep(2.0)
            return await learned_states(bootstrap, prefix)
        await asyncio.sleep(0.5)
    return states


async def reference_states(bootstrap: str, prefix: str, config_dir: Path) -> dict[str, Any]:
    """Every state recomputed from the outcomes topic alone, with the learner's exactly-once rule."""
    registry = Registry(RouterConfig.load(config_dir), config_dir)
    table: dict[str, bytes] = {}
    logic = LearnLogic(table, registry)
    for rec in await read_all(bootstrap, f"{prefix}.outcomes"):  # each task key lives in one partition
        logic.apply([orjson.loads(rec.value)], now_s=0.0)
    return {k: logic.state(k) for k in table}


def assert_states_equal(states: dict[str, Any], reference: dict[str, Any]) -> None:
    """Equal evidence and watermarks. The quality prior columns are left out: the worker pools them from the
    other task types' states at the time it learns (agents/prior_pool.py), which the outcomes alone do not say;
    so is a shared budget's offset, for the same reason (agents/budget_split.py)."""
    assert set(states) == set(reference), (sorted(states), sorted(reference))
    evidence = slice(PRIOR_B + 1, None)
    for key, state in states.items():
        ref = reference[key]
        assert state.names == ref.names, key
        np.testing.assert_allclose(
            (state.stats * state.scale)[:, evidence],
            (ref.stats * ref.scale)[:, evidence],
            rtol=1e-9,
            atol=1e-12,
        )
        assert dict(state.applied) == dict(ref.applied), key


CHAT_PARTITION = 1
"""The state and outcomes partition of ``chat`` (with 2, 4 or 8 state partitions)."""


def learner_settings(bootstrap: str, prefix: str, config_dir: Path, data_dir: Path) -> Settings:
    """A worker's settings for parts of it run in process (``Router._learn_records``, the join's batches): 2 state
    partitions."""
    return Settings().model_copy(
        update={
            "kafka_bootstrap": bootstrap,
            "topic_prefix": prefix,
            "app_id": prefix,
            "config_dir": config_dir,
            "data_dir": data_dir,
            "state_partitions": 2,
        }
    )


def learner_outcomes(offsets: range, task_key: str = "chat", partition: int = CHAT_PARTITION) -> list[Any]:
    """Outcomes of ``task_key`` at these offsets of its outcomes ``partition`` as the outcomes reader hands them
    to the learner (a learner given them must hold that partition: ``learn_reader.assign``)."""
    return [
        SimpleNamespace(
            topic="outcomes",
            partition=partition,
            offset=off,
            value=orjson.dumps(
                {
                    "task_key": task_key,
                    "model": "balanced",
                    "quality": 0.8,
                    "cost_usd": 0.002,
                    "src": 0,
                    "off": off,
                }
            ),
        )
        for off in offsets
    ]
