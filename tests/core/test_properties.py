"""Hypothesis properties of the core: counting, determinism, propensities, constraints, codec."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from banditroute.core import (
    Constraints,
    Outcome,
    TaskPolicy,
    choose,
    decode_state,
    encode_state,
    new_state,
    propensities,
    update,
    update_many,
)

from .conftest import catalog

MODELS = catalog(6)
NAMES = [m.name for m in MODELS]
NO_DECAY = TaskPolicy(half_life=None, circuit_consecutive_failures=10**6, circuit_error_rate=1.0)
SETTINGS = settings(max_examples=40, deadline=None)

outcomes = st.builds(
    Outcome,
    model=st.sampled_from(NAMES),
    quality=st.one_of(st.none(), st.floats(0, 1)),
    cost_usd=st.one_of(st.none(), st.floats(0, 0.1)),
    latency_ms=st.one_of(st.none(), st.floats(0, 5000)),
    error=st.one_of(st.none(), st.sampled_from(["timeout", "provider_error"])),
    at_s=st.floats(0, 1e6),
    served=st.booleans(),
)


@SETTINGS
@given(st.lists(outcomes, max_size=30))
def test_posterior_counts_match_outcomes(batch: list[Outcome]) -> None:
    state = new_state(MODELS, NO_DECAY)
    for i, outcome in enumerate(batch):
        previous = state
        state = update(state, MODELS, NO_DECAY, outcome, source=(i % 3, i))
        assert state.version == previous.version + 1
        assert previous.version == i  # the input was not mutated
    for j, name in enumerate(NAMES):
        mine = [o for o in batch if o.model == name]
        scores = [
            o.quality if o.quality is not None else 0.0 for o in mine if o.quality is not None or o.error
        ]
        assert (
            state.alpha[j] - 1.0 == np.float64(np.sum(scores)) or abs(state.alpha[j] - 1 - sum(scores)) < 1e-9
        )
        assert abs(state.beta[j] - 1.0 - sum(1 - s for s in scores)) < 1e-9
        assert state.observations[j] == len(mine)
    assert state.events == len(batch)
    for p in range(3):
        offsets = [i for i in range(len(batch)) if i % 3 == p]
        if offsets:
            assert state.applied[p] == max(offsets)
    assert (
        update_many(new_state(MODELS, NO_DECAY), MODELS, NO_DECAY, batch).stats.tolist()
        == state.stats.tolist()
    )


@SETTINGS
@given(st.lists(outcomes, max_size=20), st.integers(0, 2**32))
def test_same_seed_same_choice_and_codec_round_trip(batch: list[Outcome], seed: int) -> None:
    policy = TaskPolicy()
    state = update_many(
        new_state(MODELS, policy), MODELS, policy, batch, sources=[(1, i) for i in range(len(batch))]
    )
    decoded = decode_state(encode_state(state))
    assert decoded.names == state.names and decoded.version == state.version
    assert decoded.applied == dict(state.applied)
    assert np.array_equal(decoded.stats, state.stats)
    assert (decoded.scale, decoded.dual, decoded.events) == (state.scale, state.dual, state.events)
    a = choose(state, MODELS, policy, None, np.random.default_rng(seed), 100.0)
    b = choose(decoded, MODELS, policy, None, np.random.default_rng(seed), 100.0)
    assert a == b


constraints = st.builds(
    Constraints,
    allow=st.one_of(st.none(), st.frozensets(st.sampled_from(NAMES))),
    deny=st.frozensets(st.sampled_from(NAMES), max_size=3),
    max_cost_usd=st.one_of(st.none(), st.floats(0.0005, 0.007)),
    max_latency_ms=st.one_of(st.none(), st.floats(100, 800)),
)


@SETTINGS
@given(constraints, st.integers(0, 2**16), st.lists(st.sampled_from(NAMES), max_size=3))
def test_constraints_and_open_circuits_are_respected(c: Constraints, seed: int, broken: list[str]) -> None:
    policy = TaskPolicy(when_none_eligible="reject", circuit_cooldown_s=1000.0)
    state = new_state(MODELS, policy)
    for name in broken:
        for _ in range(policy.circuit_consecutive_failures):
            state = update(state, MODELS, policy, Outcome(name, error="timeout", at_s=0.0))
    rng = np.random.default_rng(seed)
    for _ in range(20):
        choice = choose(state, MODELS, policy, c, rng, 10.0)
        assert set(choice.circuit_open) == set(broken)
        for name in ([choice.model] if choice.model else []) + list(choice.fallbacks):
            j = NAMES.index(name)
            assert name not in c.deny and name not in broken
            assert c.allow is None or name in c.allow
            assert c.max_cost_usd is None or state.mean_cost_usd[j] <= c.max_cost_usd
            assert c.max_latency_ms is None or state.mean_latency_ms[j] <= c.max_latency_ms
        if choice.model is None:
            assert choice.no_eligible == "rejected" and choice.propensity == 0.0


@settings(max_examples=10, deadline=None)
@given(st.lists(outcomes, max_size=40), st.frozensets(st.sampled_from(NAMES), min_size=1))
def test_propensities_sum_to_one_and_match_frequencies(batch: list[Outcome], allowed: frozenset[str]) -> None:
    policy = TaskPolicy(half_life=None, circuit_consecutive_failures=10**6, circuit_error_rate=1.0)
    state = update_many(new_state(MODELS, policy), MODELS, policy, batch)
    mask = np.array([n in allowed for n in NAMES])
    p = propensities(state, MODELS, policy, mask, 0.0)
    assert abs(p.sum() - 1.0) < 1e-9 and np.all(p[~mask] == 0)
    rng = np.random.default_rng(1)
    n = 3000
    counts = dict.fromkeys(NAMES, 0)
    c = Constraints(allow=allowed)
    for _ in range(n):
        choice = choose(state, MODELS, policy, c, rng, 0.0)
        assert choice.model is not None
        counts[choice.model] += 1
        assert choice.propensity == p[NAMES.index(choice.model)]
    for j, name in enumerate(NAMES):
        # empirical frequency vs propensity: sampling error of both (n and propensity_samples) at 5 sigma
        se = np.sqrt(p[j] * (1 - p[j]) * (1 / n + 1 / policy.propensity_samples)) + 1e-3
        assert abs(counts[name] / n - p[j]) < 5 * se, (name, counts[name] / n, p[j])
