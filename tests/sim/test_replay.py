from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from banditroute.cli import main
from banditroute.sim.replay import replay
from banditroute.sim.synthetic import SyntheticSpec, generate
from banditroute.sim.table import (
    OutcomeTable,
    TaskOutcomes,
    example_path,
    load_outcomes,
    parse_mix,
    write_outcomes,
)


def test_example_is_small_and_loads() -> None:
    assert example_path().stat().st_size < 200_000
    table = load_outcomes()
    assert len(table.models) == 2 and len(table.task_types) == 6
    assert abs(sum(table.mix().values()) - 1) < 1e-12


def test_replay_is_deterministic_and_consistent() -> None:
    table = load_outcomes()
    a = replay(table, requests=3000, seed=3, policies=["thompson", "cheapest", "uniform"]).to_json()
    b = replay(table, requests=3000, seed=3, policies=["thompson", "cheapest", "uniform"]).to_json()
    assert a == b
    oracle, single = a["oracle"]["mean_utility"], a["best_single_model"]["mean_utility"]
    assert oracle >= single
    for p in a["policies"]:
        assert p["regret"] == pytest.approx(oracle - p["mean_utility"])
        assert p["captured"] == pytest.approx((p["mean_utility"] - single) / (oracle - single))
        for shares in p["traffic_share"].values():
            assert sum(shares.values()) == pytest.approx(1, abs=1e-3)
    cheapest = next(p for p in a["policies"] if p["name"] == "cheapest")
    assert cheapest["traffic_share"]["gsm8k"]["small-model"] == 1.0


def test_draw_seed_moves_the_draws_and_keeps_the_stream() -> None:
    table = load_outcomes()
    base = replay(table, requests=2000, seed=5, policies=["thompson"])
    same = replay(table, requests=2000, seed=5, policies=["thompson"], draw_seed=5)
    apart = replay(table, requests=2000, seed=5, policies=["thompson"], draw_seed=6)
    assert same.to_json() == {**base.to_json(), "draw_seed": 5}  # the same draws, the seed given recorded
    assert (apart.stream.task == base.stream.task).all() and (apart.stream.prompt == base.stream.prompt).all()
    assert (apart.runs[0].chosen != base.runs[0].chosen).any()
    # the report names the draw seed when one was given, so the run can be made again
    assert "draw_seed" not in base.to_json()
    assert apart.to_json()["draw_seed"] == 6


def test_mix_and_budget() -> None:
    table = load_outcomes()
    assert parse_mix("gsm8k=1,mt-bench=3", table.task_types)["mt-bench"] == 0.75
    with pytest.raises(ValueError, match="unknown task type"):
        parse_mix("nope=1", table.task_types)
    r = replay(table, requests=2000, seed=1, policies=["thompson"], mix="gsm8k=1").to_json()
    assert set(r["policies"][0]["traffic_share"]) == {"gsm8k"}
    spend = replay(table, requests=4000, seed=1, policies=["thompson"], budget=0.002).to_json()
    assert spend["policies"][0]["mean_cost_usd"] < 0.004


def test_written_outcomes_read_back_to_the_same_table(tmp_path: Path) -> None:
    for table in (
        load_outcomes(),
        generate(SyntheticSpec("t", models=3, task_types=2, prompts_per_task=40, seed=3)),
    ):
        back = load_outcomes(write_outcomes(table, tmp_path / "o.csv"))
        assert back.models == table.models and back.task_types == table.task_types
        for name, outcomes in table.tasks.items():
            got = back.tasks[name]
            assert got.prompts == outcomes.prompts
            assert (got.quality == outcomes.quality).all() and (got.cost == outcomes.cost).all()
            assert np.array_equal(got.latency, outcomes.latency, equal_nan=True)
    # models in another order: read back sorted, each model's outcomes under its name
    table = load_outcomes()
    backwards = OutcomeTable(
        models=table.models[::-1],
        tasks={
            t: TaskOutcomes(
                o.prompts, o.quality[:, ::-1].copy(), o.cost[:, ::-1].copy(), o.latency[:, ::-1].copy()
            )
            for t, o in table.tasks.items()
        },
    )
    back = load_outcomes(write_outcomes(backwards, tmp_path / "backwards.csv"))
    assert back.models == table.models
    assert all((back.tasks[t].quality == table.tasks[t].quality).all() for t in table.task_types)
    bad = OutcomeTable(
        models=("m",),
        tasks={"t": TaskOutcomes(("p",), np.array([[np.nan]]), np.zeros((1, 1)), np.zeros((1, 1)))},
    )
    with pytest.raises(ValueError, match="must be finite"):
        write_outcomes(bad, tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_bad_csv_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "o.csv"
    bad.write_text("task_type,prompt_id,model,quality,cost_usd,latency_ms\na,p,m,1.5,0.1,\n")
    with pytest.raises(ValueError, match=r"o.csv:2: quality"):
        load_outcomes(bad)


def test_cli_replay_json_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "plots"
    result = CliRunner().invoke(
        main,
        [
            "replay",
            "--requests",
            "1500",
            "--policy",
            "thompson",
            "--policy",
            "cheapest",
            "--format",
            "json",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [p["name"] for p in report["policies"]] == ["thompson", "cheapest"]
    assert {"oracle", "best_single_model"} <= set(report)
    assert all(Path(p).exists() for p in report["plots"]) and len(report["plots"]) == 4


def test_cli_replay_draw_seed_and_what_through_kafka_refuses() -> None:
    def run(*argv: str) -> Any:
        return CliRunner().invoke(main, ["replay", "--requests", "1500", "--policy", "thompson", *argv])

    base = json.loads(run("--seed", "2", "--format", "json").output)
    apart = run("--seed", "2", "--draw-seed", "9", "--format", "json")
    assert apart.exit_code == 0, apart.output
    report = json.loads(apart.output)
    assert report["draw_seed"] == 9 and "draw_seed" not in base
    assert report["policies"][0]["traffic_share"] != base["policies"][0]["traffic_share"]  # other draws

    # options the run through a worker cannot honour are refused before anything starts, not ignored
    refused = CliRunner().invoke(
        main, ["replay", "--through-kafka", "--one-pass", "--draw-seed", "3", "--policy", "uniform"]
    )
    assert refused.exit_code == 2
    assert "--policy, --one-pass, --draw-seed cannot be used with --through-kafka" in refused.output


def test_a_split_every_few_blocks_spends_the_budget_as_a_split_every_block() -> None:
    """``budget_split_every`` (the worker's split: shares now and then, the others' slack at every block) spends
    the budget as the replay's split after every block does, within 3 % (fixed seeds)."""
    from banditroute.sim.replay import default_setup

    table = load_outcomes()
    budget = 0.002
    for seed in (1, 2):
        cost = []
        for every in (1, 20):
            setup = default_setup(table, 20.0, budget, budget_split_every=every)
            run = replay(table, requests=6000, seed=seed, policies=["thompson"], budget=budget, setup=setup)
            cost.append(run.to_json()["policies"][0]["mean_cost_usd"] / budget)
        assert cost[0] == pytest.approx(1.0, abs=0.03) and cost[1] == pytest.approx(1.0, abs=0.03), cost
