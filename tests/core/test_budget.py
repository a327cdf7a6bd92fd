"""A budget shared by several task types: each paces against the slack of all of them together."""

from __future__ import annotations

import pytest

from banditroute.core import ModelSpec, Outcome, TaskPolicy, new_state, update_many
from banditroute.core.budget import share_budget, slack_usd
from banditroute.core.objective import effective_budget

MODELS = (ModelSpec("cheap", 0.0001), ModelSpec("dear", 0.01))
POLICY = TaskPolicy(objective="budget", budget_mean_cost_usd=0.001, pacing_horizon=100.0)


def test_shared_slack_is_the_sum_of_all_task_types() -> None:
    saver = update_many(new_state(MODELS, POLICY), MODELS, POLICY, [Outcome("cheap", 1.0, 0.0001)] * 100)
    spender = update_many(new_state(MODELS, POLICY), MODELS, POLICY, [Outcome("dear", 1.0, 0.0015)] * 100)
    policies = {"saver": POLICY, "spender": POLICY, "other": TaskPolicy()}
    shared = share_budget({"saver": saver, "spender": spender}, policies)
    total = slack_usd(saver, POLICY) + slack_usd(spender, POLICY)
    assert total == pytest.approx(0.09 - 0.05)
    for name in ("saver", "spender"):
        own = slack_usd(shared[name], POLICY)
        assert own + shared[name].budget_offset_usd == pytest.approx(total)
        assert effective_budget(shared[name], POLICY) == pytest.approx(0.001 + total / 100.0)
    # learning keeps the offset until the next share
    later = update_many(shared["spender"], MODELS, POLICY, [Outcome("dear", 1.0, 0.001)])
    assert later.budget_offset_usd == shared["spender"].budget_offset_usd


def test_task_types_with_other_budgets_do_not_share() -> None:
    other = TaskPolicy(objective="budget", budget_mean_cost_usd=0.002)
    a = update_many(new_state(MODELS, POLICY), MODELS, POLICY, [Outcome("cheap", 1.0, 0.0001)] * 10)
    b = update_many(new_state(MODELS, other), MODELS, other, [Outcome("cheap", 1.0, 0.0001)] * 10)
    shared = share_budget({"a": a, "b": b}, {"a": POLICY, "b": other})
    assert shared["a"].budget_offset_usd == 0.0 and shared["b"].budget_offset_usd == 0.0
