"""The hot paths: pre-drawn decision blocks in ``choose`` and the copy-on-write ``update``."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from banditroute.core import (
    Constraints,
    ModelSpec,
    Outcome,
    TaskPolicy,
    choose,
    new_state,
    update,
    update_many,
)
from banditroute.core.choose import FIRST_BLOCK, MAX_BLOCK, get_plan
from banditroute.core.models import SampledUtilities

from .conftest import catalog

MODELS = catalog(6)
NAMES = [m.name for m in MODELS]


def warm(policy: TaskPolicy, n: int = 300, seed: int = 5):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    state = new_state(MODELS, policy)
    for t in range(n):
        i = int(rng.integers(len(MODELS)))
        state = update(
            state,
            MODELS,
            policy,
            Outcome(NAMES[i], quality=float(rng.random() < 0.4 + 0.1 * i), cost_usd=0.001, at_s=float(t)),
        )
    return state


def test_same_seed_same_sequence_same_choices() -> None:
    policy = TaskPolicy()
    state = warm(policy)
    runs = []
    for _ in range(2):
        fresh = update_many(state, MODELS, policy, [])  # same statistics, a new object with an empty cache
        rng = np.random.default_rng(99)
        deny = Constraints(deny=frozenset({"m5"}))
        runs.append(
            [
                choose(
                    fresh,
                    MODELS,
                    policy,
                    deny if t % 7 == 0 else None,
                    rng,
                    10.0,
                    pinned="m1" if t % 11 else None,
                )
                for t in range(2 * MAX_BLOCK + 3)
            ]
        )
    assert runs[0] == runs[1]
    # a second generator with the same seed on the *same* state object gets its own draws, not the leftovers
    a = choose(state, MODELS, policy, None, np.random.default_rng(3), 10.0)
    b = choose(state, MODELS, policy, None, np.random.default_rng(3), 10.0)
    assert a == b


def test_block_rows_are_consistent_decisions() -> None:
    policy = TaskPolicy(min_share={"m0": 0.2})  # guards active: the coupling redirects some winners
    state = warm(policy)
    rng = np.random.default_rng(0)
    plan = get_plan(state, MODELS, policy, None, 10.0)
    for _ in range(3 * MAX_BLOCK):
        choice = choose(state, MODELS, policy, None, rng, 10.0)
        sampled = dict(choice.sampled.items())
        assert set(sampled) == set(plan.names) and choice.model in sampled
        by_utility = sorted(sampled, key=sampled.__getitem__, reverse=True)
        assert choice.fallbacks == tuple(n for n in by_utility if n != choice.model)
        assert choice.propensity == float(plan.target[plan.names.index(choice.model)])
        assert choice.explored == (choice.model != plan.best)
        assert choice.state_version == state.version and choice.means is plan.means
    assert plan.block is not None and plan.block.size == MAX_BLOCK and plan.block_size == MAX_BLOCK


@pytest.mark.parametrize("count", [1, 2, 3, 6])
@pytest.mark.parametrize("guarded", [False, True])
def test_block_rows_are_each_rows_own_decision(count: int, guarded: bool) -> None:
    """Rows made once per kind (chosen model and fallback order) and shared are each row's own decision: the
    model its draws chose, the others in the order of its draws, the model's target share."""
    models = MODELS[:count]
    names = [m.name for m in models]
    policy = TaskPolicy(min_share={names[-1]: 0.3}) if guarded else TaskPolicy()
    state = warm(policy)
    state = update_many(state, models, policy, [])
    rng = np.random.default_rng(count)
    plan = get_plan(state, models, policy, None, 10.0)
    for _ in range(2 * MAX_BLOCK):
        choose(state, models, policy, None, rng, 10.0)
    block = plan.block
    assert block is not None and block.size == MAX_BLOCK
    order = np.argsort(-block.z, axis=1)
    for row, ranked in zip(block.rows, order.tolist(), strict=True):
        model, fallbacks, propensity, explored = row
        assert fallbacks == tuple(plan.names[j] for j in ranked if plan.names[j] != model)
        assert propensity == float(plan.target[plan.names.index(model)])
        assert explored == (model != plan.best)
    assert len({id(row) for row in block.rows}) == len(set(block.rows))  # one object per kind


def test_blocks_start_small_on_a_new_state() -> None:
    policy = TaskPolicy()
    state = warm(policy, n=20)
    choose(state, MODELS, policy, None, np.random.default_rng(0), 0.0)
    plan = get_plan(state, MODELS, policy, None, 0.0)
    assert plan.block is not None and plan.block.size == FIRST_BLOCK


def test_only_half_open_probes_left() -> None:
    models = catalog(2)
    policy = TaskPolicy(circuit_consecutive_failures=2, circuit_cooldown_s=10.0)
    state = new_state(models, policy)
    for name in ("m0", "m1"):
        for t in range(2):
            state = update(state, models, policy, Outcome(name, error="timeout", at_s=float(t)))
    rng = np.random.default_rng(0)
    picks = [choose(state, models, policy, None, rng, 50.0) for _ in range(2000)]
    assert all(c.propensity == 0.5 and c.fallbacks == () and dict(c.sampled) == {} for c in picks)
    share = sum(c.model == "m0" for c in picks) / len(picks)
    assert abs(share - 0.5) < 0.05


