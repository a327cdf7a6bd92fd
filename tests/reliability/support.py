"""Shared pieces of the reliability tests: workers in subprocesses, bulk producing, reading back, references."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from banditroute.agents.learn import LearnLogic
from banditroute.config import Registry, RouterConfig
from tests.kafka.helpers import WorkerProcess, worker_env
from tests.kafka.router_world import learned_states, observations, read_all


@dataclass(frozen=True, slots=True)
class Sent:
    """Where one produced record landed."""

    topic: str
    partition: int
    offset: int


def start_worker(
    tmp_path: Path, bootstrap: str, prefix: str, name: str, config_dir: Path, **extra: str
) -> WorkerProcess:
    env = worker_env(bootstrap, prefix, str(config_dir), str(tmp_path / f"data-{name}"), **extra)
    return WorkerProcess(env, str(tmp_path / f"{name}.log")).start()


async def produce_bulk(
    producer: AIOKafkaProducer, items: Iterable[tuple[str, bytes | None, bytes]]
) -> list[Sent]:
    """Send ``(topic, key, value)`` items without waiting on each; return where each landed, in order."""
    futures = [await producer.send(topic, key=key, value=value) for topic, key, value in items]
    metas = await asyncio.gather(*futures)
    return [Sent(m.topic, m.partition, m.offset) for m in metas]


async def dead_letters(bootstrap: str, prefix: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await read_all(bootstrap, f"{prefix}.deadletter")]


async def decisions_of(bootstrap: str, prefix: str) -> list[dict[str, Any]]:
    """Every decision record (tick records, which carry no value, left out)."""
    return [orjson.loads(r.value) for r in await read_all(bootstrap, f"{prefix}.decisions") if r.value]


async def wait_until(check: Any, timeout_s: float, interval_s: float = 0.5) -> Any:
    """Await ``check()`` until it returns a truthy value or the deadline passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    value = await check()
    while not value and time.monotonic() < deadline:
        await asyncio.sleep(interval_s)
        value = await check()
    return value


async def wait_learned(bootstrap: str, prefix: str, expected: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """Poll the state topic until ``expected`` outcomes are learned, then give a duplicate time to show up."""
    deadline = time.monotonic() + timeout_s
    states: dict[str, Any] = {}
    while time.monotonic() < deadline:
        states = await learned_states(bootstrap, prefix)
        if sum(observations(s) for s in states.values()) >= expected:
            await asyncio.sleep(1.5)
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
    assert set(states) == set(reference), (sorted(states), sorted(reference))
    for key, state in states.items():
        ref = reference[key]
        assert state.names == ref.names, key
        np.testing.assert_allclose(state.stats * state.scale, ref.stats * ref.scale, rtol=1e-9, atol=1e-12)
        assert dict(state.applied) == dict(ref.applied), key
