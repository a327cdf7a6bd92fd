"""Empirical-Bayes pooling over task types: it shrinks when task types agree and leaves them alone when not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from banditroute.core import ModelSpec, Outcome, TaskPolicy, TaskState, new_state, update_many
from banditroute.core.pooling import (
    SAMPLED_METHODS,
    TAU2_METHODS,
    _posterior_tau2,
    pooled_priors,
    pooled_table,
    with_priors,
)
from banditroute.core.state import Q_SUM, replace_state

MODELS = (ModelSpec("a", 0.001), ModelSpec("b", 0.002))
POLICY = TaskPolicy(half_life=None)


def _state(successes: dict[str, int], calls: int = 200) -> TaskState:
    outcomes = []
    for name, good in successes.items():
        outcomes += [Outcome(name, quality=1.0, cost_usd=0.001)] * good
        outcomes += [Outcome(name, quality=0.0, cost_usd=0.001)] * (calls - good)
    return update_many(new_state(MODELS, POLICY), MODELS, POLICY, outcomes)


def _strength(prior: tuple[float, float]) -> float:
    return prior[0] + prior[1] - 2.0  # pseudo-observations on top of Beta(1, 1)


def test_one_task_type_is_not_pooled() -> None:
    priors = pooled_priors({"only": _state({"a": 150, "b": 50})})
    assert priors["only"] == {"a": (1.0, 1.0), "b": (1.0, 1.0)}


def test_agreeing_task_types_share_evidence() -> None:
    states = {t: _state({"a": 150, "b": 100}) for t in ("x", "y", "z")}
    priors = pooled_priors(states, max_strength=200.0)
    for t in states:
        assert _strength(priors[t]["a"]) == pytest.approx(200.0)
        a, b = priors[t]["a"]
        assert (a - 1) / (a + b - 2) == pytest.approx(0.75, abs=0.01)


def test_disagreeing_task_types_are_barely_pooled() -> None:
    states = {
        "x": _state({"a": 190, "b": 20}),
        "y": _state({"a": 20, "b": 190}),
        "z": _state({"a": 100, "b": 100}),
    }
    priors = pooled_priors(states, max_strength=200.0)
    for t in states:
        for m in ("a", "b"):
            assert _strength(priors[t][m]) < 5.0, priors


def test_a_task_types_prior_leaves_out_its_own_evidence() -> None:
    states = {"x": _state({"a": 200, "b": 0}), "y": _state({"a": 0, "b": 0}, calls=0)}
    priors = pooled_priors(states)
    # y has no evidence to lend to x; x lends its evidence to y
    assert priors["x"]["a"] == (1.0, 1.0)
    assert _strength(priors["y"]["a"]) > 0


def test_base_priors_are_kept_under_the_pooled_ones() -> None:
    states = {t: _state({"a": 150, "b": 100}) for t in ("x", "y")}
    base = {"x": {"a": (3.0, 2.0)}}
    priors = pooled_priors(states, base, max_strength=10.0)
    assert priors["x"]["a"][0] == pytest.approx(3.0 + 10.0 * 150.5 / 201.0)


def test_with_priors_changes_only_the_prior_columns() -> None:
    state = _state({"a": 150, "b": 100})
    moved = with_priors(state, {"a": (5.0, 7.0)})
    assert moved.alpha[0] - state.alpha[0] == pytest.approx(4.0)
    assert moved.beta[0] - state.beta[0] == pytest.approx(6.0)
    assert moved.alpha[1] == state.alpha[1]
    assert with_priors(state, {"a": (1.0, 1.0)}) is state


def test_grouped_pooling_is_each_group_pooled_on_its_own() -> None:
    """``group_of``: one pass over every group gives what pooling each group separately gives."""
    groups = {
        "x": {"x1": _state({"a": 150, "b": 50}), "x2": _state({"a": 140, "b": 60}), "x3": _state({"a": 10})},
        "y": {"y1": _state({"a": 20, "b": 180}), "y2": _state({"a": 30, "b": 170}, calls=250)},
        "z": {"z1": _state({"a": 100, "b": 100})},
    }
    states = {k: s for group in groups.values() for k, s in group.items()}
    table = pooled_table(states, group_of=lambda key: key[0])
    for group in groups.values():
        alone = pooled_table(group)
        for key, state in group.items():
            got, want = table.row(key, state.names), alone.row(key, state.names)
            assert got is not None and want is not None
            for name in state.names:
                assert got[name] == pytest.approx(want[name], rel=1e-12)
    assert table.row("z1", ("a", "b")) == {"a": (1.0, 1.0), "b": (1.0, 1.0)}  # a group of one: nothing pooled


def test_a_state_with_non_finite_evidence_does_not_poison_the_others() -> None:
    """A corrupt state (NaN or infinite statistics, e.g. a forged record on the state topic) counts as no
    evidence: the other task types' priors are what they are without it, finite."""
    good = {"x": _state({"a": 150, "b": 50}), "y": _state({"a": 140, "b": 60}), "z": _state({"a": 145})}
    for bad in (float("nan"), float("inf")):
        stats = good["z"].stats.copy()
        stats[0, Q_SUM] = bad
        states = {**good, "z": replace_state(good["z"], stats=stats)}
        priors, without = pooled_priors(states), pooled_priors({"x": good["x"], "y": good["y"]})
        for task in ("x", "y"):
            assert priors[task]["a"] == pytest.approx(without[task]["a"])
        assert all(math.isfinite(v) for row in priors.values() for pair in row.values() for v in pair)


