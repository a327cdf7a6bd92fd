"""``/metrics`` and the JSON API of a real worker subprocess fed by the closed loop on the real broker."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from tests.browser.live import drive, get, get_json, metric_samples, start_web_worker, wait_http
from tests.kafka.router_world import Loop

pytestmark = pytest.mark.kafka


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine other than 127.0.0.0/8 (None when there is none)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
        address = str(probe.getsockname()[0])
    except OSError:
        address = ""
    finally:
        probe.close()
    if address and not address.startswith("127."):
        return address
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            candidate = str(info[4][0])
            if not candidate.startswith("127."):
                return candidate
    except OSError:
        pass
    return None


def refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return False
    except OSError:
        return True


@pytest.mark.timeout(240)  # the sum of its waits: start-up, traffic, learning, /metrics
async def test_metrics_and_api_of_a_live_worker(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    worker, port = start_web_worker(tmp_path, kafka_bootstrap, unique_prefix)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(f"{base}/healthz", worker)
        async with Loop(kafka_bootstrap, unique_prefix) as loop:
            sent = await drive(loop, 400, np.random.default_rng(3))

        # Feedback is joined and learnt asynchronously: wait until the worker has learnt most of it (a hang is
        # the test's timeout's to catch; how long it takes is the benchmarks' to say)
        deadline = time.monotonic() + 60
        stats = await get_json(f"{base}/api/stats")
        while stats["learned"] < sent * 0.9 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            stats = await get_json(f"{base}/api/stats")
        assert stats["decided"] >= sent and stats["learned"] >= sent * 0.9, stats

        # the decide loop hands its steps' decisions to the metrics with the commit that covers them (not at
        # each step): the last ones may reach /metrics a commit after /api/stats counts them
        deadline = time.monotonic() + 30
        while True:
            status, ctype, body = await asyncio.to_thread(get, f"{base}/metrics")
            assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
            text = body.decode()
            decisions = metric_samples(text, "banditroute_decisions_total")
            per_model: dict[str, float] = {}
            for labels, value in decisions.items():
                model = labels.split('model="')[1].split('"')[0]
                per_model[model] = per_model.get(model, 0.0) + value
            if sum(per_model.values()) >= sent or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert sum(per_model.values()) == sent, per_model
        assert all(per_model.get(m, 0) > 0 for m in ("premium", "balanced", "budget", "nova")), per_model
        assert metric_samples(text, "banditroute_feedback_joined_total")[""] >= sent * 0.9
        assert sum(metric_samples(text, "banditroute_decision_latency_seconds_count").values()) == sent
        assert metric_samples(text, "banditroute_posterior_quality_mean")
        assert any('state="closed"' in k for k in metric_samples(text, "banditroute_circuit_state"))
        assert any("nova" in k for k in metric_samples(text, "banditroute_canary_state"))
        assert "banditroute_dead_letters_total" in text and "banditroute_traffic_share" in text

        state = await get_json(f"{base}/api/state")
        tasks = {t["key"]: t for t in state["tasks"]}
        assert {"chat", "code", "summarize"} <= set(tasks)
        code = {m["model"]: m for m in tasks["code"]["models"]}
        assert sum(m["observations"] for m in code.values()) > 0
        assert all(m["quality_low"] <= m["quality_mean"] <= m["quality_high"] for m in code.values())
        assert tasks["summarize"]["budget"]["budget_mean_cost_usd"] == 0.003
        recent = (await get_json(f"{base}/api/decisions?limit=5"))["decisions"]
        assert len(recent) == 5 and all("reasons" in d for d in recent)

        # Bound to 127.0.0.1 by default: the machine's other address does not answer.
        other = non_loopback_address()
        if other is not None:
            assert refused(other, port), f"the web server answers on {other}:{port}"
        assert not refused("127.0.0.1", port)
    finally:
        code = worker.terminate()
    assert code == 0, f"worker exited with {code}; see {tmp_path / 'worker.log'}"
