"""DecideLogic.decide_encoded (the decide loop's path: a block row's decision written from per-block text)
against DecideLogic.decide (the dict, then orjson): the same event for the same snapshot, state and draws."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from banditroute.agents.decide import DecideLogic, StateView
from banditroute.client import build_request
from banditroute.codec import encode
from banditroute.config import Registry, RouterConfig
from banditroute.core import TaskPolicy
from banditroute.core.learn import update
from banditroute.core.models import Outcome
from banditroute.events import RoutingDecision, RoutingRequest
from banditroute.kafka.fast_request import fast_request
from banditroute.served import served_fields

MODELS = """models:
  - {name: premium, cost_per_call_usd: 0.02, latency_ms: 900, capabilities: [vision]}
  - {name: balanced, cost_per_call_usd: 0.002, latency_ms: 500}
  - {name: budget, cost_per_call_usd: 0.0005, latency_ms: 300}
  - {name: canary, cost_per_call_usd: 0.001, latency_ms: 400, lifecycle: canary}
"""
POLICIES = {
    "beta": "defaults: {lam: 10.0}\n",
    "normal": "defaults: {lam: 10.0, sampler: normal, min_share: {budget: 0.2}}\n",
    "knapsack": "defaults: {lam: 1.0, sampler: clipped}\ntask_types:\n  chat: {objective: budget, budget_mean_cost_usd: 0.003}\n",
    "per_tenant": "defaults: {lam: 10.0}\nper_tenant: [chat]\n",
    "capped": "defaults: {lam: 10.0}\nlimits: {max_task_types: 2}\n",
    "shadow": "defaults: {lam: 10.0}\nshadow: {name: cheap-first, lam: 100.0}\n",
}
RULES = """rules:
  - {name: pin-vip, metadata: {tier: vip}, pin: premium}
  - {name: eu-no-premium, tenants: [eu], deny: [premium]}
"""
NOW_S = 1.7e9


@pytest.fixture
def views() -> Iterator[Callable[[], StateView]]:
    """New state views; their plans' threads stopped when the test ends (left alone, each would idle on for
    30 s into later tests, and free its view then)."""
    made: list[StateView] = []

    def view() -> StateView:
        made.append(StateView())
        return made[-1]

    yield view
    assert all(v.close() for v in made)


def registry(folder: Path, policy: str) -> Registry:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.yaml").write_text(MODELS)
    (folder / "policy.yaml").write_text(policy)
    (folder / "rules.yaml").write_text(RULES)
    return Registry(RouterConfig.load(folder), folder)


def requests(n: int, seed: int) -> list[RoutingRequest]:
    """Plain requests mostly, with tenants, rules, candidates, exclusions, limits and new task types mixed in."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        kind = rnd.random()
        task_type = rnd.choice(["chat", "chat", "chat", "code", f"new{i % 7}"])
        tenant = rnd.choice([None, None, "acme", "eu"])
        if kind < 0.7:
            out.append(build_request(task_type, tenant=tenant, request_id=f"r{i}"))
        elif kind < 0.75:
            out.append(build_request(task_type, tenant=tenant, request_id=f"r{i}", metadata={"tier": "vip"}))
        elif kind < 0.82:
            out.append(build_request(task_type, request_id=f"r{i}", candidates=["budget", "balanced"]))
        elif kind < 0.88:
            out.append(build_request(task_type, request_id=f"r{i}", exclude=["budget"]))
        elif kind < 0.94:
            out.append(build_request(task_type, request_id=f"r{i}", max_cost_usd=0.0001))  # none eligible
        else:
            out.append(build_request(task_type, request_id=f"r{i}", capabilities=["vision"]))
    return out


def open_circuit(logic: DecideLogic, key: str, at_s: float) -> None:
    """Three failures of ``premium`` for ``key``: its circuit opens, and is half-open after the cooldown."""
    snapshot = logic.registry.snapshot
    policy = TaskPolicy(circuit_consecutive_failures=3, circuit_cooldown_s=10.0)
    state = snapshot.state_for(logic.states.get(key))
    for t in range(3):
        state = update(state, snapshot.models, policy, Outcome("premium", error="timeout", at_s=at_s + t))
    logic.states.offer(key, state)


def learn(logic: DecideLogic, key: str, model: str, quality: float, at_s: float) -> None:
    snapshot = logic.registry.snapshot
    state = snapshot.state_for(logic.states.get(key))
    logic.states.offer(key, update(state, snapshot.models, TaskPolicy(), Outcome(model, quality, at_s=at_s)))


