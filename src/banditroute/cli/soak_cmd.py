"""``banditroute soak``: run a worker at a fraction of its maximum rate for minutes and check it stays healthy."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.option("--minutes", type=click.FloatRange(0.1), default=10.0, show_default=True, help="Soak duration.")
@click.option(
    "--rate-fraction",
    type=click.FloatRange(0.01, 1.0),
    default=0.5,
    show_default=True,
    help="Share of the measured maximum closed-loop rate to run at.",
)
@click.option(
    "--burst",
    type=click.IntRange(100),
    default=6000,
    show_default=True,
    help="Requests in the max-rate burst.",
)
@click.option(
    "--max-rss-growth",
    type=click.FloatRange(0.0),
    default=0.10,
    show_default=True,
    help="Allowed RSS growth.",
)
@click.option(
    "--max-tail-growth",
    type=click.FloatRange(0.0),
    default=0.01,
    show_default=True,
    help="Allowed RSS growth implied by the fitted slope over the last 15 minutes (last half of shorter runs).",
)
@click.option(
    "--bootstrap", default=None, help="Kafka bootstrap servers (default: BANDITROUTE_KAFKA_BOOTSTRAP)."
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the result with every sample as JSON here, and a PNG of RSS, lag and rate beside it.",
)
def soak(
    minutes: float,
    rate_fraction: float,
    burst: int,
    max_rss_growth: float,
    max_tail_growth: float,
    bootstrap: str | None,
    output: Path | None,
) -> None:
    """Start a worker on fresh topics, measure its maximum rate, run it at --rate-fraction of that for --minutes
    (RSS reported every minute), and check RSS growth and its trend over the last 15 minutes, the join table
    bound, that consumer lag returns to zero and that every feedback is learnt once (exit 1 if not)."""
    from banditroute.bench.soak import Soak, plot_soak
    from banditroute.settings import Settings

    servers = bootstrap or Settings().kafka_bootstrap
    result = Soak(
        servers,
        minutes=minutes,
        rate_fraction=rate_fraction,
        burst=burst,
        max_rss_growth=max_rss_growth,
        max_tail_growth=max_tail_growth,
        log=lambda line: click.echo(line, err=True),
    ).run()
    summary = result.summary()
    text = json.dumps(summary, indent=2)
    click.echo(text)
    if output is not None:
        samples = [vars(s) for s in result.samples]
        output.write_text(json.dumps({**summary, "samples": samples}, indent=2), encoding="utf-8")
        click.echo(f"plot: {plot_soak(result, output.with_suffix('.png'))}", err=True)
    if not result.ok:
        failed = [name for name, ok in result.checks.items() if not ok]
        raise click.ClickException(f"soak checks failed: {', '.join(failed)}")
