"""Click commands ``bench e2e``, ``bench freshness``, ``bench scale`` and ``bench all`` (registered in
:mod:`banditroute.cli.bench_cmd`). Heavy imports happen inside the commands."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
BOOTSTRAP = click.option(
    "--bootstrap", default=None, help="Kafka bootstrap servers (default: BANDITROUTE_KAFKA_BOOTSTRAP)."
)


def _bootstrap(value: str | None) -> str:
    if value:
        return value
    from banditroute.settings import Settings

    return Settings().kafka_bootstrap


def _emit(result: dict[str, Any], fmt: str, title: str) -> None:
    from banditroute.cli.bench_cmd import emit

    emit(result, fmt, title)


def _run(coro: Any) -> dict[str, Any]:
    from aiokafka.errors import KafkaConnectionError

    try:
        result: dict[str, Any] = asyncio.run(coro)
    except (KafkaConnectionError, RuntimeError) as exc:
        from banditroute.cli.output import EXIT_UNAVAILABLE, fail

        fail(str(exc), EXIT_UNAVAILABLE)
        raise  # pragma: no cover - fail() exits
    return result


@click.command("e2e")
@FORMAT
@BOOTSTRAP
@click.option("--seconds", type=click.FloatRange(0.5), default=5.0, show_default=True, help="Per load level.")
@click.option(
    "--requests", "-n", type=click.IntRange(100), default=30_000, show_default=True, help="Pre-filled drain."
)
def e2e(fmt: str, bootstrap: str | None, seconds: float, requests: int) -> None:
    """One worker on the broker: sustained decisions/s vs a raw relay, latency at 25/50/90 % load."""
    from banditroute.bench.e2e import run_e2e_bench

    _emit(_run(run_e2e_bench(_bootstrap(bootstrap), requests=requests, seconds=seconds)), fmt, "bench e2e")


@click.command("freshness")
@FORMAT
@BOOTSTRAP
@click.option("--samples", type=click.IntRange(1), default=30, show_default=True)
def freshness(fmt: str, bootstrap: str | None, samples: int) -> None:
    """Feedback produced -> first decision using the updated posterior (p50/p99 ms)."""
    from banditroute.bench.freshness import run_freshness_bench

    _emit(_run(run_freshness_bench(_bootstrap(bootstrap), samples=samples)), fmt, "bench freshness")


def _ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from exc


@click.command("scale")
@FORMAT
@click.option("--task-types", default="10,100,1000,10000", show_default=True)
@click.option("--models", default="3,10,50", show_default=True)
@click.option("--decisions", type=click.IntRange(10), default=20_000, show_default=True)
@click.option("--join-n", type=click.IntRange(10), default=100_000, show_default=True)
def scale(fmt: str, task_types: str, models: str, decisions: int, join_n: int) -> None:
    """Memory and decision time vs task types and models; join memory per in-flight decision (no broker)."""
    from banditroute.bench.scale import run_scale_bench

    result = run_scale_bench(
        task_types=_ints(task_types), models=_ints(models), decisions=decisions, join_n=join_n
    )
    _emit(result, fmt, "bench scale")


@click.command("all")
@FORMAT
@BOOTSTRAP
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Results file (default: benchmarks/results-<UTC date>.json).",
)
@click.option("--quick", is_flag=True, help="Tiny sizes (smoke runs; figures not meaningful).")
def all_(fmt: str, bootstrap: str | None, output: Path | None, quick: bool) -> None:
    """policy + e2e + freshness + scale; writes the results file with the machine."""
    from banditroute.bench.common import machine
    from banditroute.bench.e2e import run_e2e_bench
    from banditroute.bench.freshness import run_freshness_bench
    from banditroute.bench.policy import run_policy_bench
    from banditroute.bench.scale import run_scale_bench

    server = _bootstrap(bootstrap)
    results: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds")}
    results["policy"] = run_policy_bench(models=15, seconds=0.05 if quick else 1.0)
    results["e2e"] = _run(
        run_e2e_bench(server, requests=500 if quick else 30_000, seconds=1.0 if quick else 5.0)
    )
    results["freshness"] = _run(run_freshness_bench(server, samples=3 if quick else 30))
    results["scale"] = (
        run_scale_bench(task_types=(10, 100), models=(3,), decisions=200, join_n=200)
        if quick
        else run_scale_bench()
    )
    results["machine"] = machine(server)
    path = output or Path("benchmarks") / f"results-{datetime.now(UTC):%Y-%m-%d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    summary = {
        "results_file": str(path),
        "e2e.router_per_s": results["e2e"]["router_per_s"],
        "e2e.relay_per_s": results["e2e"]["relay_per_s"],
        "e2e.ratio": results["e2e"]["ratio"],
        "e2e.p99_ms_at_50": results["e2e"]["latency_ms"]["50"]["p99"],
        "freshness.p99_ms": results["freshness"]["p99_ms"],
        "join.bytes_per_in_flight": results["scale"]["join"]["bytes_per_in_flight"],
    }
    _emit(summary, fmt, "bench all")


COMMANDS = (e2e, freshness, scale, all_)