def test_sampled_view_behaves_like_a_dict() -> None:
    draws = np.array([[0.25, -1.5], [2.0, 3.0]])
    view = SampledUtilities(("a", "b"), {"a": 0, "b": 1}, draws, 1)
    assert view == {"a": 2.0, "b": 3.0} and {"a": 2.0, "b": 3.0} == view
    assert view["b"] == 3.0 and type(view["b"]) is float and "a" in view and "z" not in view
    assert list(view) == ["a", "b"] and len(view) == 2 and view.get("z", 7.0) == 7.0
    assert repr(view) == "{'a': 2.0, 'b': 3.0}"
    assert pickle.loads(pickle.dumps(view)) == {"a": 2.0, "b": 3.0}
    with pytest.raises(KeyError):
        view["z"]


def test_copy_on_write_update_keeps_every_state_independent() -> None:
    policy = TaskPolicy(half_life=50.0)
    parent = warm(policy, n=50)
    before = parent.stats.copy()
    child = update(parent, MODELS, policy, Outcome("m2", quality=1.0, cost_usd=0.002, at_s=100.0))
    grandchild = update(child, MODELS, policy, Outcome("m3", quality=0.0, at_s=101.0))
    sibling = update(parent, MODELS, policy, Outcome("m2", quality=0.0, at_s=100.0))
    assert np.array_equal(parent.stats, before)
    # each state materialises its own matrix, equal to applying the same outcomes to a full copy
    reference = update_many(parent, MODELS, policy, [Outcome("m2", quality=1.0, cost_usd=0.002, at_s=100.0)])
    assert np.array_equal(child.stats, reference.stats)
    assert child.stats is not parent.stats and grandchild.stats is not child.stats
    grandchild.stats[:] = -1.0  # even a caller breaking the immutability rule only damages its own copy
    assert np.array_equal(parent.stats, before) and np.array_equal(child.stats, reference.stats)
    assert sibling.stats[2, 2] < child.stats[2, 2]


def test_copy_on_write_rescale_and_read_only_base() -> None:
    policy = TaskPolicy(half_life=2.0, change_window=None)  # scale underflows after ~800 events
    state = new_state(MODELS, policy)
    folded = False
    for t in range(1200):
        state = update(state, MODELS, policy, Outcome(NAMES[t % 6], quality=1.0, at_s=float(t)))
        folded = folded or state.scale == 1.0
    assert folded and np.all(np.isfinite(state.stats))
    g = 0.5 ** (1 / 2.0)  # model m was last seen 5 - m events ago and every 6 events before that
    assert state.alpha == pytest.approx([1.0 + g ** (5 - m) / (1.0 - g**6) for m in range(6)], rel=1e-9)
    # a decoded state's matrix is a read-only view of the bytes: updates must still work
    from banditroute.core import decode_state, encode_state

    decoded = decode_state(encode_state(state))
    again = update(decoded, MODELS, policy, Outcome("m0", quality=0.0, at_s=2000.0))
    assert again.stats[0, 3] > decoded.stats[0, 3]


def test_unknown_model_names_and_spec_models() -> None:
    models = (*MODELS, ModelSpec("extra", cost_per_call_usd=0.5))
    policy = TaskPolicy()
    state = new_state(MODELS, policy)
    after = update(state, models, policy, Outcome("extra", quality=1.0, at_s=1.0), source=(0, 4))
    assert after.version == 1 and after.events == 1 and dict(after.applied) == {0: 4}
    assert np.array_equal(after.stats, state.stats) and after.stats is not state.stats


def cyclic_garbage_left() -> list[str]:
    """Decide and learn in turn with the cyclic collector off, then collect: the names of the policy core's
    types (``banditroute.core``) found in cycles. Run by the test below in an interpreter of its own."""
    import gc

    policy = TaskPolicy()
    state = warm(policy, n=50)
    rng = np.random.default_rng(7)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    for t in range(40):
        for _ in range(20):
            choose(state, MODELS, policy, None, rng, 10.0)
        state = update(state, MODELS, policy, Outcome("m2", quality=1.0, cost_usd=0.001, at_s=1e3 + t))
    gc.collect()
    return sorted(
        {type(o).__name__ for o in gc.garbage if type(o).__module__.startswith("banditroute.core.")}
    )


def test_replaced_states_leave_no_cyclic_garbage() -> None:
    """Deciding and learning in turn leaves nothing for the cyclic collector: a replaced state's plans and their
    pre-drawn blocks (hundreds of tuples each) are freed by reference counting at once. The worker runs the
    collector rarely, so a cycle here kept every replaced plan alive between its runs.

    In an interpreter of its own: in the suite's process, another test's thread still ending (a routing
    PlanPreparer deciding after its test, an exception's traceback) can leave cycles holding the core's objects in
    this window, which failed the test under load (2026-12-03, load 9)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import json; from tests.core.test_fast_paths import cyclic_garbage_left as f; print(json.dumps(f()))"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_block_cap_holds_the_draws_of_a_block_bounded() -> None:
    """Few models get MAX_BLOCK rows; many get fewer, so a block's draws stay within MAX_BLOCK_CELLS (down to
    MIN_CAP rows, the cap before it was raised)."""
    from banditroute.core.block import MAX_BLOCK_CELLS, MIN_CAP, block_cap

    assert block_cap(0) == block_cap(1) == block_cap(3) == MAX_BLOCK
    for k in range(1, 200):
        cap = block_cap(k)
        assert MIN_CAP <= cap <= MAX_BLOCK
        assert cap * k <= MAX_BLOCK_CELLS or cap == MIN_CAP
    assert block_cap(100) == MIN_CAP
