"""A new state version's plans built by its publisher (``core.plan.prepare_plans``) and taken by the deciding
thread: the decisions and propensities are the ones the deciding thread would make by building them itself."""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from banditroute.core import Constraints, ModelSpec, Outcome, TaskPolicy, TaskState, choose, new_state, update
from banditroute.core.choose import propensities
from banditroute.core.plan import get_plan
from banditroute.core.state import CIRCUIT, OPEN_UNTIL, replace_state
from banditroute.routing import StateView

from .conftest import catalog

NOW = 1_796_000_000.0
ALLOW = Constraints(allow=frozenset({"m0", "m1", "m2"}))
NORMAL = TaskPolicy(sampler="normal")


def _versions(models: Sequence[ModelSpec], policy: TaskPolicy, count: int) -> list[TaskState]:
    """Successive versions of one task type, as the learner makes them; m1's circuit opens at version 6 until
    2 s later (decisions below move 0.5 s per version: open, then half-open)."""
    state = new_state(models, policy)
    for t in range(40):
        state = update(state, models, policy, Outcome(f"m{t % 4}", quality=float(t % 3 == 0), cost_usd=0.001))
    out = []
    for t in range(count):
        state = update(state, models, policy, Outcome(f"m{t % 4}", quality=float(t % 2), cost_usd=0.002))
        if t >= 6:
            stats = state.stats.copy()
            stats[1, CIRCUIT], stats[1, OPEN_UNTIL] = 1.0, NOW + 3.0 + 2.0
            state = replace_state(state, stats=stats)
        out.append(state)
    return out


def _summary(choice: Any) -> tuple[Any, ...]:
    return (
        choice.model,
        choice.fallbacks,
        choice.propensity,
        choice.explored,
        dict(choice.means),
        dict(choice.filtered),
        choice.circuit_open,
        choice.state_version,
        choice.sampled.to_dict() if choice.sampled else {},
    )


def _run(
    prepare: bool, publish: Callable[[Callable[[], Any]], Any] = lambda f: f(), wait: bool = True
) -> dict[str, Any]:
    """Publish each version (on this thread or through ``publish``), wait for its plans to be prepared (unless
    not ``wait``), then decide on it: plain requests, an allow-list, a pinned model, a second policy with its
    own rng, and propensities, at a time 0.1 s after."""
    models = catalog(4)
    policy = TaskPolicy()
    clock = [NOW]
    view = StateView(prepare=prepare, clock=lambda: clock[0])
    rng, other_rng = np.random.default_rng(11), np.random.default_rng(12)
    decisions: list[tuple[Any, ...]] = []
    shares: list[list[float]] = []
    left: list[int] = []
    for t, version in enumerate(_versions(models, policy, 14)):
        clock[0] = NOW + 0.5 * t
        publish(partial(view.offer, "chat", version))
        if view.preparer is not None and wait:
            assert view.preparer.wait()
        state = view.get("chat")
        assert state is version
        now = clock[0] + 0.1
        for _ in range(3):
            decisions.append(_summary(choose(state, models, policy, None, rng, now)))
            decisions.append(_summary(choose(state, models, policy, ALLOW, rng, now)))
            decisions.append(_summary(choose(state, models, NORMAL, None, other_rng, now)))
        decisions.append(_summary(choose(state, models, policy, None, rng, now, pinned="m3")))
        shares.append(propensities(state, models, policy, ["m0", "m2", "m3"], now).tolist())
        assert state.handoff is not None
        left.append(len(state.handoff.ready))
    built = 0 if view.preparer is None else view.preparer.built
    assert view.close()
    return {"decisions": decisions, "shares": shares, "prepared": built, "left": left}


def _in_thread(work: Callable[[], Any]) -> Any:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    thread.join(30)
    return out[0]


def test_prepared_plans_give_the_decisions_and_propensities_of_plans_built_on_demand() -> None:
    built = _run(prepare=False)
    prepared = _run(prepare=True)
    assert built["prepared"] == 0
    # four shapes a version (plain, allow-list, the second policy, the propensities' allow-list) from the second
    # version on, each taken by the first decision of its shape
    assert prepared["prepared"] == 4 * 13
    assert prepared["left"] == [0] * 14
    assert prepared["decisions"] == built["decisions"]
    assert prepared["shares"] == built["shares"]
    models = {d[0] for d in built["decisions"]}
    assert len(models) >= 3 and any(d[6] for d in built["decisions"])  # varied, and the circuit was open


