"""``banditroute bench``: performance measurements. Each subcommand lives in ``banditroute.bench.<name>``."""

from __future__ import annotations

import json
from typing import Any

import click


@click.group()
def bench() -> None:
    """Benchmarks (policy core, end to end, ...)."""


def emit(result: dict[str, Any], fmt: str, title: str) -> None:
    """Print ``result`` as JSON or as a two-column rich table (nested dicts flattened with dots)."""
    if fmt == "json":
        click.echo(json.dumps(result, indent=2, sort_keys=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")

    def rows(prefix: str, data: dict[str, Any]) -> None:
        for key, value in data.items():
            if isinstance(value, dict):
                rows(f"{prefix}{key}.", value)
            elif isinstance(value, float):
                table.add_row(prefix + key, f"{value:,.2f}")
            else:
                table.add_row(prefix + key, str(value))

    rows("", result)
    Console().print(table)


@bench.command("policy")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--models", type=click.IntRange(2, 1000), default=15, show_default=True, help="Arms in the task type."
)
@click.option(
    "--seconds", type=click.FloatRange(0.01), default=1.0, show_default=True, help="Time per measured loop."
)
@click.option(
    "--iterations", type=click.IntRange(1), default=None, help="Fixed call count per loop (smoke tests)."
)
def policy(fmt: str, models: int, seconds: float, iterations: int | None) -> None:
    """Decisions/s, updates/s and state size of the policy core versus MABWiser Thompson sampling."""
    from banditroute.bench.policy import run_policy_bench

    try:
        result = run_policy_bench(models=models, seconds=seconds, iterations=iterations)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    emit(result, fmt, "banditroute bench policy")


from banditroute.bench.route import route as _route_bench  # noqa: E402

bench.add_command(_route_bench)

from banditroute.bench.cli import COMMANDS as _BROKER_BENCHES  # noqa: E402

for _command in _BROKER_BENCHES:
    bench.add_command(_command)
