"""Pooling with each model's between-task variance moderated towards the common one (core.pooling
"dl_shared") in a replay: models the DerSimonian-Laird pooled prior locks out of a task type are found."""

from __future__ import annotations

import pytest

from banditroute.sim.replay import default_setup, replay
from banditroute.sim.suite import VARIANTS, load_source

# the cases were found with draws of the posterior's own spread (other seeds lock out at the default's)
_MEASURED_AT = 1.0


@pytest.mark.parametrize(
    ("member", "lam", "seed", "model"),
    [
        # m07 is best in task2, which is easier for every model: its prior there is its mean over task0/task1
        ("family:2", 50.0, 0, "m07"),
        # m03 is task2's specialist: task0 and task1 agree on its weakness
        ("family:1", 5.0, 5, "m03"),
    ],
)
def test_a_model_the_pooled_prior_locks_out_is_found_with_the_shared_tau2(
    member: str, lam: float, seed: int, model: str
) -> None:
    """docs/benchmarks.md (gen14, learn19): the worst seeds of family:2 λ = 50 and family:1 λ = 5."""
    table = load_source(f"synthetic:{member}")
    shares = {}
    for pooling in ("eb:dl", "eb:dl_shared"):
        setup = default_setup(table, lam, pooling=pooling, exploration=_MEASURED_AT)
        result = replay(table, lam=lam, requests=20_000, seed=seed, policies=["thompson"], setup=setup)
        shares[pooling] = result.summary(result.runs[0])["traffic_share"]["task2"][model]
    assert shares["eb:dl"] < 0.1, f"dl no longer locks {model} out here: this case tests nothing"
    assert shares["eb:dl_shared"] > 0.5, shares


def test_the_suite_names_the_shared_variant() -> None:
    assert VARIANTS["thompson_pool_shared"].setup == {"pooling": "eb:dl_shared"}
