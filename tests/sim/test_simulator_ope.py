from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from banditroute.cli import main
from banditroute.sim.ope import estimate, evaluate_policy, steps_from_simulation
from banditroute.sim.scenario import Scenario
from banditroute.sim.simulator import simulate_in_process
from tests.sim.helpers import write_logs

DEFAULT = Path(__file__).parents[2] / "config" / "scenarios" / "default.yaml"


def test_simulation_learns_and_is_deterministic() -> None:
    sc = Scenario.load(DEFAULT)
    a = simulate_in_process(sc, "thompson", 3000, seed=4, feedback_delay=20)
    b = simulate_in_process(sc, "thompson", 3000, seed=4, feedback_delay=20)
    assert np.array_equal(a.model, b.model) and np.allclose(a.utility, b.utility)
    uniform = simulate_in_process(sc, "uniform", 3000, seed=4)
    assert a.regret < uniform.regret / 2
    assert ((a.propensity > 0) & (a.propensity <= 1)).all()


def test_estimators_agree_with_on_policy_value() -> None:
    rng = np.random.default_rng(0)
    r = rng.random(1000)
    p = np.full(1000, 0.5)
    res = estimate(r, p, p, np.full(1000, 0.5), np.full(1000, 0.5))
    assert res.ips.value == pytest.approx(r.mean()) and res.snips.value == pytest.approx(r.mean())
    assert res.dr.value == pytest.approx(r.mean()) and res.effective_sample_size == pytest.approx(1000)


def test_frozen_candidate_equal_to_logger_recovers_logged_value() -> None:
    sc = Scenario.load(DEFAULT)
    tp = sc.task_policy(half_life=None)
    sim = simulate_in_process(sc, "thompson", 2000, seed=2, task_policy=tp, learn=False)
    res = evaluate_policy(steps_from_simulation(sim), sc.catalog(), tp, learn=False)
    assert res.snips.value == pytest.approx(sim.utility.mean(), abs=0.02)
    assert res.effective_sample_size > 1500


def test_cli_evaluate_with_shadow(tmp_path: Path) -> None:
    sc = Scenario.load(DEFAULT)
    live = simulate_in_process(sc, "epsilon_greedy", 800, seed=1)
    paths = write_logs(live, tmp_path, shadow_of=live)
    config = tmp_path / "config"
    config.mkdir()
    import yaml

    config.joinpath("models.yaml").write_text(
        yaml.safe_dump(
            {"models": [{"name": m.name, "cost_per_call_usd": m.cost_per_call_usd} for m in sc.catalog()]}
        )
    )
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--decisions",
            str(paths["decisions"]),
            "--feedback",
            str(paths["feedback"]),
            "--config",
            str(config),
            "--lam",
            "20",
            "--shadow",
            str(paths["shadow"]),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (
        report["n"] == 800
        and report["ips"]["ci95_low"] <= report["ips"]["value"] <= report["ips"]["ci95_high"]
    )
    shadow = report["shadow"]
    assert shadow["agreement"] == 1.0 and shadow["matched"] == 800
    assert shadow["ope"]["n"] == 800 and shadow["ope"]["effective_sample_size"] > 0
    text = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--decisions",
            str(paths["decisions"]),
            "--feedback",
            str(paths["feedback"]),
            "--config",
            str(config),
        ],
    )
    assert text.exit_code == 0 and "snips" in text.output


def test_evaluate_rejects_bad_lines(tmp_path: Path) -> None:
    bad = tmp_path / "d.jsonl"
    bad.write_text("{not json}\n")
    result = CliRunner().invoke(
        main, ["evaluate", "--decisions", str(bad), "--feedback", str(bad), "--config", str(tmp_path)]
    )
    assert result.exit_code != 0 and "d.jsonl:1" in result.output