def test_a_publisher_on_another_thread_changes_nothing() -> None:
    built = _run(prepare=False)
    prepared = _run(prepare=True, publish=_in_thread)  # the learner's thread publishes, this one decides
    assert prepared["prepared"] == 4 * 13 and prepared["left"] == [0] * 14
    assert prepared["decisions"] == built["decisions"]
    assert prepared["shares"] == built["shares"]


def test_decisions_that_do_not_wait_for_the_preparer_are_the_same() -> None:
    built = _run(prepare=False)
    racing = _run(prepare=True, wait=False)  # each plan taken when ready, else built by the decision
    assert racing["decisions"] == built["decisions"]
    assert racing["shares"] == built["shares"]


def test_the_preparing_thread_ends_when_idle_and_starts_again() -> None:
    models = catalog(4)
    policy = TaskPolicy()
    first, second, third = _versions(models, policy, 3)
    view = StateView(clock=lambda: NOW)
    assert view.preparer is not None
    view.preparer.IDLE_S = 0.05
    for older, newer in ((first, second), (second, third)):
        view.offer("chat", older)
        get_plan(older, models, policy, None, NOW)
        view.offer("chat", newer)
        assert view.preparer.wait()
        assert newer.handoff is not None and len(newer.handoff.ready) == 1
        deadline = time.monotonic() + 10.0
        while view.preparer.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not view.preparer.running
    assert view.preparer.built == 2


def test_a_prepared_plan_is_left_for_other_objects_or_an_earlier_time() -> None:
    models = catalog(4)
    policy = TaskPolicy()
    first, second = _versions(models, policy, 2)
    view = StateView(clock=lambda: NOW + 10.0)
    view.offer("chat", first)
    get_plan(first, models, policy, None, NOW + 10.0)  # a decision on the first version notes its shape
    view.offer("chat", second)
    assert view.preparer is not None and view.preparer.wait()
    assert view.preparer.built == 1 and second.handoff is not None
    (ready,) = second.handoff.ready.values()
    early = get_plan(second, models, policy, None, NOW + 9.0)  # before the time it was prepared at
    assert early is not ready and early.since_s == NOW + 9.0
    assert not second.handoff.ready  # taken out, and not kept: this thread built its own for that time
    assert np.array_equal(early.thompson, ready.thompson)  # the same Monte Carlo either way

    third = update(second, models, policy, Outcome("m0", quality=1.0))
    view.offer("chat", third)
    assert view.preparer.wait()
    assert third.handoff is not None and len(third.handoff.ready) == 1
    copy = tuple(models)  # a new snapshot's catalog: equal models, another object
    assert get_plan(third, list(copy), policy, None, NOW + 11.0) is not next(
        iter(third.handoff.ready.values())
    )
    assert len(third.handoff.ready) == 1  # another shape's key: the prepared plan stays for its own
    assert view.close()


def test_stop_ends_the_preparing_thread_at_once_and_a_new_version_starts_it_again() -> None:
    models = catalog(4)
    policy = TaskPolicy()
    first, second, third = _versions(models, policy, 3)
    view = StateView(clock=lambda: NOW)
    assert view.preparer is not None
    assert view.close()  # no thread yet
    view.offer("chat", first)
    get_plan(first, models, policy, None, NOW)
    view.offer("chat", second)
    assert view.preparer.running
    start = time.monotonic()
    assert view.close(timeout_s=10.0)
    assert not view.preparer.running and time.monotonic() - start < 5.0  # not IDLE_S (30 s) later
    assert view.preparer.built == 1 and view.preparer.wait(0.0)  # the version queued was prepared first
    get_plan(second, models, policy, None, NOW)
    view.offer("chat", third)
    assert view.preparer.running and view.preparer.wait()
    assert view.preparer.built == 2 and third.handoff is not None and len(third.handoff.ready) == 1
    assert view.close() and not view.preparer.running


def test_nothing_is_prepared_after_a_version_nobody_decided_on() -> None:
    models = catalog(4)
    policy = TaskPolicy()
    view = StateView(clock=lambda: NOW)
    for version in _versions(models, policy, 3):
        view.offer("chat", version)
    assert view.preparer is not None and view.preparer.wait() and view.preparer.built == 0


def test_copies_of_a_state_leave_its_handoff_behind() -> None:
    models = catalog(4)
    policy = TaskPolicy()
    (state,) = _versions(models, policy, 1)
    view = StateView(clock=lambda: NOW)
    view.offer("chat", state)
    get_plan(state, models, policy, None, NOW)
    assert state.handoff is not None and state.handoff.shapes
    assert pickle.loads(pickle.dumps(state)).handoff is None
    assert replace_state(state, budget_offset_usd=1.0).handoff is None