def _agreeing(k: int) -> dict[str, TaskState]:
    """``k`` task types that agree on both models up to sampling noise (200 calls each)."""
    return {f"t{i}": _state({"a": 150 - 4 * (i % 2), "b": 100 + 3 * (i % 3)}) for i in range(k)}


def test_posterior_pools_little_from_few_agreeing_task_types_and_fully_from_many() -> None:
    """Two or three task types that agree leave the between-task variance uncertain, so the posterior-mean
    estimate gives a weak prior; from six on it is as strong as the DerSimonian-Laird point estimate's."""
    strength = {
        k: _strength(pooled_priors(_agreeing(k), max_strength=200.0, tau2_method="posterior")["t0"]["a"])
        for k in (2, 3, 4, 6, 10)
    }
    assert strength[2] < 15.0, strength
    assert strength[2] < strength[3] < strength[4] < strength[6], strength
    assert strength[6] == pytest.approx(200.0) and strength[10] == pytest.approx(200.0)
    dl = pooled_priors(_agreeing(2), max_strength=200.0, tau2_method="dl")
    assert _strength(dl["t0"]["a"]) == pytest.approx(200.0)  # the point estimate: tau² = 0 from two means


@pytest.mark.parametrize("method", TAU2_METHODS)
def test_every_method_barely_pools_disagreeing_task_types(method: str) -> None:
    states = {
        "x": _state({"a": 190, "b": 20}),
        "y": _state({"a": 20, "b": 190}),
        "z": _state({"a": 100, "b": 100}),
    }
    priors = pooled_priors(states, max_strength=200.0, tau2_method=method, rng=np.random.default_rng(0))
    for t in states:
        for m in ("a", "b"):
            assert _strength(priors[t][m]) < 5.0, priors


def test_posterior_from_one_task_type_is_the_uniform_priors() -> None:
    """One task type with evidence says nothing about the between-task spread: tau² is the uniform prior's
    mean, a third of the largest variance, so the lent prior is worth about 3 - 1 = 2 observations."""
    states = {"x": _state({"a": 150, "b": 100}), "y": _state({}, calls=0)}
    priors = pooled_priors(states, tau2_method="posterior")
    assert priors["x"]["a"] == (1.0, 1.0)
    assert _strength(priors["y"]["a"]) == pytest.approx(2.0, abs=0.05)


def test_dl_k_scales_the_strength_by_the_task_types_holding_evidence() -> None:
    for k in (2, 3, 6):
        priors = pooled_priors(_agreeing(k), max_strength=100.0, tau2_method="dl_k")
        assert _strength(priors["t0"]["a"]) == pytest.approx(100.0 * (k - 1) / (k + 1))


