"""Shared pieces of the broker benchmarks: a bench worker in a subprocess, its config, topics, requests, timing.

Every run gets its own topic prefix (``bench-<kind>-<random>``), consumer group and data folder, so benches never
share state with each other or with a production worker on the same broker. The worker is the real
``banditroute worker`` command in a subprocess (web disabled, logs to a file): what is measured is the same
process a deployment runs, and the bench driver's own CPU use does not slow the worker's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from banditroute.bench.policy import machine_info
from banditroute.kafka.admin import delete_topics_with_prefix, ensure_topics, new_topic
from banditroute.kafka.errors import KafkaError
from banditroute.kafka.topic_reader import TopicReader

log = logging.getLogger("banditroute.bench")

__all__ = [
    "BenchWorker",
    "TopicTail",
    "create_topics",
    "delete_topics",
    "machine",
    "percentile",
    "percentiles",
    "request_bytes",
    "write_config",
]

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
PARTITIONS = 4


def machine(bootstrap: str | None = None) -> dict[str, Any]:
    """The policy bench's machine description, plus the broker and the load average when given."""
    info = machine_info()
    if bootstrap is not None:
        info["broker"] = bootstrap
    try:
        info["loadavg_1m"] = os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on every platform
        pass
    return info


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in [0, 100]); NaN when empty."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


def percentiles(values: Iterable[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else float("nan"),
    }


def new_prefix(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex[:8]}"


def write_config(folder: Path, models: str = MODELS_YAML, policy: str = POLICY_YAML) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.yaml").write_text(models)
    (folder / "policy.yaml").write_text(policy)
    (folder / "rules.yaml").write_text("rules: []\n")
    return folder


def request_bytes(request_id: str, task_type: str = "bench", created_at: str | None = None) -> bytes:
    """A minimal valid RoutingRequest, encoded."""
    return orjson.dumps(
        {
            "schema_version": 1,
            "request_id": request_id,
            "task_type": task_type,
            "created_at": created_at or datetime.now(UTC).isoformat(),
        }
    )


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = PARTITIONS) -> None:
    """Create topics up front (idempotent), so consumers never wait on auto-creation."""
    await ensure_topics(bootstrap, None, [new_topic(n, partitions) for n in names])


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Remove every topic of a bench run (best effort: a failure is logged, never raised)."""
    try:
        await delete_topics_with_prefix(bootstrap, None, prefix)
    except (KafkaError, OSError) as exc:
        log.warning("could not delete the bench topics of %s: %s", prefix, exc)


@dataclass
class BenchWorker:
    """``banditroute worker`` (or any module) in a subprocess with its own topics, group and data folder."""

    bootstrap: str
    prefix: str
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="banditroute-bench-")))
    module_args: tuple[str, ...] = ("banditroute", "worker")
    policy: str = POLICY_YAML
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.folder / "worker.log"

    def env(self) -> dict[str, str]:
        config = write_config(self.folder / "config", policy=self.policy)
        return {
            **os.environ,
            "BANDITROUTE_KAFKA_BOOTSTRAP": self.bootstrap,
            "BANDITROUTE_TOPIC_PREFIX": self.prefix,
            "BANDITROUTE_APP_ID": self.prefix,
            "BANDITROUTE_CONFIG_DIR": str(config),
            "BANDITROUTE_DATA_DIR": str(self.folder / "data"),
            "BANDITROUTE_WEB_ENABLED": "false",
            "BANDITROUTE_PARTITIONS": str(PARTITIONS),
            "BANDITROUTE_STATE_PARTITIONS": "2",
            "BANDITROUTE_LOG_LEVEL": "info",  # at warning, faust's spinner sets the root logger to DEBUG
            **self.extra_env,
        }

    def start(self) -> BenchWorker:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child for its lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.module_args],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``); 0.0 where unavailable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy_seconds() -> float | None:
    """CPU time all cores spent on work so far (user, nice, system, irq and softirq of ``/proc/stat``: every
    process, the kernel's network stack included; not idle, I/O wait or time stolen by the hypervisor); None
    where unavailable."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
        if fields[0] != "cpu":
            return None
        user, nice, system, _idle, _iowait, irq, softirq = map(int, fields[1:8])
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


async def wait_idle(
    pid: int,
    *,
    below: float = 0.15,
    window_s: float = 0.5,
    timeout_s: float = 60.0,
    strict: bool = False,
) -> tuple[float, float | None]:
    """Wait until ``pid`` uses less than ``below`` of a core over ``window_s``; return the time waited and the
    process's CPU seconds when the window that showed it idle began (None when it was not idle within
    ``timeout_s``, or has exited).

    After a drain the worker still joins the decisions it published (the join agent lags the decide loop), so
    latency is measured only once that backlog is done. Past ``timeout_s`` it returns, or raises
    :class:`RuntimeError` when ``strict``.
    """
    start = time.perf_counter()
    last = cpu_seconds(pid)
    while time.perf_counter() - start < timeout_s:
        await asyncio.sleep(window_s)
        now = cpu_seconds(pid)
        if now < last:  # exited: its CPU reads 0.0, which would look idle
            if strict:
                raise RuntimeError(f"process {pid} exited while waiting for it to be idle")
            return time.perf_counter() - start, None
        if now - last < below * window_s:
            return time.perf_counter() - start, last
        last = now
    if strict:
        raise RuntimeError(f"process {pid} was not idle within {timeout_s:.0f} s")
    return time.perf_counter() - start, None


async def sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


class TopicTail:
    """Reads every partition of a bench topic from its beginning in a background task; a subclass handles each
    fetched batch in :meth:`on_batch` (``now`` is the fetch's ``perf_counter`` time)."""

    max_records: int | None = None

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.reader = TopicReader(
            bootstrap,
            topic,
            start_at="beginning",
            fetch_max_wait_ms=5,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            raw=True,  # a record batch's own records: no ConsumerRecord per record (the driver's CPU)
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.reader.start(wait_s=10.0)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.reader.fetch(timeout_ms=50, max_records=self.max_records)
            self.on_batch(batch, time.perf_counter())

    def on_batch(self, batch: dict[Any, list[Any]], now: float) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.reader.stop()
