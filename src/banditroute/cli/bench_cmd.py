"""``banditroute bench``: performance measurements. The click commands live here; each measurement is a function
in ``banditroute.bench.<name>`` (imported inside its command, so ``--help`` stays fast)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
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
            elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                rows(f"{prefix}{key}.", {str(i): v for i, v in enumerate(value)})
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
@click.option(
    "--pooled-prior-weight",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Give the state pooled priors with this weight (1: pooled; < 1: the robust mixture prior).",
)
def policy(
    fmt: str, models: int, seconds: float, iterations: int | None, pooled_prior_weight: float | None
) -> None:
    """Decisions/s, plans/s, updates/s and state size of the policy core versus MABWiser Thompson sampling."""
    from banditroute.bench.policy import run_policy_bench

    try:
        result = run_policy_bench(
            models=models, seconds=seconds, iterations=iterations, pooled_prior_weight=pooled_prior_weight
        )
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    emit(result, fmt, "banditroute bench policy")


@bench.command("route")
@click.option("--requests", "-n", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--concurrency", "-c", type=click.IntRange(1, 10_000), default=16, show_default=True)
@click.option("--task-type", default="bench", show_default=True)
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.01), default=5.0, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=50, show_default=True)
@click.option(
    "--bootstrap", default=None, help="Kafka bootstrap servers (default: BANDITROUTE_KAFKA_BOOTSTRAP)."
)
@click.option("--topic-prefix", default=None, help="Topic prefix (default: BANDITROUTE_TOPIC_PREFIX).")
@click.option(
    "--mode",
    type=click.Choice(["remote", "local"]),
    default="remote",
    show_default=True,
    help="remote: round trips to a running worker; local: in-process decisions (RouterClient(mode='local')).",
)
@click.option(
    "--rate",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Pace the calls at this many route()/s in total (0: as fast as possible).",
)
@click.option(
    "--feedback",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Local mode: after the measured calls, send an outcome for this share of their decisions (1: all) "
    "and wait until the worker has learnt them (read back from the state topic); adds 'learning' "
    "(feedback_sent, learnt, learnt_s, learnt_per_s). Needs a worker nothing else feeds the task type.",
)
@click.option(
    "--learn-timeout",
    "learn_timeout_s",
    type=click.FloatRange(0.1),
    default=120.0,
    show_default=True,
    help="With --feedback: stop waiting after this many seconds without a newly learnt outcome.",
)
@click.option(
    "--client",
    "client_kind",
    type=click.Choice(["async", "sync"]),
    default="async",
    show_default=True,
    help="Local mode: sync calls SyncRouterClient.route() from --concurrency threads instead of awaiting "
    "RouterClient.route() in tasks.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def route(
    requests: int,
    concurrency: int,
    task_type: str,
    timeout_s: float,
    warmup: int,
    bootstrap: str | None,
    topic_prefix: str | None,
    mode: str,
    rate: float,
    feedback: float,
    learn_timeout_s: float,
    client_kind: str,
    fmt: str,
) -> None:
    """p50/p99/p999 of route(), route()/s and CPU per route from one process. --mode remote: round trips
    (client -> requests -> worker -> reply topic) against a running worker; --mode local: in-process decisions,
    plus the lag until each decision is on the decisions topic. Exits 3 when Kafka cannot be reached."""
    from banditroute.bench.route import run_route_bench
    from banditroute.cli.output import EXIT_UNAVAILABLE, fail, make_ctx

    if feedback > 0 and mode != "local":
        raise click.BadParameter("is measured in local mode only", param_hint="--feedback")
    if client_kind == "sync" and (mode != "local" or feedback > 0):
        raise click.BadParameter("measures local mode, without --feedback", param_hint="--client sync")
    ctx = make_ctx(bootstrap, topic_prefix, fmt)
    common: dict[str, Any] = {
        "requests": requests,
        "concurrency": concurrency,
        "task_type": task_type,
        "warmup": warmup,
        "rate": rate,
    }
    try:
        if client_kind == "sync":
            from banditroute.bench.route import run_sync_route_bench

            result = run_sync_route_bench(ctx.settings, **common)
            emit(result, fmt, "banditroute bench route --mode local --client sync")
            return
        result = asyncio.run(
            run_route_bench(
                ctx.settings,
                **common,
                timeout_s=timeout_s,
                mode="local" if mode == "local" else "remote",
                feedback=feedback,
                learn_timeout_s=learn_timeout_s,
            )
        )
    except RuntimeError as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    emit(result, fmt, f"banditroute bench route --mode {mode}")


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


def _run(coro: Any) -> dict[str, Any]:
    from banditroute.kafka.errors import KafkaConnectionError

    try:
        result: dict[str, Any] = asyncio.run(coro)
    except (KafkaConnectionError, RuntimeError) as exc:
        from banditroute.cli.output import EXIT_UNAVAILABLE, fail

        fail(str(exc), EXIT_UNAVAILABLE)
        raise  # pragma: no cover - fail() exits
    return result


@bench.command("e2e")
@FORMAT
@BOOTSTRAP
@click.option("--seconds", type=click.FloatRange(0.5), default=5.0, show_default=True, help="Per load level.")
@click.option(
    "--requests",
    "-n",
    type=click.IntRange(100),
    default=150_000,  # bench.e2e.DRAIN_REQUESTS (not imported here: the CLI starts without the bench's modules)
    show_default=True,
    help="Pre-filled drain (the relay and the decide loop alone get three times as many).",
)
@click.option(
    "--workers",
    default="",
    show_default=True,
    help="Also measure this many worker processes at once, comma-separated (e.g. 1,2,4).",
)
@click.option("--partitions", type=click.IntRange(1, 64), default=8, show_default=True, help="For --workers.")
@click.option(
    "--driver-procs",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes producing the pre-filled requests, so the driver is not the limit on a larger machine.",
)
@click.option(
    "--repeat",
    type=click.IntRange(1, 50),
    default=1,
    show_default=True,
    help="Run the whole comparison this many times in a row and report the medians, their range and in how "
    "many runs each target held (one run's rates move by a factor of two on a 2-core machine).",
)
def e2e(
    fmt: str,
    bootstrap: str | None,
    seconds: float,
    requests: int,
    workers: str,
    partitions: int,
    driver_procs: int,
    repeat: int,
) -> None:
    """The worker on the broker: sustained decisions/s and CPU per request vs a raw relay, latency added over
    the relay and CPU per request against it at the same rates (1,000/s, 5,000/s, half the worker's sustained
    rate), and with --workers the rate of several worker processes."""
    from banditroute.bench.e2e import run_e2e_repeated

    try:
        counts = tuple(int(n) for n in workers.split(",") if n.strip())
    except ValueError:
        raise click.BadParameter(
            "a comma-separated list of counts, e.g. 1,2,4", param_hint="--workers"
        ) from None
    if any(n < 1 or n > partitions for n in counts):
        raise click.BadParameter(f"each count must be 1..{partitions} (--partitions)", param_hint="--workers")
    result = run_e2e_repeated(
        _bootstrap(bootstrap),
        repeat=repeat,
        requests=requests,
        seconds=seconds,
        workers=counts,
        worker_partitions=partitions,
        driver_procs=driver_procs,
    )
    emit(_run(result), fmt, "bench e2e")


@bench.command("freshness")
@FORMAT
@BOOTSTRAP
@click.option("--samples", type=click.IntRange(1), default=30, show_default=True)
def freshness(fmt: str, bootstrap: str | None, samples: int) -> None:
    """Feedback produced -> first decision using the updated posterior (p50/p99 ms)."""
    from banditroute.bench.freshness import run_freshness_bench

    emit(_run(run_freshness_bench(_bootstrap(bootstrap), samples=samples)), fmt, "bench freshness")


def _ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from exc


@bench.command("scale")
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
    emit(result, fmt, "bench scale")


@bench.command("all")
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
    from banditroute.bench.e2e import DRAIN_REQUESTS, run_e2e_bench
    from banditroute.bench.freshness import run_freshness_bench
    from banditroute.bench.policy import run_policy_bench
    from banditroute.bench.scale import run_scale_bench

    server = _bootstrap(bootstrap)
    results: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds")}
    results["policy"] = (
        run_policy_bench(models=15, seconds=0.05, batch=100_000) if quick else run_policy_bench(models=15)
    )
    results["e2e"] = _run(
        run_e2e_bench(
            server,
            requests=500 if quick else DRAIN_REQUESTS,
            seconds=0.5 if quick else 5.0,
            workers=(1,) if quick else (1, 2, 4),
            worker_partitions=2 if quick else 8,
        )
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
    emit(summary, fmt, "bench all")
