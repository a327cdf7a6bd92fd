"""``banditroute priors fit``: quality priors from logged outcomes or offline benchmark results."""

from __future__ import annotations

from pathlib import Path

import click

from banditroute.sim.priors import DEFAULT_PRIOR_STRENGTH


@click.group()
def priors() -> None:
    """Quality priors from offline evaluations, for models.yaml, the worker's config folder and replay."""


@priors.command("fit")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Outcomes CSV (task_type,prompt_id,model,quality,cost_usd,latency_ms), as for replay.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the priors here (YAML); default: print them.",
)
@click.option(
    "--max-strength",
    type=click.FloatRange(0, min_open=True),
    default=DEFAULT_PRIOR_STRENGTH,
    show_default=True,
    help="The most observations a fitted prior may be worth.",
)
def fit(data: Path, out: Path | None, max_strength: float) -> None:
    """Fit per-model and per-task-type Beta quality priors with an effective sample size.

    A model's prior for unseen task types has its mean quality and a strength that falls as its quality
    varies more between the data's task types; a task type in the data gets its own mean. Use the file with
    `replay --priors FILE`, or copy a model's pair into models.yaml as quality_prior.
    """
    from banditroute.sim.priors import fit_priors
    from banditroute.sim.table import load_outcomes

    try:
        fitted = fit_priors(load_outcomes(data), max_strength)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    text = fitted.to_yaml()
    if out is None:
        click.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    click.echo(
        f"wrote priors for {len(fitted.models)} models and {len(fitted.task_types)} task types to {out}"
    )