@pytest.mark.parametrize("method", [m for m in TAU2_METHODS if m not in SAMPLED_METHODS])
def test_grouped_pooling_is_each_group_pooled_on_its_own_for_every_method(method: str) -> None:
    groups = {
        "x": {"x1": _state({"a": 150, "b": 50}), "x2": _state({"a": 140, "b": 60}), "x3": _state({"a": 10})},
        "y": {"y1": _state({"a": 20, "b": 180}), "y2": _state({"a": 30, "b": 170}, calls=250)},
    }
    states = {k: s for group in groups.values() for k, s in group.items()}
    table = pooled_table(states, group_of=lambda key: key[0], tau2_method=method)
    for group in groups.values():
        alone = pooled_table(group, tau2_method=method)
        for key, state in group.items():
            got, want = table.row(key, state.names), alone.row(key, state.names)
            assert got is not None and want is not None
            for name in state.names:
                assert got[name] == pytest.approx(want[name], rel=1e-9)


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="tau2_method"):
        pooled_table({"x": _state({"a": 1})}, tau2_method="reml")


def _state3(successes: dict[str, int], calls: int = 200) -> TaskState:
    models = (*MODELS, ModelSpec("c", 0.003))
    outcomes = []
    for name, good in successes.items():
        outcomes += [Outcome(name, quality=1.0, cost_usd=0.001)] * good
        outcomes += [Outcome(name, quality=0.0, cost_usd=0.001)] * (calls - good)
    return update_many(new_state(models, POLICY), models, POLICY, outcomes)


def test_dl_offset_moves_each_prior_by_how_much_easier_its_task_type_is_for_every_model() -> None:
    """Task type y is 0.2 easier for every model: dl centres y's priors on the others' means; dl_offset adds
    the 0.2, and, the models agreeing once the offset is taken out, pools as much as when there is none."""
    states = {
        "x": _state3({"a": 100, "b": 60, "c": 140}),
        "y": _state3({"a": 140, "b": 100, "c": 180}),
        "z": _state3({"a": 100, "b": 60, "c": 140}),
    }
    plain = pooled_priors(states, max_strength=200.0)
    moved = pooled_priors(states, max_strength=200.0, tau2_method="dl_offset")
    for m, other in (("a", 0.5), ("b", 0.3), ("c", 0.7)):
        a, b = plain["y"][m]
        assert (a - 1) / (a + b - 2) == pytest.approx(other, abs=0.01)
        a, b = moved["y"][m]
        assert (a - 1) / (a + b - 2) == pytest.approx(other + 0.2, abs=0.01)
        assert _strength(moved["y"][m]) >= _strength(plain["y"][m])
    # without an offset the two agree
    same = {t: _state3({"a": 100, "b": 60, "c": 140}) for t in ("x", "y", "z")}
    plain, moved = pooled_priors(same), pooled_priors(same, tau2_method="dl_offset")
    for t in same:
        for m in ("a", "b", "c"):
            assert moved[t][m] == pytest.approx(plain[t][m])


def test_traffic_half_shrinks_each_pooled_strength_as_its_task_types_own_traffic_grows() -> None:
    """Strength × h / (h + n), n the task type's own observations (2 models × calls); centres unchanged."""
    states = {
        "x": _state({"a": 36, "b": 24}, calls=50),
        "y": _state({"a": 150, "b": 100}),
        "z": _state({"a": 150, "b": 100}),
    }
    plain = pooled_priors(states, max_strength=200.0)
    decayed = pooled_priors(states, max_strength=200.0, traffic_half=100.0)
    for t, own in (("x", 100.0), ("y", 400.0), ("z", 400.0)):
        for m in ("a", "b"):
            assert _strength(decayed[t][m]) == pytest.approx(_strength(plain[t][m]) * 100.0 / (100.0 + own))
            a, b = plain[t][m]
            c, d = decayed[t][m]
            assert (c - 1) / (c + d - 2) == pytest.approx((a - 1) / (a + b - 2))
    assert _strength(decayed["x"]["a"]) > _strength(decayed["y"]["a"]) > 0.0
    assert pooled_priors(states, traffic_half=0.0) == pooled_priors(states)


