"""The learner's priors pooled over task types (:mod:`banditroute.agents.prior_pool`), without a broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from banditroute.agents.decide import StateView
from banditroute.agents.learn import LearnLogic
from banditroute.agents.prior_pool import PriorPool
from banditroute.config import ConfigError, Registry, RouterConfig
from banditroute.core.pooling import pooled_priors
from banditroute.core.state import PRIOR_A, PRIOR_B

MODELS = "models:\n  - {name: good, cost_per_call_usd: 0.001}\n  - {name: poor, cost_per_call_usd: 0.001}\n"


def registry(folder: Path, policy: str = "defaults: {lam: 10.0}\n") -> Registry:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.yaml").write_text(MODELS)
    (folder / "policy.yaml").write_text(policy)
    return Registry(RouterConfig.load(folder), folder)


def outcomes(task: str, model: str, qualities: list[float], start: int) -> list[dict[str, Any]]:
    return [
        {"task_key": task, "model": model, "quality": q, "cost_usd": 0.001, "src": 0, "off": start + i}
        for i, q in enumerate(qualities)
    ]


def learner(reg: Registry, clock: list[float]) -> tuple[LearnLogic, StateView, PriorPool]:
    view = StateView()
    pool = PriorPool(view.items, interval_s=1.0, clock=lambda: clock[0])
    return LearnLogic({}, reg, view.offer, pool=pool), view, pool


def prior_mean(view: StateView, key: str, model: str) -> tuple[float, float]:
    state = view.get(key)
    assert state is not None
    row = state.stats[state.names.index(model)]
    a, b = float(row[PRIOR_A]), float(row[PRIOR_B])
    return a / (a + b), a + b


def test_a_new_task_type_starts_from_what_the_others_agree_on(tmp_path: Path) -> None:
    """Two task types have seen `good` at ~0.9 and `poor` at ~0.2; a third task type's first outcome is
    learnt under priors pooled from them (as the replay and the suite do), not under Beta(1, 1)."""
    reg = registry(tmp_path)
    clock = [0.0]
    learn, view, _ = learner(reg, clock)
    for i, task in enumerate(("chat", "code")):
        learn.apply(outcomes(task, "good", [1.0] * 9 + [0.0], 100 * i), 1.7e9)
        learn.apply(outcomes(task, "poor", [1.0] * 2 + [0.0] * 8, 100 * i + 50), 1.7e9)
    clock[0] = 5.0  # the table is recomputed with all three task types known
    learn.apply(outcomes("summarise", "poor", [0.0], 900), 1.7e9)
    clock[0] = 10.0
    states = dict(view.items())  # what the next batch's recomputation sees
    learn.apply(outcomes("summarise", "poor", [0.0], 901), 1.7e9)
    good_mean, good_strength = prior_mean(view, "summarise", "good")
    poor_mean, _ = prior_mean(view, "summarise", "poor")
    assert good_strength > 2.0 + 5.0  # Beta(1, 1) plus pooled evidence worth several observations
    assert good_mean > 0.75 and poor_mean < 0.35
    # exactly what core.pooling gives on those states (the replay's pooling)
    base = {m.name: m.quality_prior for m in reg.snapshot.models}
    expected = pooled_priors(states, dict.fromkeys(states, base))["summarise"]
    state = view.get("summarise")
    assert state is not None
    for j, name in enumerate(state.names):
        assert (state.stats[j, PRIOR_A], state.stats[j, PRIOR_B]) == pytest.approx(expected[name])


def test_pooling_off_keeps_the_catalog_priors(tmp_path: Path) -> None:
    reg = registry(tmp_path, "defaults: {lam: 10.0}\npooling: {max_strength: 0}\n")
    assert reg.snapshot.pooled_prior_strength == 0.0
    clock = [0.0]
    learn, view, pool = learner(reg, clock)
    for i, task in enumerate(("chat", "code", "summarise")):
        clock[0] += 5.0
        learn.apply(outcomes(task, "good", [1.0] * 10, 100 * i), 1.7e9)
    for task in ("chat", "code", "summarise"):
        assert prior_mean(view, task, "good") == (0.5, 2.0)
    assert pool.computed == 0


def test_the_pooled_table_is_recomputed_at_most_once_per_interval(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    clock = [0.0]
    learn, _, pool = learner(reg, clock)
    for i in range(50):
        learn.apply(outcomes(f"t{i % 5}", "good", [1.0], i), 1.7e9)
    assert pool.computed == 1
    clock[0] = 1.5
    learn.apply(outcomes("t0", "good", [1.0], 1000), 1.7e9)
    assert pool.computed == 2


def test_redelivered_outcomes_write_nothing_even_when_priors_moved(tmp_path: Path) -> None:
    """Pooling changes a state only when the batch learnt something: a redelivery is not a new state."""
    reg = registry(tmp_path)
    clock = [0.0]
    learn, view, _ = learner(reg, clock)
    first = outcomes("chat", "good", [1.0] * 5, 0)
    learn.apply(first, 1.7e9)
    learn.apply(outcomes("code", "good", [0.0] * 5, 10), 1.7e9)
    before = view.get("chat")
    clock[0] = 5.0
    stats = learn.apply(first, 1.7e9)
    assert (stats.learned, stats.skipped_redelivered) == (0, 5)
    assert view.get("chat") is before


@pytest.mark.parametrize(
    "pooling",
    ["pooling: 5", "pooling: {max_strength: -1}", "pooling: {max_strength: x}", "pooling: {cap: 5}"],
)
def test_bad_pooling_settings_are_refused(tmp_path: Path, pooling: str) -> None:
    with pytest.raises(ConfigError, match="pooling"):
        registry(tmp_path, f"defaults: {{lam: 10.0}}\n{pooling}\n")


def test_one_tenant_s_outcomes_never_move_another_tenant_s_priors(tmp_path: Path) -> None:
    """Per-tenant state keeps tenants apart (docs/guarantees.md, "Forged feedback"): the priors of a tenant's
    key are pooled from that tenant's other keys only, and tenantless task types pool among themselves."""
    reg = registry(tmp_path, "defaults: {lam: 10.0}\nper_tenant: [code, chat]\n")
    clock = [0.0]
    learn, view, _ = learner(reg, clock)
    for i, key in enumerate(("a|code", "a|chat", "summarise", "translate")):  # all agree: `good` is poor
        learn.apply(outcomes(key, "good", [0.0] * 50, 100 * i), 1.7e9)
    learn.apply(outcomes("b|code", "good", [1.0, 0.0], 400), 1.7e9)
    clock[0] = 5.0
    learn.apply(outcomes("b|code", "good", [1.0, 0.0], 402), 1.7e9)  # b's only key: nothing to pool from
    learn.apply(outcomes("a|code", "good", [0.0], 404), 1.7e9)  # a's keys pool with each other
    learn.apply(outcomes("summarise", "good", [0.0], 405), 1.7e9)  # and tenantless task types
    assert prior_mean(view, "b|code", "good") == (0.5, 2.0)
    a_mean, a_strength = prior_mean(view, "a|code", "good")
    assert a_mean < 0.1 and 20.0 < a_strength < 2.0 + 50.0 + 1e-9  # a|chat's evidence only
    s_mean, s_strength = prior_mean(view, "summarise", "good")
    assert s_mean < 0.1 and 20.0 < s_strength < 2.0 + 50.0 + 1e-9  # translate's evidence only