def run(logic: DecideLogic, batch: list[RoutingRequest], encoded: bool) -> list[tuple[Any, ...]]:
    """Decide ``batch`` in order, learning and opening a circuit at fixed points (the same for both paths)."""
    out: list[tuple[Any, ...]] = []
    for i, request in enumerate(batch):
        if i == 150:
            learn(logic, "chat", "budget", 1.0, NOW_S)
        if i == 300:
            open_circuit(logic, "code", NOW_S - 30.0)  # half-open by now: probes
        if i == 450:
            open_circuit(logic, "chat", NOW_S - 1.0)  # open now
        if encoded:
            summary, served = logic.decide_encoded(request)
            out.append((summary, served, None))
        else:
            decision = logic.decide(request)
            out.append((decision, logic.take_shadow(), None))
    return out


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_encoded_decisions_equal_the_dict_path(
    tmp_path: Path, policy: str, views: Callable[[], StateView]
) -> None:
    batch = requests(600, seed=len(policy))
    clock = lambda: NOW_S  # noqa: E731 - one fixed time for both paths

    def logic(name: str) -> DecideLogic:
        return DecideLogic(
            registry(tmp_path / name, POLICIES[policy]), views(), np.random.default_rng(5), "w-1", clock
        )

    by_dict = run(logic("dict"), batch, encoded=False)
    by_text = run(logic("text"), batch, encoded=True)
    fast = 0
    for (decision, _shadow, _), (summary, served, _) in zip(by_dict, by_text, strict=True):
        task_type, model, capped, decision_ms, payload = summary
        event = orjson.loads(payload)
        RoutingDecision.model_validate_json(payload)
        assert event["decision_ms"] == decision_ms >= 0.0
        expected = orjson.loads(orjson.dumps(decision))
        del event["decision_ms"], expected["decision_ms"]
        assert event == expected
        assert list(event) == list(expected)  # the same field order too
        assert (task_type, model, capped) == (
            decision["task_type"],
            decision["model"],
            decision["reasons"]["capped"],
        )
        assert served == (served_fields(decision) if decision["model"] is not None else None)
        fast += decision["candidates"] != [] and not decision["reasons"]["rules"][:1] == ["pin-vip"]
    assert fast > 300  # most decisions took the text path


def test_shadow_decisions_still_come_with_encoded_ones(tmp_path: Path) -> None:
    logic = DecideLogic(registry(tmp_path, POLICIES["shadow"]), StateView(), np.random.default_rng(1), "w")
    summary, _ = logic.decide_encoded(build_request("chat", request_id="r1"))
    shadow = logic.take_shadow()
    assert shadow is not None and shadow["shadow"] and shadow["request_id"] == "r1"
    assert orjson.loads(summary[4])["shadow"] is False


def test_a_fast_path_request_decides_as_its_model(tmp_path: Path) -> None:
    taken = [fast_request(encode(request), 65536) for request in requests(300, seed=3)]
    fast = [f for f in taken if f is not None]
    assert len(fast) > 150
    clock = lambda: NOW_S  # noqa: E731

    def decided(name: str, batch: list[Any]) -> list[Any]:
        reg = registry(tmp_path / name, POLICIES["per_tenant"])
        logic = DecideLogic(reg, StateView(), np.random.default_rng(9), "w", clock)
        return [orjson.loads(logic.decide_encoded(r)[0][4]) | {"decision_ms": 0} for r in batch]

    assert decided("fast", fast) == decided("model", [f.full() for f in fast])


def test_rules_of_requests_without_metadata_follow_a_rules_change(tmp_path: Path) -> None:
    """The decide logic remembers which rules apply to a request without metadata (per tenant and task type);
    a configuration with other rules is answered from those rules, never from the remembered ones."""
    reg = registry(tmp_path / "a", POLICIES["beta"])
    logic = DecideLogic(reg, StateView(), np.random.default_rng(2), "w", lambda: NOW_S)

    def rules_of(tenant: str | None) -> list[str]:
        return orjson.loads(logic.decide_encoded(build_request("chat", tenant=tenant))[0][4])["reasons"][
            "rules"
        ]

    assert [rules_of(t) for t in ("eu", "acme", "eu")] == [["eu-no-premium"], [], ["eu-no-premium"]]
    registry(tmp_path / "b", POLICIES["beta"])  # its files, with other rules:
    (tmp_path / "b" / "rules.yaml").write_text(
        "rules:\n  - {name: acme-budget, tenants: [acme], allow: [budget]}\n"
    )
    reg.apply_config(RouterConfig.load(tmp_path / "b"))
    assert [rules_of(t) for t in ("eu", "acme")] == [[], ["acme-budget"]]


