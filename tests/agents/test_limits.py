"""Caps on client-named keys without a broker: policy.yaml ``limits``, admission, capped and rejected decisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from banditroute.agents.decide import DecideLogic, StateView
from banditroute.agents.learn import LearnLogic
from banditroute.client import build_request
from banditroute.config import ConfigError, Registry, RouterConfig
from banditroute.core.state import replace_state
from banditroute.events import RoutingDecision
from banditroute.limits import SHARED_KEY, Admission, Limits

MODELS = "models:\n  - {name: m1, cost_per_call_usd: 0.001}\n  - {name: m2, cost_per_call_usd: 0.002}\n"


def registry_with(tmp_path: Path, policy: str) -> Registry:
    (tmp_path / "models.yaml").write_text(MODELS)
    (tmp_path / "policy.yaml").write_text(policy)
    (tmp_path / "rules.yaml").write_text("rules: []\n")
    return Registry(RouterConfig.load(tmp_path), tmp_path)


def test_the_shipped_policy_states_every_limit() -> None:
    limits = RouterConfig.load(Path(__file__).parents[2] / "config").limits
    assert limits == Limits()  # the commented values in config/policy.yaml are the defaults


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ("{max_task_types: -1}", "max_task_types"),
        ("{max_tasks: 3}", "unknown limits"),
        ("{tenant_requests_per_s: 0}", "tenant_requests_per_s"),
        ("{allowed_task_types: chat}", "allowed_task_types"),
        ("{reject_unknown_task_types: 1}", "reject_unknown_task_types"),
    ],
)
def test_bad_limits_name_the_file_and_field(tmp_path: Path, limits: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        registry_with(tmp_path, f"limits: {limits}\n")


def test_admission_holds_at_most_max_task_types_and_lets_idle_ones_go() -> None:
    limits = Limits(max_task_types=3, allowed_task_types=frozenset({"listed"}))
    admission = Admission()
    verdicts = [admission.check(limits, {"chat": {}}, f"t{i}", None, False, float(i)) for i in range(10)]
    assert [v.key for v in verdicts[:3]] == ["t0", "t1", "t2"]
    assert all(v.key == SHARED_KEY and v.shared and v.capped == "max_task_types" for v in verdicts[3:])
    # listed task types never count against the cap and are never capped
    assert admission.check(limits, {"chat": {}}, "chat", None, False, 11.0).capped is None
    assert admission.check(limits, {"chat": {}}, "listed", None, False, 11.0).capped is None
    assert len(admission.task_types) == 3
    assert admission.evict_idle(idle_s=10.0, now_s=11.5) == ["t0", "t1"]
    assert admission.check(limits, {}, "new", None, False, 12.0).key == "new"


def test_tenants_past_the_cap_share_the_task_types_state() -> None:
    limits = Limits(max_tenants_per_task_type=2)
    admission = Admission()
    keys = [admission.check(limits, {}, "chat", f"acme{i}", True, 1.0) for i in range(4)]
    assert [v.key for v in keys] == ["acme0|chat", "acme1|chat", "chat", "chat"]
    assert [v.capped for v in keys] == [None, None, "max_tenants_per_task_type", "max_tenants_per_task_type"]
    assert not any(v.shared for v in keys)


def test_tenant_rate_is_a_token_bucket_per_tenant_with_bounded_buckets() -> None:
    limits = Limits(tenant_requests_per_s=5.0)
    admission = Admission()
    first_second = [admission.check(limits, {}, "chat", "acme", False, 0.1 * i).reject for i in range(10)]
    assert first_second.count(None) == 5 + 4  # a burst of 5, then 5/s refills 4 more in 0.9 s
    assert admission.check(limits, {}, "chat", "other-tenant", False, 0.95).reject is None
    for i in range(10_000):  # 1,000 one-off tenants a second for 10 s: buckets swept every second
        admission.check(limits, {}, "chat", f"u{i}", False, 2.0 + i * 0.001)
    assert admission.counts()["rate_buckets"] <= 2_000  # the last second's, plus those still refilling


def test_capped_and_rejected_decisions_are_valid_and_say_why(tmp_path: Path) -> None:
    registry = registry_with(
        tmp_path,
        "defaults: {lam: 1.0}\ntask_types:\n  chat: {lam: 50.0}\nlimits: {max_task_types: 2}\n",
    )
    view = StateView()
    logic = DecideLogic(registry, view, np.random.default_rng(3), clock=lambda: 1.7e9)
    decisions = [logic.decide(build_request(f"junk-{i}", request_id=f"r{i}")) for i in range(5)]
    for d in decisions:
        RoutingDecision.model_validate(d)
    assert [d["state_key"] for d in decisions] == ["junk-0", "junk-1", SHARED_KEY, SHARED_KEY, SHARED_KEY]
    assert [d["reasons"]["capped"] for d in decisions[1:3]] == [None, "max_task_types"]
    assert logic.decide(build_request("chat", request_id="c"))["state_key"] == "chat"
    # the outcome of a capped decision updates the shared state, with the default policy
    learn = LearnLogic({}, registry, view.offer)
    outcome = {"task_key": SHARED_KEY, "model": "m1", "quality": 1.0, "cost_usd": 0.001, "src": 0, "off": 1}
    assert learn.apply([outcome], 1.7e9).learned == 1
    assert logic.decide(build_request("junk-9", request_id="r9"))["state_version"] == 1

    (tmp_path / "policy.yaml").write_text(
        "task_types:\n  chat: {}\nlimits: {reject_unknown_task_types: true, allowed_task_types: [code]}\n"
    )
    registry.apply_config(RouterConfig.load(tmp_path))
    rejected = logic.decide(build_request("junk-10", request_id="r10"))
    RoutingDecision.model_validate(rejected)
    assert rejected["model"] is None and rejected["reasons"]["capped"] == "unknown_task_type"
    assert "junk-10" in rejected["reasons"]["no_eligible"]
    assert logic.decide(build_request("code", request_id="r11"))["model"] in {"m1", "m2"}


def test_state_view_evicts_only_what_it_can_find_again(tmp_path: Path) -> None:
    registry = registry_with(tmp_path, "defaults: {lam: 1.0}\n")
    state = registry.snapshot.initial
    view = StateView()
    view.offer("learnt-here", state)  # the learner's own write: not yet read back from the topic
    assert not view.evict("learnt-here")
    view.offer("learnt-here", state, (1, 40))  # the same version read from the state topic
    view.offer("chat", state, (0, 7))
    assert view.evict("chat") and view.get("chat") is None and view.evicted == {"chat": (0, 7)}
    view.want("chat")
    view.want("never-seen")
    assert list(view.wanted) == ["chat"]
    newer = replace_state(state, version=2)
    view.offer("chat", newer, (0, 9))  # a newer record brings it back
    assert view.get("chat") is newer and "chat" not in view.evicted
    view.drop("chat")
    assert view.get("chat") is None and "chat" not in view.where


def test_admission_knows_which_task_types_and_tenants_are_active() -> None:
    admission = Admission()
    limits = Limits()
    admission.check(limits, {"chat": {}}, "chat", None, False, 100.0)
    admission.check(limits, {}, "junk", "acme", True, 50.0)
    assert admission.active("chat", None, 90.0) and not admission.active("chat", None, 101.0)
    assert admission.active("junk", "acme", 40.0) and not admission.active("junk", "globex", 40.0)
    assert not admission.active("junk", "acme", 60.0)
    assert admission.evict_idle(10.0, 200.0) == ["junk"] and not admission.listed and not admission.tenants
