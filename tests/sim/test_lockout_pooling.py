"""learn20's and learn21's candidates for the pooled prior's lock-out with three task types (core.pooling
"posterior_shared", "dl_offset_shared", "sampled_shared") in a replay: the models DerSimonian-Laird's prior locks out of a task type
in gen14's worst seeds are found."""

from __future__ import annotations

import pytest

from banditroute.sim.replay import default_setup, replay
from banditroute.sim.suite import VARIANTS, load_source

# the cases were found with draws of the posterior's own spread (other seeds lock out at the default's)
_MEASURED_AT = 1.0

CASES = [
    # m07 is best in task2, which is easier for every model: its prior there is its mean over task0/task1
    ("posterior_shared", "family:2", 50.0, 0, "m07"),
    ("dl_offset_shared", "family:2", 50.0, 0, "m07"),
    # m03 is task2's specialist: task0 and task1 agree on its weakness (no offset explains it: dl_offset_shared
    # gives m03 35 % of task2 here, not asserted)
    ("posterior_shared", "family:1", 5.0, 5, "m03"),
    # learn21: tau² drawn from posterior_shared's posterior each time the priors are pooled (m07 94 %, m03 70 %)
    ("sampled_shared", "family:2", 50.0, 0, "m07"),
    ("sampled_shared", "family:1", 5.0, 5, "m03"),
]


@pytest.mark.parametrize(("method", "member", "lam", "seed", "model"), CASES)
def test_a_model_the_pooled_prior_locks_out_is_found(
    member: str, lam: float, seed: int, model: str, method: str
) -> None:
    table = load_source(f"synthetic:{member}")
    shares = {}
    for pooling in ("eb:dl", f"eb:{method}"):
        setup = default_setup(table, lam, pooling=pooling, exploration=_MEASURED_AT)
        result = replay(table, lam=lam, requests=20_000, seed=seed, policies=["thompson"], setup=setup)
        shares[pooling] = result.summary(result.runs[0])["traffic_share"]["task2"][model]
    assert shares["eb:dl"] < 0.1, f"dl no longer locks {model} out here: this case tests nothing"
    assert shares[f"eb:{method}"] > 0.5, shares


def test_the_suite_names_the_candidates() -> None:
    assert VARIANTS["thompson_pool_posterior_shared"].setup == {"pooling": "eb:posterior_shared"}
    assert VARIANTS["thompson_pool_offset_shared"].setup == {"pooling": "eb:dl_offset_shared"}
    assert VARIANTS["thompson_pool_sampled_shared"].setup == {"pooling": "eb:sampled_shared"}
    assert VARIANTS["thompson_pool_sampled"].setup == {"pooling": "eb:sampled"}


def test_a_replay_that_draws_tau2_is_repeatable_for_a_seed() -> None:
    """The pooling draws come from a generator of the replay's seed: the same seed replays the same decisions,
    and they are not DL's."""
    table = load_source("synthetic:family:2")
    runs = []
    for pooling in ("eb:dl", "eb:sampled_shared", "eb:sampled_shared"):
        setup = default_setup(table, 20.0, pooling=pooling)
        result = replay(table, lam=20.0, requests=3_000, seed=1, policies=["thompson"], setup=setup)
        runs.append(result.runs[0].chosen)
    assert (runs[1] == runs[2]).all()
    assert not (runs[0] == runs[1]).all()
