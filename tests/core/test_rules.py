import pytest

from banditroute.core import Constraints, Rule, apply_rules


def test_rules_combine_in_order() -> None:
    rules = [
        Rule.from_mapping({"name": "eu", "metadata": {"region": ["eu", "ch"]}, "deny": ["us-model"]}),
        Rule.from_mapping({"name": "acme", "tenants": ["acme"], "allow": ["a", "b", "us-model"], "pin": "b"}),
        Rule.from_mapping({"name": "cheap", "task_types": "summarise", "objective": {"lam": 50}}),
        Rule.from_mapping({"name": "never", "tenants": ["other"], "pin": "a"}),
    ]
    effect, applied = apply_rules(rules, "acme", "summarise", {"region": "eu"})
    assert applied == ("eu", "acme", "cheap")
    assert effect.pin == "b"
    assert effect.constraints.deny == frozenset({"us-model"})
    assert effect.constraints.allow == frozenset({"a", "b", "us-model"})
    assert effect.constraints.objective_override == {"lam": 50}
    merged = Constraints(allow=frozenset({"a", "c"})).merged(effect.constraints)
    assert merged.allow == frozenset({"a"})


def test_metadata_must_be_present_and_stop_ends_evaluation() -> None:
    rules = [
        Rule.from_mapping({"name": "r1", "metadata": {"tier": "gold"}, "allow": ["a"], "stop": True}),
        Rule.from_mapping({"name": "r2", "deny": ["a"]}),
    ]
    assert apply_rules(rules, None, "t", {})[1] == ("r2",)
    assert apply_rules(rules, None, "t", {"tier": "gold"})[1] == ("r1",)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"deny": ["a"]}, "name"),
        ({"name": "x"}, "needs an action"),
        ({"name": "x", "pin": 3}, "pin"),
        ({"name": "x", "objective": {"gamma": 1}}, "objective"),
        ({"name": "x", "deny": ["a"], "when": 1}, "unknown key"),
    ],
)
def test_rule_validation(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Rule.from_mapping(data)
