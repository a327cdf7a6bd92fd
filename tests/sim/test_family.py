"""The seeded family of 11 x 3 outcome tables (sim/family.py) and its members in the evaluation suite."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from banditroute.sim.family import draw, parse_member
from banditroute.sim.suite import dataset_sources, evaluate, load_source


def test_a_member_is_the_same_table_for_its_seed_and_another_for_another_seed() -> None:
    described, table = draw(3)
    again_described, again = draw(3)
    assert described == again_described
    for name, task in table.tasks.items():
        assert np.array_equal(task.quality, again.tasks[name].quality)
        assert np.array_equal(task.cost, again.tasks[name].cost)
    _, other = draw(4)
    assert not np.array_equal(table.mean_cost(), other.mean_cost())


@pytest.mark.parametrize("seed", range(6))
def test_members_are_11_models_by_3_task_types_with_per_call_costs(seed: int) -> None:
    described, table = draw(seed)
    assert len(table.models) == 11 and len(table.task_types) == 3
    mean_cost = np.array(list(table.mix().values())) @ table.mean_cost()
    assert 10.0 < mean_cost.max() / mean_cost.min() < 10.0**3.5  # prices span about two orders
    for kind, task in zip(described.quality_kinds, table.tasks.values(), strict=True):
        assert 1000 <= len(task) <= 4000
        assert np.all((task.quality >= 0.0) & (task.quality <= 1.0))
        assert np.all(task.cost > 0.0)
        assert np.all(task.cost.std(axis=0) > 0.0)  # recorded per call, not a fixed price
        if kind == "binary":
            assert set(np.unique(task.quality).tolist()) <= {0.0, 1.0}
        elif kind == "tenths":
            assert np.allclose(task.quality * 10.0, np.round(task.quality * 10.0))


def test_the_family_holds_agreeing_and_disagreeing_task_types_and_every_quality_kind() -> None:
    best_counts, kinds, gains = set(), set(), []
    for seed in range(20):
        described, table = draw(seed)
        utility = table.mean_quality() - 20.0 * table.mean_cost()
        w = np.array(list(table.mix().values()))
        best_counts.add(len(set(utility.argmax(axis=1).tolist())))
        kinds.update(described.quality_kinds)
        gains.append(float(w @ utility.max(axis=1) - (w @ utility).max()))
    assert best_counts >= {1, 3}
    assert kinds == {"binary", "graded", "tenths"}
    assert min(gains) < 0.005 and max(gains) > 0.04  # the oracle's gain from nothing to large


def test_members_are_named_family_seed_in_the_suite() -> None:
    assert parse_member("family:12") == 12
    # "²" and "١" are digits to str.isdigit: the first failed in int() with its message, the second was seed 1
    for bad in ("family:", "family:-1", "family:x", "familyx:1", "family:²", "family:١", "family: 1"):
        with pytest.raises(ValueError, match="family:<seed>"):
            parse_member(bad)
    sources = dataset_sources([], [], ["family:2"])
    assert sources == {"family:2": "synthetic:family:2"}
    assert load_source(sources["family:2"]).source == "synthetic:family:2"
    with pytest.raises(ValueError, match="family:<seed>"):
        dataset_sources([], [], ["family:two"])


def test_budget_cells_in_usd_are_the_same_budget_for_every_dataset() -> None:
    result = evaluate(
        {"family:0": "synthetic:family:0"},
        lams=(),
        seeds=1,
        requests=500,
        variants=("thompson", "thompson_naive"),
        budget_fractions=(),
        budgets_usd=(0.001,),
        one_pass=False,
        jobs=1,
    )
    [cell] = result.cells
    assert cell["label"] == "family:0 budget 0.001 (USD)"
    assert cell["budget"] == 0.001 and cell["budget_fraction"] is None
    assert cell["budget_oracle"]["mean_cost_usd"] <= 0.001 + 1e-12
    assert set(cell["policies"]["thompson"]) >= {"quality_share", "cost_over_budget"}
    assert result.settings["budgets_usd"] == [0.001]


@pytest.mark.parametrize(
    "given",
    [{"budgets_usd": (float("nan"),)}, {"budgets_usd": (float("inf"),)}, {"lams": (float("nan"),)}],
)
def test_non_finite_lambdas_and_budgets_are_refused_before_any_replay(given: dict[str, Any]) -> None:
    # before: a NaN or infinite budget failed in the budget oracle's linprog ("b_ub must not contain values
    # inf, nan, or None"), and a NaN lambda ran every replay and reported regret nan
    settings: dict[str, Any] = {"lams": (), "budget_fractions": (), "budgets_usd": (), **given}
    with pytest.raises(ValueError, match="finite"):
        evaluate(
            {"family:0": "synthetic:family:0"},
            seeds=1,
            requests=50,
            variants=("thompson",),
            one_pass=False,
            jobs=1,
            **settings,
        )
