"""Plans and pre-drawn blocks are cached per thread: deciding on a shared state writes nothing another thread
reads (issue #14: nothing on the decide thread writes shared state)."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import numpy as np

from banditroute.core import Outcome, TaskPolicy, TaskState, choose, new_state, update
from banditroute.routing import StateView

from .conftest import catalog


def _learnt(policy: TaskPolicy) -> TaskState:
    models = catalog(4)
    state = new_state(models, policy)
    for t in range(60):
        state = update(state, models, policy, Outcome(f"m{t % 4}", quality=float(t % 3 == 0), cost_usd=0.001))
    return state


def _in_thread(work: Any) -> Any:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    thread.join(30)
    return out[0]


def test_deciding_on_a_published_state_writes_nothing_other_threads_see(policy: TaskPolicy) -> None:
    models = catalog(4)
    view = StateView()
    view.offer("chat", _learnt(policy))  # published as the learner does: made shareable on the way in
    state = view.get("chat")
    assert state is not None
    before = {name: id(value) for name, value in state.__dict__.items()}

    def decide() -> tuple[int, list[str | None]]:
        rng = np.random.default_rng(7)
        picks = [choose(state, models, policy, None, rng, 0.0).model for _ in range(500)]
        return len(state.cache), picks

    cached, picks = _in_thread(decide)
    assert cached >= 1 and len(set(picks)) >= 2  # the deciding thread planned and drew from its own cache
    assert {
        name: id(value) for name, value in state.__dict__.items()
    } == before  # the state object: untouched
    assert state.cache == {}  # this thread sees none of it
    again = _in_thread(decide)
    assert again[1] == picks  # a fresh thread plans afresh and, with the same seed, decides the same


def test_two_threads_on_one_state_decide_as_each_would_alone(policy: TaskPolicy) -> None:
    models = catalog(4)
    state = _learnt(policy)

    def alone(seed: int, on: TaskState) -> list[str | None]:
        rng = np.random.default_rng(seed)
        return [choose(on, models, policy, None, rng, 0.0).model for _ in range(3000)]

    expected = {seed: alone(seed, _learnt(policy)) for seed in (1, 2)}
    results: dict[int, list[str | None]] = {}
    threads = [
        threading.Thread(target=lambda s=seed: results.__setitem__(s, alone(s, state))) for seed in (1, 2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == expected


def test_a_state_pickles_without_its_cache(policy: TaskPolicy) -> None:
    models = catalog(4)
    state = _learnt(policy)
    choose(state, models, policy, None, np.random.default_rng(1), 0.0)
    assert state.cache
    copy = pickle.loads(pickle.dumps(state))
    assert copy.cache == {} and copy.version == state.version
    assert np.array_equal(copy.stats, state.stats)
