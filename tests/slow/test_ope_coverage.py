"""DONE-WHEN of issue 7: OPE confidence intervals cover the true value of a stationary target policy.

The logging policy is ε-greedy (learning, exact propensities) in the default scenario without drift; the
target is the cost-aware Thompson sampler frozen at a warm-started state, whose value is computed exactly from
the synthetic world. Over 40 seeds each estimator's 95 % interval must contain the truth at least 90 % of
the time.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from banditroute.core import propensities
from banditroute.sim.ope import evaluate_policy, steps_from_simulation, true_value
from banditroute.sim.scenario import Scenario, SyntheticWorld
from banditroute.sim.simulator import simulate_in_process

DEFAULT = Path(__file__).parents[2] / "config" / "scenarios" / "default.yaml"
SEEDS = range(40)


@pytest.mark.slow
def test_ope_intervals_cover_the_truth() -> None:
    scenario = dataclasses.replace(Scenario.load(DEFAULT), drift=())
    world = SyntheticWorld(scenario)
    tp = scenario.task_policy(half_life=None)
    catalog = scenario.catalog()
    target_states = simulate_in_process(world, "thompson", 300, seed=999, task_policy=tp).states
    probs = {t: propensities(s, catalog, tp, list(s.names), 0.0) for t, s in target_states.items()}
    truth = true_value(world, probs, tp.lam)
    covered = {"ips": 0, "snips": 0, "dr": 0}
    for seed in SEEDS:
        sim = simulate_in_process(world, "epsilon_greedy", 6000, seed=seed, task_policy=tp)
        result = evaluate_policy(
            steps_from_simulation(sim), catalog, tp, learn=False, initial_states=target_states
        )
        for key in covered:
            covered[key] += getattr(result, key).covers(truth)
    rates = {k: v / len(SEEDS) for k, v in covered.items()}
    print("coverage", rates, "truth", truth)
    assert all(rate >= 0.9 for rate in rates.values()), rates
