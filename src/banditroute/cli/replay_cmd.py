"""``banditroute replay``: replay recorded outcomes through every policy in process and compare them."""

from __future__ import annotations

import json
from pathlib import Path

import click

from banditroute.core.baselines import POLICIES
from banditroute.core.pooling import DEFAULT_MAX_STRENGTH
from banditroute.sim.replay import DEFAULT_POLICIES


@click.command()
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Outcomes CSV (task_type,prompt_id,model,quality,cost_usd,latency_ms). Default: the shipped example.",
)
@click.option(
    "--objective-lambda",
    "lam",
    type=click.FloatRange(0),
    default=20.0,
    show_default=True,
    help="Utility = quality - L * cost_usd.",
)
@click.option(
    "--budget",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Mean cost per request budget (USD) over all task types: the router maximises quality under it.",
)
@click.option("--requests", "n", type=click.IntRange(1), default=20000, show_default=True)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the request stream (and of the draws)."
)
@click.option(
    "--draw-seed",
    type=int,
    default=None,
    help="Seed the policies' draws apart from the request stream: the same requests, other draws (in process "
    "only). Default: --seed.",
)
@click.option(
    "--policy",
    "policies",
    multiple=True,
    type=click.Choice(sorted(POLICIES)),
    help="Repeatable; default: thompson and every baseline.",
)
@click.option("--mix", default=None, help="Task mix, e.g. 'gsm8k=1,mmlu-stem=3'. Default: as in the file.")
@click.option(
    "--delay",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="Feedback delay: outcomes are learnt in blocks of this many requests.",
)
@click.option(
    "--pooled-prior-strength",
    type=click.FloatRange(0),
    default=DEFAULT_MAX_STRENGTH,
    show_default=True,
    help="The most calls an empirical-Bayes quality prior pooled over task types may be worth (it is worth "
    "less the more task types disagree); 0 = off.",
)
@click.option(
    "--priors",
    "priors_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Quality priors from `banditroute priors fit`.",
)
@click.option(
    "--one-pass",
    is_flag=True,
    help="Show every prompt exactly once in a seeded random order (--requests and --mix are then ignored).",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Write plots here."
)
@click.option(
    "--through-kafka",
    is_flag=True,
    help="Run the requests through a real worker instead (started here on fresh topics at "
    "BANDITROUTE_KAFKA_BOOTSTRAP; Thompson only): rounds of --delay requests, each round's "
    "recorded outcomes sent as feedback and learnt before the next round.",
)
def replay(
    data: Path | None,
    lam: float,
    budget: float | None,
    n: int,
    seed: int,
    draw_seed: int | None,
    policies: tuple[str, ...],
    mix: str | None,
    delay: int,
    pooled_prior_strength: float,
    priors_file: Path | None,
    one_pass: bool,
    fmt: str,
    out: Path | None,
    through_kafka: bool,
) -> None:
    """Replay recorded outcomes: each policy routes the same sampled requests and learns the recorded outcome."""
    from banditroute.sim.priors import FittedPriors
    from banditroute.sim.replay import default_setup
    from banditroute.sim.replay import replay as run_replay
    from banditroute.sim.table import load_outcomes

    if through_kafka:
        refused = [
            name
            for name, given in (
                ("--policy", bool(policies) and set(policies) != {"thompson"}),
                ("--priors", priors_file is not None),
                ("--one-pass", one_pass),
                ("--draw-seed", draw_seed is not None),
            )
            if given
        ]
        if refused:
            raise click.UsageError(
                f"{', '.join(refused)} cannot be used with --through-kafka (it runs the worker's Thompson sampler "
                "on the catalog's priors, its draws seeded by --seed)"
            )
    try:
        table = load_outcomes(data)
        if through_kafka:
            from banditroute.settings import Settings
            from banditroute.sim.replay_kafka import run_with_own_worker

            result = run_with_own_worker(
                Settings().kafka_bootstrap,
                table,
                lam=lam,
                requests=n,
                seed=seed,
                mix=mix,
                delay=delay,
                pooled_prior_strength=pooled_prior_strength,
                budget=budget,
            )
        else:
            fitted = FittedPriors.load(priors_file) if priors_file is not None else None
            setup = default_setup(
                table, lam, budget, pooled_prior_strength=pooled_prior_strength, priors=fitted
            )
            result = run_replay(
                table,
                lam=lam,
                budget=budget,
                requests=n,
                seed=seed,
                policies=policies or DEFAULT_POLICIES,
                mix=mix,
                delay=delay,
                setup=setup,
                one_pass=one_pass,
                draw_seed=draw_seed,
            )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    except (RuntimeError, OSError) as exc:  # the broker or the worker (through Kafka)
        from banditroute.cli.output import EXIT_UNAVAILABLE, fail

        fail(str(exc), EXIT_UNAVAILABLE)
    report = result.to_json()
    if out is not None:
        from banditroute.sim.plots import plot_replay

        report["plots"] = [str(p) for p in plot_replay(result, out)]
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table_out = Table(title=f"replay of {report['requests']} requests, λ = {lam:g} ({report['data']})")
    for col in ("policy", "mean quality", "mean cost $", "mean utility", "regret", "captured"):
        table_out.add_column(col, justify="right" if col != "policy" else "left")
    for p in report["policies"]:
        captured = "-" if p["captured"] is None else f"{p['captured']:+.2f}"
        table_out.add_row(
            p["name"],
            f"{p['mean_quality']:.4f}",
            f"{p['mean_cost_usd']:.5f}",
            f"{p['mean_utility']:.4f}",
            f"{p['regret']:.4f}",
            captured,
        )
    o, b = report["oracle"], report["best_single_model"]
    table_out.add_row(
        "oracle (per task)",
        f"{o['mean_quality']:.4f}",
        f"{o['mean_cost_usd']:.5f}",
        f"{o['mean_utility']:.4f}",
        "",
        "",
    )
    table_out.add_row(
        f"best single: {b['name']}",
        f"{b['mean_quality']:.4f}",
        f"{b['mean_cost_usd']:.5f}",
        f"{b['mean_utility']:.4f}",
        "",
        "",
    )
    Console().print(table_out)
    for path in report.get("plots", []):
        click.echo(path)
