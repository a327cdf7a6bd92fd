"""learn20's candidates for the pooled prior's lock-out with three task types (core.pooling
"posterior_shared", "dl_offset_shared") in a replay: the models DerSimonian-Laird's prior locks out of a task type
in gen14's worst seeds are found."""

from __future__ import annotations

import pytest

from banditroute.sim.replay import default_setup, replay
from banditroute.sim.suite import VARIANTS, load_source

CASES = [
    # m07 is best in task2, which is easier for every model: its prior there is its mean over task0/task1
    ("posterior_shared", "family:2", 50.0, 0, "m07"),
    ("dl_offset_shared", "family:2", 50.0, 0, "m07"),
    # m03 is task2's specialist: task0 and task1 agree on its weakness (no offset explains it: dl_offset_shared
    # gives m03 35 % of task2 here, not asserted)
    ("posterior_shared", "family:1", 5.0, 5, "m03"),
]


@pytest.mark.parametrize(("method", "member", "lam", "seed", "model"), CASES)
def test_a_model_the_pooled_prior_locks_out_is_found(
    member: str, lam: float, seed: int, model: str, method: str
) -> None:
    table = load_source(f"synthetic:{member}")
    shares = {}
    for pooling in ("eb:dl", f"eb:{method}"):
        setup = default_setup(table, lam, pooling=pooling)
        result = replay(table, lam=lam, requests=20_000, seed=seed, policies=["thompson"], setup=setup)
        shares[pooling] = result.summary(result.runs[0])["traffic_share"]["task2"][model]
    assert shares["eb:dl"] < 0.1, f"dl no longer locks {model} out here: this case tests nothing"
    assert shares[f"eb:{method}"] > 0.5, shares


def test_the_suite_names_the_candidates() -> None:
    assert VARIANTS["thompson_pool_posterior_shared"].setup == {"pooling": "eb:posterior_shared"}
    assert VARIANTS["thompson_pool_offset_shared"].setup == {"pooling": "eb:dl_offset_shared"}