@pytest.mark.parametrize("method", ["dl_shared", "posterior_shared"])
def test_a_shared_spread_weakens_the_prior_dl_makes_strong_for_a_model_whose_own_spread_looks_like_none(
    method: str,
) -> None:
    """_thin_a_in_y: models b and c differ by 0.2 between task types (tau² clearly > 0); model a agrees with itself
    in x and z and was barely tried in y, where it is 0.2 better. dl sees little of a's tau² (0) and gives y a prior
    worth over 100 calls centred on a's mean elsewhere (0.5). dl_shared moderates a's tau² towards the common one;
    posterior_shared takes its posterior mean under a half-Cauchy prior with the common spread as scale: either
    way a's prior in y is weak enough for 20 calls of its own to move its mean most of the way, same centre."""
    states = _thin_a_in_y()
    plain = pooled_priors(states, max_strength=200.0)
    shared = pooled_priors(states, max_strength=200.0, tau2_method=method)
    assert _strength(plain["y"]["a"]) > 100.0, plain["y"]["a"]
    assert _strength(shared["y"]["a"]) < 40.0, shared["y"]["a"]
    a, b = shared["y"]["a"]
    assert (a - 1) / (a + b - 2) == pytest.approx(0.5, abs=0.01)  # the centre is unchanged


def _thin_a_in_y() -> dict[str, TaskState]:
    """x and z agree (a 0.5, b 0.3, c 0.7, 200 calls each); in y, a was tried 20 times at 0.7."""
    return {
        "x": _state3({"a": 100, "b": 60, "c": 140}),
        "y": _state3_thin_a(),
        "z": _state3({"a": 100, "b": 60, "c": 140}),
    }


def _state3_thin_a() -> TaskState:
    """Task type y: b and c 0.2 better than elsewhere (200 calls each), a tried 20 times at 0.7."""
    models = (*MODELS, ModelSpec("c", 0.003))
    outcomes = [Outcome("a", quality=1.0, cost_usd=0.001)] * 14 + [
        Outcome("a", quality=0.0, cost_usd=0.001)
    ] * 6
    for name, good in (("b", 100), ("c", 180)):
        outcomes += [Outcome(name, quality=1.0, cost_usd=0.001)] * good
        outcomes += [Outcome(name, quality=0.0, cost_usd=0.001)] * (200 - good)
    return update_many(new_state(models, POLICY), models, POLICY, outcomes)


def test_dl_shared_is_each_models_tau2_moderated_towards_the_common_one_by_degrees_of_freedom() -> None:
    """(df tau²_own + d0 tau²_common) / (df + d0), checked against the strengths of dl (own) for a model
    whose own estimate is above the common one; shared_df 0 gives dl's strengths back."""
    states = {
        "x": _state3({"a": 190, "b": 60, "c": 140}),
        "y": _state3({"a": 20, "b": 62, "c": 138}),
        "z": _state3({"a": 100, "b": 58, "c": 142}),
    }
    dl = pooled_priors(states, max_strength=1e9)
    none = pooled_priors(states, max_strength=1e9, tau2_method="dl_shared", shared_df=0.0)
    for t in states:
        for m in ("a", "b", "c"):
            assert none[t][m] == pytest.approx(dl[t][m])
    shared = pooled_priors(states, max_strength=1e9, tau2_method="dl_shared", shared_df=4.0)
    # a disagrees with itself: its own tau² is above the common one, which b and c pull down -> stronger prior
    assert _strength(shared["x"]["a"]) > _strength(dl["x"]["a"])
    # b and c agree with themselves: the common tau² (a's spread) weakens their priors, which dl caps
    for m in ("b", "c"):
        assert _strength(shared["x"][m]) < _strength(dl["x"][m])


