"""Decide, learn and the registry's snapshots without a broker: plain objects, a dict for the table."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from banditroute.agents.decide import DecideLogic, StateView
from banditroute.agents.learn import LearnLogic, to_outcome
from banditroute.client import build_request
from banditroute.config import Registry, RouterConfig
from banditroute.core import sync_models
from banditroute.events import RoutingDecision

VERSION_A = {
    "models.yaml": "models:\n  - {name: a1, cost_per_call_usd: 0.001}\n  - {name: a2, cost_per_call_usd: 0.002}\n",
    "policy.yaml": "defaults: {lam: 10.0}\nshadow: {name: cheap-first, lam: 100.0}\n",
    "rules.yaml": "rules:\n  - {name: pin-a, task_types: [chat], pin: a1}\n",
}
VERSION_B = {
    "models.yaml": "models:\n  - {name: b1, cost_per_call_usd: 0.001}\n  - {name: b2, cost_per_call_usd: 0.002}\n",
    "policy.yaml": "defaults: {lam: 10.0}\ntask_types:\n  chat: {lam: 30.0}\n",
    "rules.yaml": "rules:\n  - {name: pin-b, task_types: [chat], pin: b1}\n",
}
EXPECTED = {  # rule applied -> (the version's config models, the pinned model, whether a shadow runs)
    "pin-a": ({"a1", "a2"}, "a1", True),
    "pin-b": ({"b1", "b2"}, "b1", False),
}


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def catalog_event(model: str, action: str) -> dict[str, Any]:
    return {"model": model, "action": action, "cost_per_call_usd": 0.003, "latency_ms": 500.0}


def test_decisions_never_mix_two_versions(tmp_path: Path) -> None:
    """One thread swaps config A/B and toggles a catalog model thousands of times while another decides; every
    decision's models, rule, pin, shadow and state come from one version."""
    config_a = RouterConfig.load(write(tmp_path / "a", VERSION_A))
    config_b = RouterConfig.load(write(tmp_path / "b", VERSION_B))
    registry = Registry(config_a)
    registry.apply_catalog(catalog_event("c", "added"))
    view = StateView()
    logic = DecideLogic(registry, view, np.random.default_rng(7))
    flips = 3000
    done = threading.Event()

    def flip() -> None:
        try:
            for i in range(flips):
                registry.apply_config(config_b if i % 2 == 0 else config_a)
                registry.apply_catalog(catalog_event("c", "retired" if i % 3 == 0 else "updated"))
        finally:
            done.set()

    decisions: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over as often as possible, so the threads interleave finely
    flipper = threading.Thread(target=flip)
    try:
        flipper.start()
        while not done.is_set() or len(decisions) < 2000:
            request = build_request("chat", request_id=f"r{len(decisions)}")
            decisions.append((logic.decide(request), logic.take_shadow()))
    finally:
        flipper.join()
        sys.setswitchinterval(switch)
    assert registry.version > 2 * flips
    seen = set()
    for decision, shadow in decisions:
        (rule,) = decision["reasons"]["rules"]
        models, pinned, shadowed = EXPECTED[rule]
        candidates = {c["model"] for c in decision["candidates"]}
        filtered = decision["reasons"]["filtered"]
        assert (candidates | set(filtered)) - {"c"} == models, decision
        assert decision["model"] == pinned, decision
        assert set(filtered) <= {"c"} and set(filtered.values()) <= {"retired"}, decision
        assert (shadow is not None) == shadowed, decision
        seen.add((rule, "c" in filtered))
    assert len(seen) == 4, seen  # both configs, with the catalog model both retired and routable


