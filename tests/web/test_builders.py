"""Metric and JSON builders of the web package against a synthetic router (no broker, no web server)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from banditroute.agents.decide import StateView
from banditroute.codec import DeadLetterCounter
from banditroute.config import Registry, RouterConfig
from banditroute.core.state import CIRCUIT, N_OBS, OPEN_UNTIL, Q_N, Q_SUM, replace_state
from banditroute.web.history import History
from banditroute.web.metrics import RouterMetrics
from banditroute.web.snapshot import decisions_json, network_json, state_json, stats_json

MODELS = """models:
  - {name: premium, cost_per_call_usd: 0.02}
  - {name: balanced, cost_per_call_usd: 0.002}
  - {name: nova, cost_per_call_usd: 0.004, lifecycle: canary}
"""
POLICY = """defaults:
  lam: 10.0
  canary_observations: 100
task_types:
  summarize: {objective: budget, budget_mean_cost_usd: 0.003}
"""


class FakeJoin:
    def in_flight(self) -> int:
        return 7


def fake_router(tmp_path: Path) -> Any:
    (tmp_path / "models.yaml").write_text(MODELS)
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "rules.yaml").write_text("rules: []\n")
    registry = Registry(RouterConfig.load(tmp_path), tmp_path)
    view = StateView()
    state = registry.initial_state("chat")
    stats = state.stats.copy()
    stats[0, Q_SUM], stats[0, Q_N], stats[0, N_OBS] = 40.0, 50.0, 50.0  # premium: 0.8 over 50
    stats[1, Q_SUM], stats[1, Q_N], stats[1, N_OBS] = 150.0, 200.0, 200.0  # balanced: 0.75 over 200
    stats[2, CIRCUIT], stats[2, OPEN_UNTIL] = 1.0, 4e9  # nova: circuit open
    view.offer("chat", replace_state(state, stats=stats, version=3, spend_total_usd=1.0, spend_calls=250))
    dead = DeadLetterCounter()
    dead.record("malformed_json", 2)
    router = SimpleNamespace(
        registry=registry,
        view=view,
        worker_id="w-test",
        counters=Counter({"joined": 240, "late_feedback": 3, "reward_timeouts": 5, "learned": 243}),
        decisions_by_model=Counter(
            {("chat", "premium"): 30, ("chat", "balanced"): 70, ("code", "premium"): 4}
        ),
        recent_decisions=[],
        dead_letters=dead,
        decider=SimpleNamespace(decided=104, on_decision=lambda d: None),
        join=FakeJoin(),
    )
    for i in range(5):
        router.recent_decisions.append(
            {
                "request_id": f"r{i}",
                "task_type": "chat" if i % 2 else "code",
                "model": "balanced",
                "propensity": 0.7,
                "decision_ms": 0.2,
                "reasons": {"exploration": False, "filtered": {}, "circuit_open": ["nova"]},
                "candidates": [
                    {"model": "premium", "sampled_utility": 0.5},
                    {"model": "balanced", "sampled_utility": 0.7},
                ],
            }
        )
    return router


def samples(text: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def value(found: dict[str, list[Any]], name: str, **labels: str) -> float:
    matches = [s.value for s in found[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (name, labels, matches)
    return float(matches[0])


def test_metrics_read_live_counters_at_scrape_time(tmp_path: Path) -> None:
    router = fake_router(tmp_path)
    history = History(points=10)
    metrics = RouterMetrics(router, history)
    metrics.observe_decision({"task_type": "chat", "decision_ms": 0.3})
    found = samples(metrics.render().decode())
    assert value(found, "banditroute_decisions_total", task_type="chat", model="balanced") == 70
    assert value(found, "banditroute_feedback_joined_total") == 240
    assert value(found, "banditroute_late_feedback_total") == 3
    assert value(found, "banditroute_reward_timeouts_total") == 5
    assert value(found, "banditroute_dead_letters_total", reason="malformed_json") == 2
    assert value(found, "banditroute_join_in_flight") == 7
    assert value(found, "banditroute_decision_latency_seconds_count", task_type="chat") == 1
    mean = value(found, "banditroute_posterior_quality_mean", task_key="chat", model="balanced")
    assert mean == pytest.approx(151 / 202)
    low = value(found, "banditroute_posterior_quality_low", task_key="chat", model="balanced")
    high = value(found, "banditroute_posterior_quality_high", task_key="chat", model="balanced")
    assert low < mean < high and high - low < 0.15
    assert value(found, "banditroute_circuit_state", task_key="chat", model="nova", state="open") == 1
    assert value(found, "banditroute_circuit_state", task_key="chat", model="nova", state="closed") == 0
    assert value(found, "banditroute_canary_state", task_key="chat", model="nova", state="ramping") == 1
    assert value(found, "banditroute_mean_cost_per_call_usd", task_key="chat") == pytest.approx(0.004)
    # live: a counter change shows up at the next scrape without any registration
    router.decisions_by_model[("chat", "balanced")] += 5
    assert (
        value(
            samples(metrics.render().decode()),
            "banditroute_decisions_total",
            model="balanced",
            task_type="chat",
        )
        == 75
    )


def test_metrics_use_a_per_router_registry(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    a, b = RouterMetrics(fake_router(tmp_path)), RouterMetrics(fake_router(tmp_path))
    assert a.registry is not b.registry and a.registry is not REGISTRY
    assert "banditroute_decisions_total" not in REGISTRY._names_to_collectors


def test_history_is_bounded_and_prices_the_mix(tmp_path: Path) -> None:
    router = fake_router(tmp_path)
    history = History(points=4)
    for step in range(10):
        router.decisions_by_model[("chat", "balanced")] += 9
        router.decisions_by_model[("chat", "premium")] += 1
        router.decider.decided += 10
        history.sample(router, now_s=1000.0 + step)
    series = history.to_json()
    assert len(series["tasks"]["chat"]["points"]) == 4 and len(series["throughput"]) == 4
    last = series["tasks"]["chat"]["points"][-1]
    assert last["counts"] == {"premium": 1, "balanced": 9, "nova": 0}  # nova: routable, not decided yet
    assert last["best_model"] == "premium"  # highest posterior mean quality among routable models
    assert last["cost_per_request"] == pytest.approx(0.1 * 0.02 + 0.9 * 0.002, rel=1e-6)
    summary = series["tasks"]["chat"]["summary"]
    assert summary["savings"] == pytest.approx(1 - (0.1 * 0.02 + 0.9 * 0.002) / 0.02, rel=1e-6)
    assert history.share("chat") == pytest.approx({"premium": 0.1, "balanced": 0.9, "nova": 0.0})
    assert series["throughput"][-1]["decisions"] == 10
    json.dumps(series)


def test_state_stats_decisions_network_json(tmp_path: Path) -> None:
    router = fake_router(tmp_path)
    state = json.loads(json.dumps(state_json(router, now_s=1000.0)))
    tasks = {t["key"]: t for t in state["tasks"]}
    assert set(tasks) == {"chat", "code"}  # code has decisions but no learnt state yet: priors
    chat = {m["model"]: m for m in tasks["chat"]["models"]}
    assert chat["nova"]["circuit"] == "open" and chat["nova"]["canary"] == "ramping"
    assert chat["balanced"]["decisions"] == 70 and chat["balanced"]["observations"] == 200
    assert tasks["chat"]["budget"]["mean_cost_usd"] == pytest.approx(0.004)
    assert np.isclose(chat["premium"]["quality_mean"], 41 / 52)

    stats = stats_json(router)
    assert stats["join"]["joined"] == 240 and stats["dead_letters"]["malformed_json"] == 2
    assert stats["decisions_by_task"]["chat"] == {"premium": 30, "balanced": 70}
    # a decider without the lane
    assert stats["low_lane"] == {"parked": 0, "bytes": 0, "parked_total": 0, "spilled_total": 0}

    recent = decisions_json(router, limit=2, task_type="chat")["decisions"]
    assert [d["request_id"] for d in recent] == ["r3", "r1"]  # newest first, filtered
    assert recent[0]["candidates"][0]["model"] == "balanced"  # best sampled first

    net = network_json(router)
    edges = {(e["source"], e["target"]): e["weight"] for e in net["edges"]}
    assert edges[("requests", "task:chat")] == 100 and edges[("task:chat", "model:balanced")] == 70
    assert {n["id"] for n in net["nodes"]} >= {"requests", "task:code", "model:nova"}


def test_static_assets_ship_in_the_package() -> None:
    from importlib import resources

    static = resources.files("banditroute.web").joinpath("static")
    html = static.joinpath("index.html").read_text()
    assert "/static/dashboard.js" in html and "http" not in html.split("<body>")[0]  # no CDN
    js = static.joinpath("dashboard.js").read_text()
    assert "innerHTML" not in js  # API strings go through textContent only
