"""The cost of a decision plan rebuilt after one outcome: ``python -m banditroute.bench.rebuild [--models 5 15]
[--reps N] [--draws N]``.

In a live worker feedback follows each decision, so a task type's next decision often finds a new state version
and pays ``build_plan`` and a first block (``core.block.Block``, ``FIRST_BLOCK`` rows) instead of a row of a
cached block. Per catalog size this times, on ``reps`` successive state versions (each one ``update`` after the
last, as the learner makes them): the whole rebuild, the Thompson Monte Carlo inside it
(``thompson_probabilities``, ``propensity_samples`` draws of every eligible model) and the first block, and
prints the medians in µs. Packaged policy defaults (Beta sampler, 4,000 draws; ``--draws`` sets
``propensity_samples``), the synthetic catalog of ``bench policy``, no constraints.

Then the same versions published through a :class:`~banditroute.routing.StateView` that prepares each new
version's plan on a thread of its own (``core.plan.prepare_plans``): ``offer`` until the plan is ready, and
what the first decision on the version then pays (``get_plan`` taking the prepared plan, and its first block).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from banditroute.bench.policy import _warm_state, synthetic_catalog
from banditroute.core.block import Block
from banditroute.core.learn import update
from banditroute.core.models import NO_CONSTRAINTS, Outcome, TaskPolicy
from banditroute.core.plan import FIRST_BLOCK, build_plan, get_plan
from banditroute.core.propensity import eligibility_seed, thompson_probabilities
from banditroute.core.state import TaskState
from banditroute.routing import StateView

NOW_S = 1_796_000_000.0


def _versions(models: int, reps: int, policy: TaskPolicy) -> tuple[Any, list[TaskState]]:
    catalog = synthetic_catalog(models)
    state = _warm_state(catalog, policy, np.linspace(0.55, 0.85, models), 100 * models)
    states = []
    for t in range(reps):
        spec = catalog[t % models]
        outcome = Outcome(spec.name, quality=1.0, cost_usd=spec.cost_per_call_usd, latency_ms=spec.latency_ms)
        state = update(state, catalog, policy, outcome)
        _ = state.stats  # materialised by the learner before the decide thread sees it (``shareable``)
        states.append(state)
    return catalog, states


def run_rebuild_bench(models: int = 15, reps: int = 200, draws: int | None = None) -> dict[str, Any]:
    """Median µs of a rebuild (plan + first block), of its Thompson Monte Carlo and of the first block."""
    policy = TaskPolicy() if draws is None else TaskPolicy(propensity_samples=draws)
    catalog, states = _versions(models, reps, policy)
    rng = np.random.default_rng(1)
    plan_s, mc_s, block_s = [], [], []
    for state in states:
        start = time.perf_counter()
        plan = build_plan(state, catalog, policy, NO_CONSTRAINTS, NOW_S)
        built = time.perf_counter()
        Block(plan, rng, FIRST_BLOCK, state.version)
        plan_s.append(built - start)
        block_s.append(time.perf_counter() - built)
        start = time.perf_counter()
        thompson_probabilities(
            plan.posterior, policy.propensity_samples, eligibility_seed(state.version, b"")
        )
        mc_s.append(time.perf_counter() - start)
    total = [p + b for p, b in zip(plan_s, block_s, strict=True)]
    prepare_s, taken_s = _prepared(catalog, policy, states)
    return {
        "models": models,
        "reps": reps,
        "sampler": policy.sampler,
        "propensity_samples": policy.propensity_samples,
        "rebuild_us": statistics.median(total) * 1e6,
        "build_plan_us": statistics.median(plan_s) * 1e6,
        "thompson_mc_us": statistics.median(mc_s) * 1e6,
        "first_block_us": statistics.median(block_s) * 1e6,
        "prepare_us": statistics.median(prepare_s) * 1e6 if prepare_s else float("nan"),
        "taken_us": statistics.median(taken_s) * 1e6 if taken_s else float("nan"),
    }


def _prepared(catalog: Any, policy: TaskPolicy, states: list[TaskState]) -> tuple[list[float], list[float]]:
    """Per version: the publisher's ``offer`` until its plan is prepared (on the view's preparing thread) and the
    first decision's plan and block."""
    view = StateView(clock=lambda: NOW_S)
    rng = np.random.default_rng(1)
    prepare_s, taken_s = [], []
    for state in states:
        start = time.perf_counter()
        view.offer("bench", state)
        if view.preparer is not None:
            view.preparer.wait()
        offered = time.perf_counter()
        plan = get_plan(state, catalog, policy, NO_CONSTRAINTS, NOW_S)
        Block(plan, rng, FIRST_BLOCK, state.version)
        taken_s.append(time.perf_counter() - offered)
        prepare_s.append(offered - start)
    view.close()  # its plans' thread, rather than leave it idle for 30 s
    return prepare_s[1:], taken_s[1:]  # the first version has no predecessor decided on


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="The cost of a decision plan rebuilt after one outcome, per catalog size: median µs of the "
        "rebuild (build_plan and the first block), of its Thompson Monte Carlo and of the first block; then, with "
        "each version's plan prepared off the decision's way (StateView.offer), the time until it is ready and what the first "
        "decision on the version pays (nan with --reps 1: the first version has no predecessor decided on)."
    )
    parser.add_argument(
        "--models", type=_at_least(1), nargs="+", default=[5, 15], help="catalog sizes, one run each"
    )
    parser.add_argument("--reps", type=_at_least(1), default=200, help="state versions timed (the median)")
    parser.add_argument(
        "--draws", type=_at_least(1), default=None, help="propensity_samples (default: the policy's)"
    )
    args = parser.parse_args(argv)
    for models in args.models:
        r = run_rebuild_bench(models, args.reps, args.draws)
        print(
            f"models={r['models']} sampler={r['sampler']} draws={r['propensity_samples']} reps={r['reps']}: "
            f"rebuild {r['rebuild_us']:.0f} µs (build_plan {r['build_plan_us']:.0f}, of which the Thompson "
            f"Monte Carlo ~{r['thompson_mc_us']:.0f}; first block {r['first_block_us']:.0f}); prepared off the "
            f"decision's way: offer until ready {r['prepare_us']:.0f} µs, then the first decision's plan and block "
            f"{r['taken_us']:.0f} µs"
        )


if __name__ == "__main__":
    main()