def test_reload_swaps_in_a_new_snapshot_and_leaves_the_old_one_whole(tmp_path: Path) -> None:
    folder = write(tmp_path / "config", VERSION_A)
    registry = Registry(RouterConfig.load(folder), folder)
    old = registry.snapshot
    assert not registry.reload_if_changed()
    write(folder, VERSION_B)
    later = os.stat(folder / "policy.yaml").st_mtime + 5
    for name in VERSION_B:
        os.utime(folder / name, (later, later))
    assert registry.reload_if_changed()
    new = registry.snapshot
    assert new is not old and new.version == old.version + 1
    assert {m.name for m in old.models} == {"a1", "a2"} and [r.name for r in old.rules] == ["pin-a"]
    assert {m.name for m in new.models} == {"b1", "b2"} and [r.name for r in new.rules] == ["pin-b"]
    assert new.route("chat").policy.lam == 30.0 and new.route("other").policy.lam == 10.0
    assert old.route("chat").shadow is not None and new.route("chat").shadow is None
    assert new.initial.names == ("b1", "b2")


def test_a_broken_config_file_keeps_the_current_snapshot(tmp_path: Path) -> None:
    folder = write(tmp_path / "config", VERSION_A)
    registry = Registry(RouterConfig.load(folder), folder)
    old = registry.snapshot
    (folder / "models.yaml").write_text(
        "models: [{name: a1, cost_per_call_usd: 1}, {name: a1, cost_per_call_usd: 1}]\n"
    )
    later = os.stat(folder / "models.yaml").st_mtime + 5
    os.utime(folder / "models.yaml", (later, later))
    with pytest.raises(ValueError, match="unique"):
        registry.reload_if_changed()
    assert registry.snapshot is old


def test_decide_logic_builds_a_valid_decision_from_the_learnt_state(tmp_path: Path) -> None:
    registry = Registry(RouterConfig.load(write(tmp_path / "b", VERSION_B)))
    view = StateView()
    logic = DecideLogic(registry, view, np.random.default_rng(1), worker_id="w1", clock=lambda: 1.7e9)
    first = logic.decide(build_request("summarise", request_id="r1", tenant="acme"))
    RoutingDecision.model_validate(first)
    assert first["state_version"] == 0 and first["model"] in {"b1", "b2"}
    assert first["decision_id"] == "d:r1" and first["worker_id"] == "w1"
    assert first["decided_at"] == "2023-11-14T22:13:20.000Z"

    learn = LearnLogic({}, registry, view.offer)
    outcome = {"task_key": "summarise", "model": "b2", "quality": 1.0, "cost_usd": 0.001, "src": 0, "off": 0}
    assert learn.apply([outcome], 1.7e9).learned == 1
    second = logic.decide(build_request("summarise", request_id="r2"))
    assert second["state_version"] == view.get("summarise").version == 1  # type: ignore[union-attr]


def test_learn_logic_learns_each_outcome_once_and_prices_tokens(tmp_path: Path) -> None:
    registry = Registry(RouterConfig.load(write(tmp_path / "a", VERSION_A)))
    table: dict[str, bytes] = {}
    learnt: dict[str, Any] = {}
    learn = LearnLogic(table, registry, learnt.__setitem__)
    records = [
        {"task_key": "chat", "model": "a1", "quality": 0.9, "cost_usd": 0.001, "src": 4, "off": 10},
        {"task_key": "chat", "model": "a2", "quality": 0.5, "cost_usd": 0.002, "src": 4, "off": 11},
    ]
    first = learn.apply(records, 1.7e9)
    again = LearnLogic(table, registry).apply(records, 1.7e9)  # a restarted learner reading the same table
    assert (first.learned, first.skipped_redelivered) == (2, 0)
    assert (again.learned, again.skipped_redelivered) == (0, 2)
    assert learnt["chat"].applied == {4: 11}
    registry.apply_catalog(
        {"model": "t", "action": "added", "price_in_per_1k_usd": 2.0, "price_out_per_1k_usd": 4.0}
    )
    tokens = {
        "task_key": "chat",
        "model": "t",
        "quality": 1.0,
        "tokens_in": 500,
        "tokens_out": 250,
        "src": 4,
        "off": 12,
    }
    assert to_outcome(tokens, registry.models, 1.7e9).cost_usd == pytest.approx(2.0)  # 0.5 * 2 + 0.25 * 4
    assert learn.apply([tokens], 1.7e9).by_model == {"t": 1}
    assert learnt["chat"].names == ("a1", "a2", "t") and learnt["chat"].applied == {4: 12}


