"""The robust mixture prior (core.robust) in a replay: a lock-out of the pooled prior, undone."""

from __future__ import annotations

from banditroute.sim.replay import default_setup, replay
from banditroute.sim.suite import VARIANTS, load_source


def test_a_model_the_pooled_prior_locks_out_is_found_under_the_robust_mixture() -> None:
    """family:2, λ = 50, seed 0 (docs/benchmarks.md, gen14): m07 is best in task2, which is easier for every
    model; the pooled prior (its mean over task0 and task1) locks it out of task2."""
    table = load_source("synthetic:family:2")
    shares = {}
    for weight in (1.0, 0.8):
        setup = default_setup(table, 50.0, pool_robust_weight=weight, exploration=1.0)  # as measured
        result = replay(table, lam=50.0, requests=20_000, seed=0, policies=["thompson"], setup=setup)
        shares[weight] = result.summary(result.runs[0])["traffic_share"]["task2"]["m07"]
    assert shares[1.0] < 0.1, "the pooled prior no longer locks m07 out here: this case tests nothing"
    assert shares[0.8] > 0.5


def test_the_suite_names_the_robust_variants() -> None:
    assert VARIANTS["thompson_pool_robust80"].setup == {"pool_robust_weight": 0.8}
    assert VARIANTS["thompson_pool_robust50"].setup == {"pool_robust_weight": 0.5}
