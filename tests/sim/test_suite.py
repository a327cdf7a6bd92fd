"""The policy evaluation suite's parts: budget oracle, one-pass stream, synthetic tables, priors, aggregation."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from banditroute.cli import main
from banditroute.sim.priors import FittedPriors, fit_priors
from banditroute.sim.replay import default_setup, one_pass_stream, replay
from banditroute.sim.suite import (
    VARIANTS,
    Cell,
    budget_levels,
    budget_oracle,
    evaluate,
    run_seed,
    split_tasks,
)
from banditroute.sim.suite_report import markdown_table
from banditroute.sim.synthetic import SPECS, generate
from banditroute.sim.table import OutcomeTable, TaskOutcomes, load_outcomes


def _table() -> OutcomeTable:
    rng = np.random.default_rng(0)
    tasks = {}
    for t, n in (("a", 40), ("b", 60)):
        tasks[t] = TaskOutcomes(
            prompts=tuple(f"{t}{i}" for i in range(n)),
            quality=rng.random((n, 3)),
            cost=np.tile([0.001, 0.004, 0.01], (n, 1)) * rng.uniform(0.5, 1.5, (n, 3)),
            latency=np.full((n, 3), np.nan),
        )
    return OutcomeTable(models=("x", "y", "z"), tasks=tasks)


def test_budget_oracle_matches_a_brute_force_search() -> None:
    table = _table()
    budget = 0.004
    w = np.array(list(table.mix().values()))
    q, c = table.mean_quality(), table.mean_cost()
    best = -1.0
    grid = np.linspace(0, 1, 41)
    pairs = list(itertools.combinations(range(3), 2))
    # one budget constraint: an optimal mix uses at most two models per task type
    for (i, j), (k, m), pa, pb in itertools.product(pairs, pairs, grid, grid):
        qa, ca = (1 - pa) * q[0, i] + pa * q[0, j], (1 - pa) * c[0, i] + pa * c[0, j]
        qb, cb = (1 - pb) * q[1, k] + pb * q[1, m], (1 - pb) * c[1, k] + pb * c[1, m]
        if w[0] * ca + w[1] * cb <= budget:
            best = max(best, w[0] * qa + w[1] * qb)
    oracle = budget_oracle(table, budget)
    assert oracle["mean_cost_usd"] <= budget + 1e-12
    assert oracle["mean_quality"] >= best - 1e-9
    assert oracle["mean_quality"] == pytest.approx(best, abs=0.01)


def test_budget_levels_lie_between_the_cheapest_and_the_best_model() -> None:
    table = _table()
    levels = budget_levels(table, (0.0, 1.0))
    w = np.array(list(table.mix().values()))
    cost = w @ table.mean_cost()
    assert levels[0][1] == pytest.approx(cost.min())
    assert levels[1][1] == pytest.approx(cost[int((w @ table.mean_quality()).argmax())])


def test_one_pass_shows_every_prompt_exactly_once() -> None:
    table = _table()
    stream = one_pass_stream(table, seed=3)
    pairs = set(zip(stream.task.tolist(), stream.prompt.tolist(), strict=True))
    assert len(stream.task) == len(pairs) == 100
    assert not np.array_equal(stream.task, one_pass_stream(table, seed=4).task)
    result = replay(table, policies=["thompson", "uniform"], one_pass=True, seed=3)
    assert len(result.runs[0].chosen) == 100


def test_synthetic_task_types_have_different_best_models() -> None:
    table = generate(SPECS["synthetic_disagree"])
    again = generate(SPECS["synthetic_disagree"])
    assert np.array_equal(table.tasks["task0"].quality, again.tasks["task0"].quality)
    utility = table.mean_quality() - 20.0 * table.mean_cost()
    assert len(set(utility.argmax(axis=1).tolist())) == len(table.task_types)


def test_priors_fit_roundtrip_and_use(tmp_path: Path) -> None:
    table = generate(SPECS["synthetic_specialists"])
    fit_half, held = split_tasks(table, seed=0)
    assert set(fit_half.task_types).isdisjoint(held.task_types)
    fitted = fit_priors(fit_half, max_strength=30.0)
    path = tmp_path / "priors.yaml"
    path.write_text(fitted.to_yaml())
    loaded = FittedPriors.load(path)
    assert loaded.models.keys() == fitted.models.keys()
    for name, (a, b) in fitted.models.items():
        assert loaded.models[name] == pytest.approx((a, b), abs=1e-3)
        assert a + b - 2.0 <= 30.0 + 1e-9
    setup = default_setup(held, 20.0, priors=loaded)
    task = held.task_types[0]
    for spec in setup.models[task]:
        assert spec.quality_prior == loaded.for_task(task)[spec.name]
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: {x: [1, -2]}\n")
    with pytest.raises(ValueError, match=r"models\.x must be \[alpha, beta\]"):
        FittedPriors.load(bad)


def test_suite_reports_every_cell_and_the_naive_comparison() -> None:
    result = evaluate(
        {"synthetic_disagree": "synthetic:synthetic_disagree"},
        lams=(20.0,),
        seeds=2,
        requests=2000,
        variants=("thompson", "thompson_naive"),
        budget_fractions=(0.25,),
        jobs=1,
    )
    modes = [c["mode"] for c in result.cells]
    assert modes == ["utility", "budget", "one_pass"]
    utility = result.cells[0]["policies"]["thompson"]
    assert set(utility) >= {"captured", "captured_expected", "regret", "curve", "vs_naive"}
    assert utility["captured"]["worst"] <= utility["captured"]["mean"]
    assert utility["regret"]["worst"] >= utility["regret"]["mean"]  # the worst seed has the most regret
    budget = result.cells[1]["policies"]["thompson"]
    assert 0.0 < budget["quality_share"]["mean"] <= 1.05
    assert budget["quality_share"]["worst"] <= budget["quality_share"]["mean"]
    # the worst seed spends the most over B (it was the seed that spent the least, as for regret before 667e607)
    assert budget["cost_over_budget"]["worst"] > budget["cost_over_budget"]["mean"]
    assert result.overall["thompson"]["cells_worse_than_naive"] >= 0
    assert result.cells[0]["policies"]["thompson_naive"]["vs_naive"]["regret_diff"] == 0.0
    table = markdown_table(result.to_json()).splitlines()
    assert table[0] == "| cell | thompson | thompson_naive |"
    assert table[2].startswith("| synthetic_disagree λ=20 | ") and len(table) == 5


def test_first_seed_replays_the_seeds_after_it() -> None:
    """A default chosen on seeds 0..n-1 is checked on fresh ones: first_seed=1 replays seed 1, not seed 0."""
    source = {"synthetic_disagree": "synthetic:synthetic_disagree"}
    kw: dict[str, Any] = dict(
        lams=(20.0,), seeds=1, requests=1000, variants=("thompson", "thompson_naive"),
        budget_fractions=(), one_pass=False, priors=False, jobs=1,
    )  # fmt: skip
    fresh = evaluate(source, first_seed=1, **kw)
    assert fresh.settings["first_seed"] == 1
    variants = [VARIANTS["thompson"], VARIANTS["thompson_naive"]]
    by_seed = [
        run_seed(
            source["synthetic_disagree"],
            Cell("synthetic_disagree", "utility", 20.0),
            seed,
            variants,
            1000,
            50,
        )
        for seed in (0, 1)
    ]
    assert by_seed[0]["thompson"]["captured"] != by_seed[1]["thompson"]["captured"]
    assert fresh.cells[0]["policies"]["thompson"]["captured"]["mean"] == by_seed[1]["thompson"]["captured"]
    with pytest.raises(ValueError, match="first_seed"):
        evaluate(source, first_seed=-1, **kw)


def test_evaluate_policy_and_priors_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(
        main,
        [
            "evaluate-policy",
            "--synthetic", "synthetic_disagree",
            "--lam", "20", "--seeds", "2", "--requests", "1000", "--no-budget", "--no-one-pass",
            "--policy", "thompson", "--policy", "thompson_naive", "--jobs", "1", "--format", "json",
            "--out", str(tmp_path / "suite"), "--first-seed", "3",
        ],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["settings"]["first_seed"] == 3 and report["settings"]["seeds"] == 2
    assert report["cells"][0]["label"] == "synthetic_disagree λ=20"
    assert (tmp_path / "suite" / "suite.json").exists()
    assert any(p.endswith(".png") for p in report["plots"])
    missing = runner.invoke(main, ["evaluate-policy", "--no-synthetic"])
    assert missing.exit_code != 0 and "no dataset" in missing.output
    csv_path = tmp_path / "t.csv"
    lines = ["task_type,prompt_id,model,quality,cost_usd,latency_ms"]
    for t in ("a", "b"):
        for i in range(20):
            lines += [f"{t},{t}{i},x,{(i % 3) / 2},0.001,", f"{t},{t}{i},y,{(i % 2)},0.002,"]
    csv_path.write_text("\n".join(lines) + "\n")
    fit = runner.invoke(main, ["priors", "fit", "--data", str(csv_path), "--out", str(tmp_path / "p.yaml")])
    assert fit.exit_code == 0, fit.output
    assert set(FittedPriors.load(tmp_path / "p.yaml").task_types) == {"a", "b"}
    assert set(load_outcomes(csv_path).models) == {"x", "y"}
    used = runner.invoke(
        main,
        ["replay", "--data", str(csv_path), "--priors", str(tmp_path / "p.yaml"), "--one-pass",
         "--policy", "thompson", "--format", "json"],
    )  # fmt: skip
    assert used.exit_code == 0, used.output
    assert json.loads(used.output)["requests"] == 40


def test_held_out_cells_replay_the_variants_asked_for_beside_the_fitted_priors() -> None:
    """A pooling variant is measured where groups are small: the held-out half of the task types."""
    result = evaluate(
        {"synthetic_specialists": "synthetic:synthetic_specialists"},
        lams=(),
        seeds=1,
        requests=1000,
        variants=("thompson", "thompson_pool_posterior", "thompson_naive"),
        budget_fractions=(),
        one_pass=False,
        jobs=1,
    )
    [cell] = result.cells
    assert cell["mode"] == "priors"
    assert list(cell["policies"]) == [
        "thompson",
        "thompson_priors",
        "thompson_naive",
        "thompson_pool_posterior",
    ]
