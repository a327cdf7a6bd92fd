"""Unit tests of decisions: lifecycle, circuit breaker, capacity, pins, fallbacks, guards, batching."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from banditroute.core import (
    CapacityTracker,
    Constraints,
    ModelSpec,
    Outcome,
    TaskPolicy,
    choose,
    choose_batch,
    new_state,
    propensities,
    sync_models,
    update,
)

from .conftest import catalog


def shares(state, models, policy, n=2000, seed=0, c=None, now=0.0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    counts: dict[str | None, int] = {}
    for _ in range(n):
        model = choose(state, models, policy, c, rng, now).model
        counts[model] = counts.get(model, 0) + 1
    return {k: v / n for k, v in counts.items()}


def test_lifecycle_filters(policy: TaskPolicy, rng: np.random.Generator) -> None:
    models = list(catalog(4))
    models[1] = dataclasses.replace(models[1], lifecycle="shadow")
    models[2] = dataclasses.replace(models[2], lifecycle="retired")
    models[3] = dataclasses.replace(models[3], enabled=False)
    state = new_state(models, policy)
    choice = choose(state, models, policy, None, rng, 0.0)
    assert choice.model == "m0" and choice.propensity == 1.0
    assert choice.filtered == {"m1": "shadow", "m2": "retired", "m3": "disabled"}
    # shadow models learn from outcomes that name them (served or not)
    state = update(state, models, policy, Outcome("m1", quality=1.0, served=False))
    assert state.observations[1] == 1 and state.alpha[1] > 1.0


def test_sync_models_adds_without_reordering(policy: TaskPolicy) -> None:
    models = catalog(3)
    state = update(new_state(models, policy), models, policy, Outcome("m1", quality=1.0))
    bigger = (*models[:2], ModelSpec("new", cost_per_call_usd=0.5, quality_prior=(3, 1)))
    synced = sync_models(state, bigger, policy)
    assert synced.names == ("m0", "m1", "m2", "new")
    assert np.array_equal(synced.stats[:3], state.stats)
    assert synced.mean_cost_usd[3] == pytest.approx(0.5)
    assert synced.alpha[3] == 3.0 and synced.version == state.version + 1
    assert sync_models(synced, bigger, policy) is synced
    choice = choose(synced, bigger, policy, None, np.random.default_rng(0), 0.0)
    assert choice.filtered.get("m2") == "retired"  # no longer in the catalog: kept, but no traffic


def test_new_and_canary_models_get_guarded_shares() -> None:
    models = [
        *catalog(3),
        ModelSpec("canary", cost_per_call_usd=0.001, lifecycle="canary", quality_prior=(50, 1)),
    ]
    policy = TaskPolicy(canary_floor=0.1, canary_ceiling=0.2, canary_observations=10, new_model_floor=0.05)
    state = new_state(models, policy)
    p = propensities(state, models, policy, np.ones(4, bool), 0.0)
    assert p[3] == pytest.approx(0.2)  # a strong prior would win everything: the ceiling caps it
    assert np.all(p[:3] >= 0.05 - 1e-12)
    freq = shares(state, models, policy, n=4000)
    assert abs(freq["canary"] - 0.2) < 0.03
    for _ in range(10):
        state = update(state, models, policy, Outcome("canary", quality=1.0))
    assert propensities(state, models, policy, np.ones(4, bool), 0.0)[3] > 0.5  # graduated


def test_min_max_share(policy: TaskPolicy) -> None:
    models = catalog(3)
    guarded = dataclasses.replace(policy, min_share={"m2": 0.3}, max_share={"m0": 0.5}, new_model_floor=0.0)
    state = new_state(models, guarded)
    p = propensities(state, models, guarded, np.ones(3, bool), 0.0)
    assert p[2] >= 0.3 - 1e-12 and p[0] <= 0.5 + 1e-12 and p.sum() == pytest.approx(1.0)


def test_circuit_opens_probes_and_closes() -> None:
    models = catalog(3)
    policy = TaskPolicy(circuit_consecutive_failures=3, circuit_cooldown_s=10.0, circuit_probe_share=0.1)
    state = new_state(models, policy)
    for t in range(3):
        state = update(state, models, policy, Outcome("m0", error="timeout", at_s=100.0 + t))
    assert state.circuit_state(105.0)["m0"] == "open"
    choice = choose(state, models, policy, None, np.random.default_rng(0), 105.0)
    assert choice.circuit_open == ("m0",) and choice.filtered["m0"] == "circuit_open"
    assert "m0" not in choice.fallbacks and choice.model != "m0"
    # after the cooldown it is half-open: a probe share, never a fallback
    p = propensities(state, models, policy, np.ones(3, bool), 115.0)
    assert p[0] == pytest.approx(0.1)
    rng = np.random.default_rng(1)
    picks = [choose(state, models, policy, None, rng, 115.0) for _ in range(2000)]
    assert all("m0" not in c.fallbacks for c in picks)
    assert abs(sum(c.model == "m0" for c in picks) / 2000 - 0.1) < 0.03
    failed = update(state, models, policy, Outcome("m0", error="timeout", at_s=116.0))
    assert failed.circuit_state(120.0)["m0"] == "open"
    healed = update(state, models, policy, Outcome("m0", quality=1.0, at_s=116.0))
    assert healed.circuit_state(116.0)["m0"] == "closed"


def test_error_rate_opens_circuit() -> None:
    models = catalog(2)
    policy = TaskPolicy(circuit_error_rate=0.5, circuit_consecutive_failures=100)
    state = new_state(models, policy)
    for t in range(40):
        state = update(
            state, models, policy, Outcome("m1", quality=1.0, error="timeout" if t % 3 else None, at_s=t)
        )
    assert state.circuit_state(40.0)["m1"] != "closed"  # opened (possibly half-open again by now)


def test_capacity_spills_to_next_model() -> None:
    models = (
        ModelSpec("fast", cost_per_call_usd=0.0001, quality_prior=(90, 10), rate_limit_rps=2.0),
        ModelSpec("slow", cost_per_call_usd=0.0001, quality_prior=(10, 90)),
    )
    policy = TaskPolicy()
    state = new_state(models, policy)
    capacity = CapacityTracker.for_models(models)
    rng = np.random.default_rng(0)
    picked = []
    for _ in range(4):
        choice = choose(state, models, policy, None, rng, 0.0, capacity=capacity)
        assert choice.model is not None
        capacity = capacity.acquire(choice.model, 0.0)
        picked.append(choice.model)
    assert picked == ["fast", "fast", "slow", "slow"]
    assert choose(state, models, policy, None, rng, 0.0, capacity=capacity).filtered == {
        "fast": "at_capacity"
    }
    refilled = choose(state, models, policy, None, rng, 1.0, capacity=capacity)
    assert refilled.filtered == {}  # the bucket refilled: "fast" is eligible again (0.98 of draws pick it)
    assert refilled.model == "fast" or (
        refilled.model == "slow" and refilled.propensity == pytest.approx(0.02)
    )
    per_worker = CapacityTracker.for_models(models, workers=2)
    assert per_worker.acquire("fast", 0.0).blocked(["fast", "slow"], 0.0).tolist() == [True, False]


def test_tokens_per_minute_bucket() -> None:
    models = (ModelSpec("a", cost_per_call_usd=0.01, tokens_per_minute=600),)
    capacity = CapacityTracker.for_models(models).record_tokens("a", 0.0, 600)
    assert capacity.blocked(["a"], 0.0).tolist() == [True]
    assert capacity.blocked(["a"], 6.0).tolist() == [False]  # 60 tokens refilled


def test_pin_none_eligible_and_fallbacks(policy: TaskPolicy, rng: np.random.Generator) -> None:
    models = catalog(4)
    state = new_state(models, policy)
    pinned = choose(state, models, policy, None, rng, 0.0, pinned="m3")
    assert pinned.model == "m3" and pinned.propensity == 1.0 and "m3" not in pinned.fallbacks
    assert len(pinned.fallbacks) == 3
    ignored = choose(state, models, policy, Constraints(deny=frozenset({"m3"})), rng, 0.0, pinned="m3")
    assert ignored.model != "m3"
    choice = choose(state, models, policy, None, rng, 0.0)
    assert choice.model not in choice.fallbacks and set(choice.fallbacks) | {choice.model} == set(state.names)
    values = [choice.sampled[n] for n in choice.fallbacks]
    assert values == sorted(values, reverse=True)
    impossible = Constraints(max_cost_usd=1e-9)
    relaxed = choose(state, models, policy, impossible, rng, 0.0)
    assert relaxed.model == "m0" and relaxed.no_eligible == "relaxed_to_cheapest"
    assert relaxed.filtered["m0"] == "max_cost"
    rejecting = dataclasses.replace(policy, when_none_eligible="reject")
    rejected = choose(state, models, rejecting, impossible, rng, 0.0)
    assert rejected.model is None and rejected.no_eligible == "rejected"
    vision = choose(state, models, policy, Constraints(capabilities=frozenset({"vision"})), rng, 0.0)
    assert vision.model is None and vision.filtered["m0"] == "capability"


def test_schedule_and_override_change_the_choice() -> None:
    models = (
        ModelSpec("cheap", cost_per_call_usd=0.001, quality_prior=(60, 40)),
        ModelSpec("premium", cost_per_call_usd=0.05, quality_prior=(90, 10)),
    )
    from banditroute.core import ScheduleEntry

    policy = TaskPolicy(lam=20.0, schedule=(ScheduleEntry(0, 6, lam=0.0),), new_model_floor=0.0)
    state = new_state(models, policy)
    day = shares(state, models, policy, n=300, now=12 * 3600.0)
    night = shares(state, models, policy, n=300, now=3 * 3600.0)
    assert day.get("cheap", 0) > 0.9 and night.get("premium", 0) > 0.9
    override = Constraints(objective_override={"lam": 0.0})
    assert shares(state, models, policy, n=300, now=12 * 3600.0, c=override).get("premium", 0) > 0.9


def test_choose_batch_matches_propensities(policy: TaskPolicy) -> None:
    models = catalog(5)
    state = new_state(models, policy)
    for t in range(200):
        state = update(state, models, policy, Outcome(f"m{t % 5}", quality=float(t % 5 >= 3), cost_usd=0.001))
    idx = choose_batch(state, models, policy, 200_000, np.random.default_rng(3), 0.0)
    freq = np.bincount(idx, minlength=5) / len(idx)
    p = propensities(state, models, policy, np.ones(5, bool), 0.0)
    assert np.allclose(freq, p, atol=0.03)
    assert np.array_equal(
        idx[:100], choose_batch(state, models, policy, 200_000, np.random.default_rng(3), 0.0)[:100]
    )


def test_propensities_are_cached_per_version(policy: TaskPolicy) -> None:
    models = catalog(3)
    state = new_state(models, policy)
    first = propensities(state, models, policy, ["m0", "m1"], 0.0)
    assert len(state.cache) == 1
    assert (
        np.array_equal(first, propensities(state, models, policy, ["m0", "m1"], 0.0))
        and len(state.cache) == 1
    )
    later = update(state, models, policy, Outcome("m0", quality=1.0))
    assert later.cache == {} and len(state.cache) == 1


def test_the_cheapest_fallback_stays_within_the_request_candidates(policy: TaskPolicy) -> None:
    """All candidates' circuits open (5 errors each): the request is rejected, not served by a cheaper model it
    did not allow; a cost limit no candidate meets relaxes to the cheapest candidate, not the cheapest model."""
    models = catalog(4)  # m0 is the cheapest
    state = new_state(models, policy)
    for model in ("m2", "m3"):
        for _ in range(policy.circuit_consecutive_failures):
            state = update(state, models, policy, Outcome(model, error="timeout", at_s=0.0))
    candidates = Constraints(allow=frozenset({"m2", "m3"}))
    choice = choose(state, models, policy, candidates, np.random.default_rng(0), 1.0)
    assert set(choice.circuit_open) == {"m2", "m3"}
    assert choice.model is None and choice.no_eligible == "rejected"
    assert choose(state, models, policy, None, np.random.default_rng(0), 1.0).model in {"m0", "m1"}
    fresh = new_state(models, policy)
    limited = Constraints(allow=frozenset({"m2", "m3"}), max_cost_usd=1e-9)
    relaxed = choose(fresh, models, policy, limited, np.random.default_rng(0), 1.0)
    assert relaxed.model == "m2" and relaxed.no_eligible == "relaxed_to_cheapest"