def test_the_millisecond_clock_writes_what_datetime_writes() -> None:
    """The decide clock swaps the milliseconds into a per-second prefix: the same text as formatting the whole
    datetime, across milliseconds, seconds, days and years (and back in time)."""
    from datetime import UTC, datetime

    from banditroute.agents.decide import _MillisecondClock

    clock, rnd, now = _MillisecondClock(), random.Random(1), NOW_S
    for _ in range(20_000):
        now = rnd.choice([now, now + 0.0004, now + 0.001, now + 0.7, now + 59.9, now + 86_400.0 * 40])
        now = rnd.uniform(0.0, 4.1e9) if rnd.random() < 0.01 else now
        ms = int(now * 1000.0)
        assert (
            clock.iso(now)
            == datetime.fromtimestamp(ms / 1000.0, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
        )


@pytest.mark.parametrize("policy", ["per_tenant", "capped", "tenant_caps"])
def test_kept_answers_decide_as_fresh_ones(
    tmp_path: Path, policy: str, views: Callable[[], StateView]
) -> None:
    """The decide logic keeps its prepared answer for requests without metadata or filters: through learnt
    states, idle evictions, caps, per-tenant slots and a configuration change, a logic given such requests
    (kept answers) decides as one given the same requests as models (never kept), and its admission slots
    hold the same times."""
    policies = {
        "per_tenant": "defaults: {lam: 10.0}\nper_tenant: [chat]\nlimits: {idle_evict_s: 5}\n",
        "capped": "defaults: {lam: 10.0}\nlimits: {max_task_types: 2, idle_evict_s: 5}\n",
        "tenant_caps": "defaults: {lam: 10.0}\nper_tenant: true\n"
        "limits: {max_tenants_per_task_type: 2, max_task_types: 3, idle_evict_s: 5}\n",
    }
    now = [NOW_S]
    logics = [
        DecideLogic(
            registry(tmp_path / name, policies[policy]),
            views(),
            np.random.default_rng(8),
            "w",
            lambda: now[0],
        )
        for name in ("kept", "fresh")
    ]
    rnd = random.Random(4)
    kept = evictions = 0
    capped = set()
    for i in range(1200):
        if i % 150 == 149:
            key = rnd.choice(["chat", "code", "acme|chat"])
            for logic in logics:
                learn(logic, key, "budget", 1.0, now[0])
        if i == 700:
            for logic in logics:
                (tmp_path / "next").mkdir(exist_ok=True)
                registry(tmp_path / "next", policies[policy] + "task_types: {code: {lam: 1.0}}\n")
                logic.registry.apply_config(RouterConfig.load(tmp_path / "next"))
        now[0] += rnd.choices([0.0, 0.001, 0.5, 3.0, 11.0], [60, 30, 6, 3, 1])[
            0
        ]  # idle evictions (<= 1 / 10 s)
        task_type = rnd.choice(["chat", "chat", "code", "new1", "new2", "new3", "new4"])
        tenant = rnd.choice([None, "acme", "eu", "t3", "t4"])
        plain = fast_request(encode(build_request(task_type, tenant=tenant, request_id=f"r{i}")), 65536)
        assert plain is not None
        kept += (task_type, tenant) in logics[0]._prepared
        held = len(logics[0].admission.task_types) + len(logics[0].admission.listed)
        events = []
        for logic, request in zip(logics, (plain, plain.full()), strict=True):
            summary, _ = logic.decide_encoded(request)
            events.append(orjson.loads(summary[4]) | {"decision_ms": 0})
        assert events[0] == events[1]
        slots = [(a.listed, a.task_types, a.tenants) for a in (logic.admission for logic in logics)]
        assert slots[0] == slots[1]
        evictions += len(logics[0].admission.task_types) + len(logics[0].admission.listed) < held
        capped.add(events[0]["reasons"]["capped"])
    assert kept > 400  # many requests were answered from a kept answer
    assert evictions > 5 and len(capped) >= (1 if policy == "per_tenant" else 2)
