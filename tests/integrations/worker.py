"""One banditroute worker subprocess on the session broker for the integration tests, and a client on it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from banditroute.client import RouterClient, RouteTimeout
from banditroute.kafka.topics import read_topic
from banditroute.settings import Settings
from tests.kafka.helpers import WorkerProcess, worker_env
from tests.kafka.router_world import write_config

# strong/weak/flaky: equal price, so the bandit must tell them apart by the quality the integrations report
# (flaky, which always fails, looks excellent a priori so that calls are routed to it first and fall back);
# gpt-large/mid-tier/small-fast: as in config/models.yaml, for examples/litellm_router.py.
MODELS_YAML = """models:
  - {name: strong, cost_per_call_usd: 0.001, latency_ms: 300}
  - {name: weak, cost_per_call_usd: 0.001, latency_ms: 300}
  - {name: flaky, cost_per_call_usd: 0.001, latency_ms: 300, quality_prior: [30, 1]}
  - {name: gpt-large, cost_per_call_usd: 0.012, price_in_per_1k_usd: 0.01, price_out_per_1k_usd: 0.03}
  - {name: mid-tier, cost_per_call_usd: 0.002, price_in_per_1k_usd: 0.0015, price_out_per_1k_usd: 0.002}
  - {name: small-fast, cost_per_call_usd: 0.0004, price_in_per_1k_usd: 0.0002, price_out_per_1k_usd: 0.0006}
"""
POLICY_YAML = """defaults:
  lam: 10.0
  half_life: null
  join: {wait_s: 120}
"""


@dataclass
class Worker:
    bootstrap: str
    prefix: str
    process: WorkerProcess
    log: Path

    def client(self, **kwargs: object) -> RouterClient:
        return RouterClient(bootstrap=self.bootstrap, topic_prefix=self.prefix, timeout_s=10.0, **kwargs)  # type: ignore[arg-type]


def start_worker(bootstrap: str, folder: Path) -> Iterator[Worker]:
    prefix = f"i{time.time_ns() % 10**12}"
    config = write_config(folder / "config", models=MODELS_YAML, policy=POLICY_YAML)
    env = worker_env(bootstrap, prefix, str(config), str(folder / "data"))
    log = folder / "worker.log"
    process = WorkerProcess(env, str(log)).start()
    try:
        yield Worker(bootstrap, prefix, process, log)
    finally:
        code = process.terminate()
        assert code == 0, f"worker exited with {code}; see {log}"


async def wait_ready(client: RouterClient, timeout_s: float = 90.0) -> None:
    """Ask until the worker answers (its first decision needs its topics and partitions assigned)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            await client.route("warmup", candidates=["strong"], timeout_s=5.0)
            return
        except RouteTimeout:
            continue
    raise AssertionError("the worker did not answer in time")


async def topic_records(worker: Worker, suffix: str) -> list[dict[str, Any]]:
    settings = Settings.model_validate({"kafka_bootstrap": worker.bootstrap, "topic_prefix": worker.prefix})
    out = []
    async for record in read_topic(settings, settings.topic(suffix), start="earliest"):
        if record.value:
            out.append(orjson.loads(record.value))
    return out
