"""Which ``outcomes`` records the learner refuses (:func:`banditroute.agents.learn.outcome_problem`)."""

from __future__ import annotations

from typing import Any

import pytest

from banditroute.agents.learn import outcome_problem

GOOD: dict[str, Any] = {
    "kind": "joined",
    "at_s": 1.7e9,
    "task_key": "chat",
    "model": "budget",
    "quality": 0.8,
    "cost_usd": None,
    "tokens_in": 10,
    "tokens_out": None,
    "latency_ms": 120,
    "error": None,
    "src": 0,
    "off": 12,
}


KEY_FORM = "task_key must be a task type, tenant|task type or ~shared (task type and tenant identifiers)"


def test_an_outcome_the_join_writes_is_accepted() -> None:
    assert outcome_problem(GOOD) is None
    for key in ("acme|chat", "~shared", "t" * 128, f"{'n' * 128}|{'t' * 128}"):
        assert outcome_problem({**GOOD, "task_key": key}) is None
    assert outcome_problem({**GOOD, "error": "timeout", "quality": None}) is None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"task_key": None}, "task_key must be a string"),
        ({"model": 3}, "model must be a string"),
        ({"task_key": "t" * 5000}, KEY_FORM),  # before bounds22 learnt: a state with a 5,000-character key
        ({"task_key": "a|b|chat"}, KEY_FORM),
        ({"task_key": "|chat"}, KEY_FORM),
        ({"task_key": "~other"}, KEY_FORM),
        ({"task_key": ""}, KEY_FORM),
        ({"src": "0"}, "src must be an integer"),
        ({"off": True}, "off must be an integer"),
        ({"quality": "high"}, "quality must be a number or null"),
        ({"at_s": [1]}, "at_s must be a number or null"),
        ({"tokens_in": 1.5}, "tokens_in must be an integer or null"),
        ({"error": {"code": 1}}, "error must be a string or null"),
    ],
)
def test_a_record_the_learner_cannot_use_says_why(change: dict[str, Any], problem: str) -> None:
    assert outcome_problem({**GOOD, **change}) == problem


def test_missing_fields_and_other_json_are_refused() -> None:
    assert outcome_problem({"model": "budget"}) == "task_key must be a string"
    assert outcome_problem([1, 2]) == "an outcome must be a JSON object"
    assert outcome_problem(None) == "an outcome must be a JSON object"