def test_rules_still_apply_when_their_constraints_are_shared() -> None:
    """Equal rule effects are one object (so the core's caches hit); every decision still obeys its rules and
    a request with filters of its own still gets both."""
    from banditroute.agents.decide import NO_CONSTRAINTS
    from banditroute.config import PACKAGED_CONFIG
    from banditroute.core import Constraints

    logic = DecideLogic(Registry(RouterConfig.load(PACKAGED_CONFIG)), StateView(), np.random.default_rng(2))
    effect = Constraints(deny=frozenset({"gpt-large"}))
    assert logic._with_rules(NO_CONSTRAINTS, effect) is logic._with_rules(
        NO_CONSTRAINTS, Constraints(**vars(effect))
    )
    for i in range(300):
        eu = logic.decide(build_request("chat", tenant="acme-eu", request_id=f"eu{i}"))
        assert eu["model"] != "gpt-large" and eu["reasons"]["rules"] == ["acme-eu-no-large"]
        vip = logic.decide(build_request("chat", metadata={"tier": "vip"}, request_id=f"v{i}"))
        assert vip["reasons"]["rules"] == ["vip-quality-first"]
        both = logic.decide(
            build_request("chat", tenant="acme-eu", exclude=["small-fast"], request_id=f"b{i}")
        )
        assert both["model"] not in ("gpt-large", "small-fast")


def test_a_state_older_than_the_catalog_is_aligned_once_per_snapshot(tmp_path: Path) -> None:
    """A learnt state without a model the catalog added since is aligned once per snapshot (the same object
    every decision, so what is derived from it is kept), and decides as the state aligned beforehand does."""
    registry = Registry(RouterConfig.load(write(tmp_path / "b", VERSION_B)))
    table: dict[str, bytes] = {}
    learn = LearnLogic(table, registry)
    outcomes = [
        {
            "task_key": "summarise",
            "model": f"b{1 + i % 2}",
            "quality": 0.5 + 0.1 * (i % 3),
            "src": 0,
            "off": i,
        }
        for i in range(20)
    ]
    learn.apply(outcomes, 1.7e9)
    learnt = learn.state("summarise")
    registry.apply_catalog(catalog_event("b3", "added"))
    snapshot = registry.snapshot
    aligned = snapshot.state_for(learnt)
    assert aligned.names == ("b1", "b2", "b3") and learnt.names == ("b1", "b2")
    assert snapshot.state_for(learnt) is aligned and snapshot.aligned(learnt) is aligned
    assert snapshot.aligned(aligned) is aligned

    def decide(state: Any) -> list[tuple[Any, ...]]:
        view = StateView()
        view.offer("summarise", state)
        logic = DecideLogic(registry, view, np.random.default_rng(5), worker_id="w", clock=lambda: 1.7e9)
        out = []
        for i in range(40):  # with metadata: prepared afresh for each request
            d = logic.decide(build_request("summarise", request_id=f"r{i}", metadata={"n": str(i)}))
            out.append((d["model"], d["propensity"], d["state_version"], d["fallbacks"]))
        return out

    assert decide(learnt) == decide(sync_models(learnt, snapshot.models))


def test_the_view_lookup_answers_as_get_through_offers_evictions_and_drops() -> None:
    from banditroute.config import PACKAGED_CONFIG
    from banditroute.core.state import new_state, replace_state

    registry = Registry(RouterConfig.load(PACKAGED_CONFIG))
    models = registry.snapshot.models
    view = StateView(prepare=False)
    seen: list[tuple[Any, Any]] = []

    def both(key: str) -> None:
        seen.append((view.lookup(key), view.get(key)))

    state = new_state(models)
    assert view.offer("a", state, where=(0, 1))
    both("a")
    assert view.offer("a", replace_state(state, version=state.version + 1), where=(0, 2))
    both("a")
    assert view.evict("a")
    both("a")
    assert view.offer("b", state)
    view.drop("b")
    both("b")
    assert [lookup is got for lookup, got in seen] == [True] * 4
    assert [lookup is None for lookup, _ in seen] == [False, False, True, True]
