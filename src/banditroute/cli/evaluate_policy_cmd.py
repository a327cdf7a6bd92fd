"""``banditroute evaluate-policy``: the policy evaluation suite over several datasets, objectives and seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from banditroute.sim.suite import BUDGET_FRACTIONS, DEFAULT_VARIANTS, VARIANTS


def _fmt(figures: dict[str, Any], key: str, pct: bool = False) -> str:
    if key not in figures:
        return "-"
    value = figures[key]
    if pct:
        return f"{value['mean']:.3f} (worst {value['worst']:.3f})"
    return f"{value['mean']:+.2f} ±{value['sd']:.2f} (worst {value['worst']:+.2f})"


@click.command("evaluate-policy")
@click.option(
    "--data",
    "data",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An outcomes CSV (replay --data format). Repeatable.",
)
@click.option(
    "--data-dir",
    "data_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder with one sub-folder per dataset, each holding outcomes.csv. Repeatable.",
)
@click.option(
    "--synthetic",
    multiple=True,
    default=("synthetic_disagree", "synthetic_specialists"),
    show_default=True,
    help="Generated tables whose task types rank models differently, or family:<seed>, a member of a seeded"
    " family of 11 x 3 tables (sim/family.py). Repeatable; --no-synthetic for none.",
)
@click.option("--no-synthetic", is_flag=True, help="Leave the synthetic tables out.")
@click.option(
    "--lam",
    "lams",
    multiple=True,
    type=click.FloatRange(0),
    default=(5.0, 20.0, 50.0),
    show_default=True,
    help="Utility = quality - lam * cost_usd. Repeatable.",
)
@click.option("--seeds", type=click.IntRange(1), default=10, show_default=True)
@click.option(
    "--first-seed",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Replay seeds FIRST_SEED .. FIRST_SEED + SEEDS - 1: check a choice made on seeds 0..n-1 on fresh ones.",
)
@click.option("--requests", type=click.IntRange(1), default=20000, show_default=True)
@click.option(
    "--delay",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="Feedback delay: outcomes are learnt in blocks of this many requests.",
)
@click.option(
    "--policy",
    "policies",
    multiple=True,
    type=click.Choice(sorted(VARIANTS)),
    help=f"Repeatable; default: {', '.join(DEFAULT_VARIANTS)}.",
)
@click.option(
    "--budget-fraction",
    "budget_fractions",
    multiple=True,
    type=click.FloatRange(0, 1),
    default=BUDGET_FRACTIONS,
    show_default=True,
    help="Budget cells: B = cheapest mean cost + f x (best-quality model's cost - cheapest). Repeatable.",
)
@click.option(
    "--budget-usd",
    "budgets_usd",
    multiple=True,
    type=click.FloatRange(0, min_open=True),
    help="Budget cells at B USD per request, the same for every dataset. Repeatable.",
)
@click.option("--no-budget", is_flag=True, help="Leave the budget cells out.")
@click.option("--no-one-pass", is_flag=True, help="Leave the one-pass cells out.")
@click.option("--jobs", type=click.IntRange(1), default=None, help="Worker processes (default: CPU count).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
    help="markdown: one row per cell (captured mean and worst seed; budget: quality share / cost over B).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write regret curves (PNG, one per cell) and suite.json here.",
)
def evaluate_policy(
    data: tuple[Path, ...],
    data_dirs: tuple[Path, ...],
    synthetic: tuple[str, ...],
    no_synthetic: bool,
    lams: tuple[float, ...],
    seeds: int,
    first_seed: int,
    requests: int,
    delay: int,
    policies: tuple[str, ...],
    budget_fractions: tuple[float, ...],
    budgets_usd: tuple[float, ...],
    no_budget: bool,
    no_one_pass: bool,
    jobs: int | None,
    fmt: str,
    out: Path | None,
) -> None:
    """Run every policy over several outcome datasets x lambdas x seeds, in budget mode and one pass.

    Prints per cell and policy the mean captured share of the per-task oracle's gain and its worst seed
    (realised and on expected utility), in budget mode the quality as a share of the budget oracle's and
    mean cost / B, and overall figures. Without --data/--data-dir only the synthetic tables are used.
    """
    from banditroute.sim.suite import dataset_sources, evaluate, plot_suite

    try:
        sources = dataset_sources(list(data), list(data_dirs), () if no_synthetic else synthetic)
        result = evaluate(
            sources,
            lams=lams,
            seeds=seeds,
            requests=requests,
            delay=delay,
            variants=policies or DEFAULT_VARIANTS,
            budget_fractions=() if no_budget else budget_fractions,
            budgets_usd=() if no_budget else budgets_usd,
            one_pass=not no_one_pass,
            jobs=jobs,
            first_seed=first_seed,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    report = result.to_json()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        report["plots"] = [str(p) for p in plot_suite(result, out)]
        (out / "suite.json").write_text(json.dumps(report, indent=2))
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
        return
    if fmt == "markdown":
        from banditroute.sim.suite_report import markdown_table

        click.echo(markdown_table(report), nl=False)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    table = Table(title=f"policy evaluation suite: {seeds} seeds, {requests} requests, delay {delay}")
    for col in (
        "cell",
        "policy",
        "captured (realised)",
        "captured (expected)",
        "budget: quality share",
        "cost / B",
    ):
        table.add_column(col)
    for cell in report["cells"]:
        for i, (name, figures) in enumerate(cell["policies"].items()):
            worse = " (below naive)" if figures.get("vs_naive", {}).get("worse") else ""
            table.add_row(
                cell["label"] if i == 0 else "",
                name + worse,
                _fmt(figures, "captured"),
                _fmt(figures, "captured_expected"),
                _fmt(figures, "quality_share", pct=True),
                _fmt(figures, "cost_over_budget", pct=True),
            )
        table.add_section()
    console.print(table)
    overall = Table(title="overall (mean over cells; worst cell mean; worst seed)")
    keys = sorted({k for row in report["overall"].values() for k in row})
    overall.add_column("policy")
    for k in keys:
        overall.add_column(k.replace("_", " "), justify="right")
    for name, row in report["overall"].items():
        overall.add_row(name, *[f"{row[k]:.3f}" if k in row else "-" for k in keys])
    console.print(overall)
    for path in report.get("plots", []):
        click.echo(path)
