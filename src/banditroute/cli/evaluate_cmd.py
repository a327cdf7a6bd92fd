"""``banditroute evaluate``: off-policy evaluation of a candidate policy configuration from logged JSONL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


@click.command()
@click.option(
    "--decisions",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="RoutingDecision JSON lines (live decisions; shadow ones are ignored here).",
)
@click.option(
    "--feedback",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Feedback JSON lines.",
)
@click.option(
    "--config",
    "config_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Config folder with the candidate's models.yaml / policy.yaml (default ./config, else the packaged "
    "defaults).",
)
@click.option(
    "--lam",
    type=click.FloatRange(0),
    default=None,
    help="Candidate λ (and evaluation utility λ); default from config.",
)
@click.option("--mu", type=click.FloatRange(0), default=None, help="Candidate μ; default from config.")
@click.option(
    "--budget",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Candidate mean-cost budget (USD).",
)
@click.option(
    "--half-life", type=click.FloatRange(0, min_open=True), default=None, help="Candidate half-life (events)."
)
@click.option(
    "--prior", type=(float, float), default=None, help="Candidate Beta quality prior for every model."
)
@click.option("--no-learn", is_flag=True, help="Evaluate the candidate frozen at its prior (stationary).")
@click.option(
    "--shadow",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Shadow decisions (shadow: true) to compare with the live ones.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def evaluate(
    decisions: Path,
    feedback: Path,
    config_dir: Path | None,
    lam: float | None,
    mu: float | None,
    budget: float | None,
    half_life: float | None,
    prior: tuple[float, float] | None,
    no_learn: bool,
    shadow: Path | None,
    fmt: str,
) -> None:
    """Estimate (IPS, SNIPS, DR with 95 % CIs) the value of a candidate configuration on logged traffic."""
    import dataclasses

    from banditroute.config import ConfigError, RouterConfig, resolve_config_dir
    from banditroute.events import Feedback, RoutingDecision
    from banditroute.sim.ope import evaluate_policy, join_logs, read_jsonl
    from banditroute.sim.shadow import compare_shadow

    try:
        config = RouterConfig.load(config_dir or resolve_config_dir(Path("config"), explicit=False)[0])
        decided = read_jsonl(decisions, RoutingDecision)
        fed = read_jsonl(feedback, Feedback)
    except (ConfigError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    models = config.models
    if prior is not None:
        if prior[0] <= 0 or prior[1] <= 0:
            raise click.BadParameter("both prior values must be > 0", param_hint="--prior")
        models = tuple(dataclasses.replace(m, quality_prior=prior) for m in models)
    known = {m.name for m in models}
    from banditroute.core import TaskPolicy

    changes: dict[str, Any] = {}
    if lam is not None:
        changes["lam"] = lam
    if mu is not None:
        changes["mu"] = mu
    if budget is not None:
        changes.update(objective="budget", budget_mean_cost_usd=budget)
    if half_life is not None:
        changes["half_life"] = half_life
    cache: dict[str, TaskPolicy] = {}

    def policy_for(task: str) -> TaskPolicy:
        tp = cache.get(task)  # one object per task type: the core caches plans by policy identity
        if tp is None:
            mapping = config.task_policies.get(task, config.default_policy)
            tp = cache[task] = dataclasses.replace(TaskPolicy.from_mapping(mapping), **changes)
        return tp

    default = dataclasses.replace(TaskPolicy.from_mapping(config.default_policy), **changes)
    eval_lam, eval_mu = default.lam, default.mu
    catalog = {m.name: m for m in models}
    steps = join_logs(decided, fed, lam=eval_lam, mu=eval_mu, catalog=catalog)
    unknown = sorted({s.model for s in steps} - known)
    result = evaluate_policy(steps, models, policy_for, learn=not no_learn)
    report: dict[str, Any] = {"utility": {"lam": eval_lam, "mu": eval_mu}, **result.to_json()}
    if unknown:
        report["models_not_in_candidate_catalog"] = unknown
    if shadow is not None:
        try:
            shadows = read_jsonl(shadow, RoutingDecision)
        except (ValueError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc
        report["shadow"] = compare_shadow(decided, shadows, fed, lam=eval_lam, mu=eval_mu)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(
        f"{report['n']} logged decisions with feedback ({report['n_without_feedback']} without); "
        f"effective sample size {report['effective_sample_size']:.1f}"
    )
    for key in ("logged_policy", "ips", "snips", "dr"):
        e = report[key]
        click.echo(f"  {key:14s} {e['value']:.4f}  95% CI [{e['ci95_low']:.4f}, {e['ci95_high']:.4f}]")
    if "shadow" in report:
        s = report["shadow"]
        agreement = "n/a" if s["agreement"] is None else f"{s['agreement']:.3f}"
        click.echo(
            f"shadow: {s['matched']} matched, agreement {agreement}, "
            f"SNIPS {s['ope']['snips']['value']:.4f}, DR {s['ope']['dr']['value']:.4f}"
        )