def test_dl_conflict_weakens_a_prior_only_where_the_task_types_own_evidence_disagrees_with_it() -> None:
    """a was tried 20 times in y at 0.7 against a centre of 0.5: the pair's excess variance, (0.2)² less
    both sampling variances, bounds a's tau² in y from below; x and z, agreeing with the centre, keep dl's."""
    states = _thin_a_in_y()
    dl = pooled_priors(states, max_strength=200.0)
    conflict = pooled_priors(states, max_strength=200.0, tau2_method="dl_conflict")
    centre = 200.5 / 401.0
    excess = (0.7 - centre) ** 2 - 0.21 / 20 - centre * (1 - centre) / 401.0
    assert _strength(conflict["y"]["a"]) == pytest.approx(centre * (1 - centre) / excess - 1.0, rel=1e-6)
    assert _strength(conflict["y"]["a"]) < _strength(dl["y"]["a"]) / 3
    for t in ("x", "z"):
        assert _strength(conflict[t]["a"]) == pytest.approx(_strength(dl[t]["a"]))


def test_posterior_shared_pools_fully_where_every_model_agrees_even_with_three_task_types() -> None:
    """The half-Cauchy prior's scale is the spread every model shows between task types, about 0 here: the
    posterior of tau² stays near 0 and the prior is as strong as the point estimate's, where the uniform
    prior's posterior (``posterior``) leaves it weak."""
    for k in (3, 10):
        states = _agreeing(k)
        shared = pooled_priors(states, max_strength=200.0, tau2_method="posterior_shared")
        uniform = pooled_priors(states, max_strength=200.0, tau2_method="posterior")
        for m in ("a", "b"):
            assert _strength(shared["t0"][m]) == pytest.approx(200.0), shared
    assert _strength(uniform["t0"]["a"]) == pytest.approx(200.0)  # ten task types: both concentrate
    three = pooled_priors(_agreeing(3), max_strength=200.0, tau2_method="posterior")
    assert _strength(three["t0"]["a"]) < 50.0, three


def test_dl_offset_shared_centres_a_thin_models_prior_on_its_task_types_offset() -> None:
    """_thin_a_in_y: y is 0.2 better for b and c, and a was 0.7 in its 20 calls there. dl centres a's prior in
    y on its mean elsewhere (0.5); dl_offset_shared moves it by y's offset (+0.2, from b and c) and, the models
    agreeing once the offsets are out, keeps it strong."""
    states = _thin_a_in_y()
    dl = pooled_priors(states, max_strength=200.0)
    moved = pooled_priors(states, max_strength=200.0, tau2_method="dl_offset_shared")
    a, b = dl["y"]["a"]
    assert (a - 1) / (a + b - 2) == pytest.approx(0.5, abs=0.01)
    a, b = moved["y"]["a"]
    assert (a - 1) / (a + b - 2) == pytest.approx(0.7, abs=0.01)
    assert _strength(moved["y"]["a"]) > 100.0, moved["y"]["a"]
    # without offsets it is dl_shared
    same = {t: _state3({"a": 100, "b": 60, "c": 140}) for t in ("x", "y", "z")}
    assert pooled_priors(same, tau2_method="dl_offset_shared") == pooled_priors(same, tau2_method="dl_shared")


def _strengths(states: dict[str, TaskState], task: str, model: str, method: str, draws: int) -> list[float]:
    rng = np.random.default_rng(7)
    return [
        _strength(pooled_priors(states, max_strength=200.0, tau2_method=method, rng=rng)[task][model])
        for _ in range(draws)
    ]


@pytest.mark.parametrize("method", SAMPLED_METHODS)
def test_a_sampled_method_needs_an_rng_and_is_repeatable_with_one(method: str) -> None:
    states = _thin_a_in_y()
    with pytest.raises(ValueError, match="rng"):
        pooled_table(states, tau2_method=method)
    first = pooled_table(states, tau2_method=method, rng=np.random.default_rng(3))
    again = pooled_table(states, tau2_method=method, rng=np.random.default_rng(3))
    assert np.array_equal(first.prior_a, again.prior_a) and np.array_equal(first.prior_b, again.prior_b)