def test_the_shared_state_of_capped_task_types_is_not_pooled(tmp_path: Path) -> None:
    """``~shared`` mixes whatever task types came past ``max_task_types`` (a flood of junk names): its outcomes
    do not move the priors of the task types that have state of their own, and it keeps its own priors."""
    reg = registry(tmp_path)
    clock = [0.0]
    learn, view, _ = learner(reg, clock)
    learn.apply(outcomes("~shared", "good", [0.0] * 500, 0), 1.7e9)
    learn.apply(outcomes("chat", "good", [1.0] * 20, 1000), 1.7e9)
    learn.apply(outcomes("code", "good", [1.0] * 20, 2000), 1.7e9)
    clock[0] = 5.0
    states = {k: s for k, s in view.items() if k != "~shared"}
    learn.apply(outcomes("chat", "good", [1.0], 3000), 1.7e9)
    learn.apply(outcomes("~shared", "good", [0.0], 3001), 1.7e9)
    expected = pooled_priors(states)["chat"]["good"]
    chat = view.get("chat")
    assert chat is not None
    j = chat.names.index("good")
    assert (chat.stats[j, PRIOR_A], chat.stats[j, PRIOR_B]) == pytest.approx(expected)
    assert prior_mean(view, "chat", "good")[0] > 0.9
    assert prior_mean(view, "~shared", "good") == (0.5, 2.0)


def test_turning_pooling_off_gives_learnt_keys_their_catalog_priors_back(tmp_path: Path) -> None:
    """``max_strength: 0`` by a configuration reload: a key learnt from then on is under the catalog's prior
    again, not under the pooled one it was given before (which nothing would ever take away)."""
    reg = registry(tmp_path)
    clock = [0.0]
    learn, view, _ = learner(reg, clock)
    learn.apply(outcomes("chat", "good", [1.0] * 20, 0), 1.7e9)
    learn.apply(outcomes("code", "good", [1.0] * 20, 100), 1.7e9)
    clock[0] = 5.0
    learn.apply(outcomes("chat", "good", [1.0], 200), 1.7e9)
    assert prior_mean(view, "chat", "good")[1] > 2.0 + 10.0  # pooled from code's evidence
    registry(tmp_path / "off", "defaults: {lam: 10.0}\npooling: {max_strength: 0}\n")
    reg.apply_config(RouterConfig.load(tmp_path / "off"))
    assert reg.snapshot.pooled_prior_strength == 0.0
    learn.apply(outcomes("chat", "good", [1.0], 201), 1.7e9)
    assert prior_mean(view, "chat", "good") == (0.5, 2.0)
