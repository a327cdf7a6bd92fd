"""A worker with its web server on a free port, fed by a closed loop over several task types on the real broker.

Shared by ``tests/kafka/test_metrics.py`` and ``tests/browser/test_dashboard.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.kafka.local import free_port
from tests.kafka.helpers import WorkerProcess, worker_env
from tests.kafka.router_world import Loop, request, write_config

MODELS_YAML = """models:
  - {name: premium, cost_per_call_usd: 0.02, latency_ms: 900}
  - {name: balanced, cost_per_call_usd: 0.002, latency_ms: 500}
  - {name: budget, cost_per_call_usd: 0.0005, latency_ms: 300}
  - {name: nova, cost_per_call_usd: 0.004, latency_ms: 400, lifecycle: canary}
"""
POLICY_YAML = """defaults:
  lam: 10.0
  half_life: null
  canary_observations: 200
  join: {wait_s: 120}
task_types:
  summarize:
    objective: budget
    budget_mean_cost_usd: 0.003
  code:
    lam: 5.0
"""
# (probability of a good answer, cost) per task type and model.
TRUTH: dict[str, dict[str, tuple[float, float]]] = {
    "chat": {
        "premium": (0.82, 0.02),
        "balanced": (0.80, 0.002),
        "budget": (0.45, 0.0005),
        "nova": (0.7, 0.004),
    },
    "code": {
        "premium": (0.92, 0.02),
        "balanced": (0.55, 0.002),
        "budget": (0.30, 0.0005),
        "nova": (0.6, 0.004),
    },
    "summarize": {
        "premium": (0.85, 0.02),
        "balanced": (0.75, 0.002),
        "budget": (0.72, 0.0005),
        "nova": (0.8, 0.004),
    },
}
TASK_MIX = ("chat", "chat", "code", "summarize")


def live_config(folder: Path) -> Path:
    return write_config(folder, MODELS_YAML, POLICY_YAML)


def start_web_worker(tmp_path: Path, bootstrap: str, prefix: str, **extra: str) -> tuple[WorkerProcess, int]:
    """A ``banditroute worker`` subprocess with the web server on a free port (bound to the default host)."""
    config = live_config(tmp_path / "config")
    port = free_port()
    env = worker_env(
        bootstrap,
        prefix,
        str(config),
        str(tmp_path / "data"),
        BANDITROUTE_WEB_ENABLED="true",
        BANDITROUTE_WEB_PORT=str(port),
        BANDITROUTE_SEED="5",
        **extra,
    )
    env.pop("BANDITROUTE_WEB_HOST", None)
    return WorkerProcess(env, str(tmp_path / "worker.log")).start(), port


def get(url: str, timeout_s: float = 5.0) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET; blocking (call it through ``asyncio.to_thread``)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


async def get_json(url: str) -> Any:
    status, _ctype, body = await asyncio.to_thread(get, url)
    assert status == 200, f"GET {url}: HTTP {status}: {body[:300]!r}"
    return json.loads(body)


async def wait_http(url: str, worker: WorkerProcess, timeout_s: float = 45.0) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        assert worker.alive(), f"worker exited early; see {worker.log_path}"
        try:
            status, _c, _b = await asyncio.to_thread(get, url, 1.0)
            if status == 200:
                return
        except OSError as exc:
            last = exc
        await asyncio.sleep(0.25)
    raise AssertionError(f"{url} did not answer within {timeout_s} s: {last}")


def feedback(decision: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    model = decision["model"]
    p, cost = TRUTH[decision["task_type"]][model]
    return {
        "schema_version": 1,
        "request_id": decision["request_id"],
        "decision_id": decision["decision_id"],
        "model": model,
        "quality": float(rng.random() < p),
        "cost_usd": cost,
        "latency_ms": float(rng.uniform(150, 900)),
        "observed_at": datetime.now(UTC).isoformat(),
        "idempotency_key": f"{decision['request_id']}:{model}",
    }


async def drive(
    loop: Loop, n: int, rng: np.random.Generator, *, batch: int = 40, pause_s: float = 0.0
) -> int:
    """``n`` requests over the task mix in rounds: send, await decisions, answer each with feedback."""
    sent = 0
    while sent < n:
        reqs = [request(TASK_MIX[int(rng.integers(len(TASK_MIX)))]) for _ in range(min(batch, n - sent))]
        for r in reqs:
            await loop.send("requests", r, r["request_id"])
        await loop.flush()
        decided = await loop.await_decisions([r["request_id"] for r in reqs], timeout_s=30)
        for d in decided:
            if d["model"] is not None:
                await loop.send("feedback", feedback(d, rng), d["request_id"])
        await loop.flush()
        sent += len(reqs)
        if pause_s:
            await asyncio.sleep(pause_s)
    return sent


def metric_samples(text: str, name: str) -> dict[str, float]:
    """``{label string: value}`` of every sample of ``name`` in a Prometheus text exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, value = line.rpartition(" ")
            out[head[len(name) :]] = float(value)
    return out
