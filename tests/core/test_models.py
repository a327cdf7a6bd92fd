import pytest

from banditroute.core import ModelSpec, ScheduleEntry, TaskPolicy


def test_model_from_mapping_and_price() -> None:
    spec = ModelSpec.from_mapping(
        {
            "name": "gpt",
            "cost_per_call_usd": 0.002,
            "price_in_per_1k_usd": 0.5,
            "price_out_per_1k_usd": 1.5,
            "capabilities": ["json", "vision"],
            "quality_prior": [2, 3],
            "lifecycle": "canary",
        }
    )
    assert spec.capabilities == frozenset({"json", "vision"})
    assert spec.quality_prior == (2.0, 3.0)
    assert spec.price(1000, 2000) == pytest.approx(3.5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cost_per_call_usd": 1}, "name"),
        ({"name": "x"}, "cost_per_call_usd is required"),
        ({"name": "x", "cost_per_call_usd": -1}, "cost_per_call_usd"),
        ({"name": "x", "cost_per_call_usd": 1, "lifecycle": "beta"}, "lifecycle"),
        ({"name": "x", "cost_per_call_usd": 1, "quality_prior": [0, 1]}, "quality_prior"),
        ({"name": "x", "cost_per_call_usd": 1, "colour": "red"}, "unknown key"),
        ({"name": "x", "cost_per_call_usd": "1"}, "number"),
    ],
)
def test_model_from_mapping_rejects(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelSpec.from_mapping(data)


def test_policy_from_mapping() -> None:
    policy = TaskPolicy.from_mapping(
        {
            "objective": "budget",
            "budget_mean_cost_usd": 0.01,
            "half_life": None,
            "schedule": [{"start_hour": 22, "end_hour": 6, "lam": 1.0}],
            "min_share": {"a": 0.1},
        }
    )
    assert policy.half_life is None
    assert policy.schedule == (ScheduleEntry(22, 6, lam=1.0),)
    assert policy.min_share == {"a": 0.1}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"objective": "budget"}, "needs budget"),
        ({"objective": "profit"}, "objective"),
        ({"reward": "poisson"}, "reward"),
        ({"half_life": 0}, "half_life"),
        ({"canary_floor": 0.5, "canary_ceiling": 0.1}, "canary_floor"),
        ({"schedule": [{"start_hour": 25, "end_hour": 3}]}, "start_hour"),
        ({"min_share": {"a": 2}}, "min_share"),
        ({"lamda": 1}, "unknown key"),
    ],
)
def test_policy_from_mapping_rejects(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TaskPolicy.from_mapping(data)


def test_schedule_overrides_by_utc_hour() -> None:
    policy = TaskPolicy(
        lam=10.0, mu=0.001, schedule=(ScheduleEntry(22, 6, lam=1.0), ScheduleEntry(9, 17, mu=0.0))
    )
    assert policy.lam_mu_at(23 * 3600.0) == (1.0, 0.001)
    assert policy.lam_mu_at(86400.0 + 3 * 3600.0) == (1.0, 0.001)
    assert policy.lam_mu_at(10 * 3600.0) == (10.0, 0.0)
    assert policy.lam_mu_at(7 * 3600.0) == (10.0, 0.001)
