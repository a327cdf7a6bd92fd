"""One mean-cost budget shared by several task types.

A budget set per task type is held per task type: a task type whose best model costs less than the budget
leaves the rest unspent. A budget over all traffic (what ``replay --budget`` and the budget oracle mean) lets
the task types that can use money spend what the others leave: every task type paces against the slack of
all task types with the same budget together (``TaskState.budget_offset_usd`` lends it the others' slack).
"""

from __future__ import annotations

from collections.abc import Mapping

from banditroute.core.models import TaskPolicy
from banditroute.core.state import TaskState, replace_state


def slack_usd(state: TaskState, policy: TaskPolicy) -> float:
    """What the task type has under-spent (> 0) or over-spent (< 0) against its own mean-cost budget."""
    budget = policy.budget_mean_cost_usd or 0.0
    return budget * state.spend_calls - state.spend_total_usd


def share_budget(states: Mapping[str, TaskState], policies: Mapping[str, TaskPolicy]) -> dict[str, TaskState]:
    """The states with each task type's pacing slack set to that of all task types with the same budget."""
    groups: dict[float, list[str]] = {}
    for task, policy in policies.items():
        if task in states and policy.objective == "budget" and policy.budget_mean_cost_usd is not None:
            groups.setdefault(policy.budget_mean_cost_usd, []).append(task)
    out = dict(states)
    for tasks in groups.values():
        own = {t: slack_usd(states[t], policies[t]) for t in tasks}
        total = sum(own.values())
        for t in tasks:
            offset = total - own[t]
            if offset != states[t].budget_offset_usd:
                out[t] = replace_state(states[t], budget_offset_usd=offset)
    return out