def test_the_draws_of_tau2_are_the_posterior_whose_mean_posterior_shared_takes() -> None:
    """The inverse transform at evenly spread uniforms averages to the grid posterior's mean (the same grid,
    likelihood and half-Cauchy prior), for every model of a group with three task types."""
    rng = np.random.default_rng(0)
    means = rng.uniform(0.2, 0.8, (3, 5))
    sampling_var = np.full((3, 5), 0.002)
    seen = np.ones((3, 5))
    group = np.zeros(3, dtype=np.intp)
    scale2 = np.array([0.004])
    mean = _posterior_tau2(means, sampling_var, seen, group, 1, scale2)[0]
    points = 4000
    draws = [
        _posterior_tau2(means, sampling_var, seen, group, 1, scale2, np.full((1, 5), (i + 0.5) / points))[0]
        for i in range(points)
    ]
    assert np.mean(draws, axis=0) == pytest.approx(mean, rel=0.02)
    assert len({float(d[0]) for d in draws}) > 20  # draws, not one value


def test_sampled_shared_widens_a_locked_out_prior_in_some_draws_and_keeps_dls_strength_on_average() -> None:
    """_thin_a_in_y: DL's prior for a in y is worth 145 calls (tau² = 0 from a's own three means); posterior_shared's
    posterior mean makes it 22 in every decision. Drawing tau² from that posterior instead gives a wide prior
    (< 40 calls) in a good share of draws, the cap (200) in about a third, and about DL's strength on average."""
    states = _thin_a_in_y()
    dl = _strength(pooled_priors(states, max_strength=200.0)["y"]["a"])
    drawn = np.array(_strengths(states, "y", "a", "sampled_shared", 300))
    assert dl > 100.0
    assert 0.2 < np.mean(drawn < 40.0) < 0.6, np.mean(drawn < 40.0)
    assert np.mean(drawn > 199.0) > 0.15
    assert 0.5 * dl < drawn.mean() < 1.2 * dl, (drawn.mean(), dl)


def test_sampled_shared_pools_fully_in_every_draw_where_every_model_agrees() -> None:
    """The half-Cauchy scale is about 0 when no model moves between task types: every draw is at the cap, even
    with three task types, where the draws under the uniform prior on tau (``sampled``) are often weak."""
    for k in (3, 10):
        drawn = _strengths(_agreeing(k), "t0", "a", "sampled_shared", 100)
        assert min(drawn) > 150.0 and np.median(drawn) == pytest.approx(200.0), drawn
    uniform = np.array(_strengths(_agreeing(3), "t0", "a", "sampled", 100))
    assert np.mean(uniform < 40.0) > 0.1


def test_sampled_shared_draws_within_each_group() -> None:
    """Groups pooled in one table: a group whose models agree keeps the cap in every draw, a group whose models
    disagree stays weak in every draw (the draws are of each group's own posterior)."""
    states = {**{f"x{i}": _state({"a": 150, "b": 100}) for i in range(3)}}
    states |= {"y1": _state({"a": 190, "b": 20}), "y2": _state({"a": 20, "b": 190}), "y3": _state({"a": 100})}
    rng = np.random.default_rng(1)
    for _ in range(50):
        table = pooled_table(states, group_of=lambda key: key[0], tau2_method="sampled_shared", rng=rng)
        x, y = table.row("x0", ("a", "b")), table.row("y1", ("a", "b"))
        assert x is not None and y is not None
        assert min(_strength(x["a"]), _strength(x["b"])) > 150.0, x
        assert max(_strength(y["a"]), _strength(y["b"])) < 10.0, y


def test_sampled_thin_draws_only_where_the_pooled_prior_outweighs_the_task_types_own_evidence() -> None:
    """_thin_a_in_y: a was tried 20 times in y, where DL's prior is worth 145 calls: its prior there is drawn
    (sometimes wide, sometimes at the cap); everywhere else each model's own 200 calls outweigh DL's prior, which
    is kept exactly in every draw."""
    states = _thin_a_in_y()
    dl = pooled_priors(states, max_strength=200.0)
    rng = np.random.default_rng(5)
    drawn = []
    for _ in range(200):
        thin = pooled_priors(states, max_strength=200.0, tau2_method="sampled_thin", rng=rng)
        drawn.append(_strength(thin["y"]["a"]))
        for t in states:
            for m in ("a", "b", "c"):
                if (t, m) != ("y", "a"):
                    assert thin[t][m] == dl[t][m]
    assert np.mean(np.array(drawn) < 40.0) > 0.2 and max(drawn) > 150.0, drawn
