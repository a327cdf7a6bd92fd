"""Shared pieces of the reliability tests: workers in subprocesses, bulk producing, reading back, references."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from banditroute.kafka.admin import admin_client
from tests.kafka.helpers import WorkerProcess, worker_env
from tests.kafka.router_world import (  # noqa: F401 - re-exported for the reliability tests
    assert_states_equal,
    learned_states,
    observations,
    read_all,
    reference_states,
    wait_learned,
)


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


def start_web_worker(
    tmp_path: Path, bootstrap: str, prefix: str, config_dir: Path
) -> tuple[WorkerProcess, int]:
    """A worker with its web API on a free localhost port; returns it and the port."""
    from banditroute.kafka.local import free_port

    port = free_port()
    worker = start_worker(
        tmp_path,
        bootstrap,
        prefix,
        "w0",
        config_dir,
        BANDITROUTE_WEB_ENABLED="true",
        BANDITROUTE_WEB_PORT=str(port),
    )
    return worker, port


def rss_kb(pid: int) -> int:
    """Resident memory of a process, in KiB (Linux)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


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


REFUSING = "100"
"""``max.message.bytes`` below any record the worker writes: every send to the topic fails at once."""
MESSAGE_BYTES_DEFAULT = "1048588"
"""The broker's default ``max.message.bytes`` (what a topic takes back to accept writes again)."""


LOG_CONFIG_GRACE_S = 0.5
"""Time given the partitions' logs to take a topic config the broker already describes. Under KRaft the
description and the logs' own config (what a produce is checked against) are updated by different metadata
publishers, so the first can lead the second: a send right after the description changed was once still refused
(test_join_flush_failed, lead32's fresh clone), and nothing outside the broker shows when the logs caught up."""


async def set_message_bytes(bootstrap: str, topic: str, value: str) -> None:
    """Set a topic's ``max.message.bytes``, wait until the broker describes it so, then give its partitions' logs
    :data:`LOG_CONFIG_GRACE_S` to apply it."""
    async with admin_client(bootstrap) as admin:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": value})]
        )

        async def applied() -> bool:
            (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            return any(e[0] == "max.message.bytes" and e[1] == value for e in response.resources[0][4])

        assert await wait_until(applied, 30), f"{topic}: max.message.bytes={value} not applied"
    await asyncio.sleep(LOG_CONFIG_GRACE_S)
