from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from banditroute.sim.scenario import Scenario, ScenarioError, SyntheticWorld

ROOT = Path(__file__).parents[2]
DEFAULT = ROOT / "config" / "scenarios" / "default.yaml"


def test_default_scenario_loads() -> None:
    sc = Scenario.load(DEFAULT)
    assert 2 <= len(sc.task_types) <= 3 and 4 <= len(sc.models) <= 5
    assert abs(sum(sc.task_mix.values()) - 1.0) < 1e-12
    assert [m.name for m in sc.catalog()] == list(sc.model_names)
    assert sc.drift and sc.task_policy().lam == sc.lam


def test_drift_changes_the_best_model() -> None:
    world = SyntheticWorld(Scenario.load(DEFAULT))
    assert world.best_model("summarise", 0, 20.0) == "mid-tier"
    assert world.best_model("summarise", 5000, 20.0) != "mid-tier"
    assert (
        world.expected_utility("summarise", "mid-tier", 4999, 20.0)
        > world.expected_utility("summarise", "mid-tier", 5000, 20.0) + 0.25
    )


def test_sampling_matches_the_truth() -> None:
    world = SyntheticWorld(Scenario.load(DEFAULT))
    rng = np.random.default_rng(0)
    n = 20000
    s = world.sample_many(np.zeros(n, np.intp), np.zeros(n, np.intp), np.zeros(n, np.intp), rng)
    p = world.params(0)
    assert abs(np.nanmean(s.quality) - p["quality"][0, 0]) < 0.01
    assert abs(s.error.mean() - p["error"][0, 0]) < 0.005
    assert abs(s.cost_usd.mean() / p["cost"][0, 0] - 1) < 0.02
    one = world.sample("code", "open-coder", 10, rng)
    assert set(one) == {"quality", "cost_usd", "latency_ms", "error"}
    mix = np.bincount(world.requests(30000, rng), minlength=3) / 30000
    assert np.allclose(mix, [0.5, 0.3, 0.2], atol=0.01)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(extra=1), "unknown key"),
        (lambda d: d["models"][0]["quality"].update(summarise=1.5), "quality.summarise"),
        (lambda d: d["models"][0]["quality"].pop("code"), "missing task type"),
        (lambda d: d["drift"].append({"at": 1, "model": "nope"}), r"drift\[2\]\.model"),
        (lambda d: d["drift"].append({"at": -1, "model": "mid-tier"}), r"drift\[2\]\.at"),
        (lambda d: d.update(quality_kind="stars"), "quality_kind"),
        (lambda d: d["models"][1].update(name="gpt-large"), "unique"),
    ],
)
def test_validation_errors_name_the_key(mutate, message, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    data = yaml.safe_load(DEFAULT.read_text())
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match=message) as info:
        Scenario.load(path)
    assert str(path) in str(info.value)


def test_score_quality_kind() -> None:
    import yaml

    data = yaml.safe_load(DEFAULT.read_text())
    data["quality_kind"] = "score"
    world = SyntheticWorld(Scenario.from_mapping(data))
    s = world.sample_many(
        np.zeros(5000, np.intp), np.ones(5000, np.intp), np.zeros(5000, np.intp), np.random.default_rng(1)
    )
    q = s.quality[~np.isnan(s.quality)]
    assert ((q > 0) & (q < 1)).mean() > 0.9
