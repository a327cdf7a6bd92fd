"""``banditroute demo`` (the README's main job) and ``banditroute simulate``."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import yaml

from banditroute.cli.output import EXIT_UNAVAILABLE, emit_json, fail, print_table, resolve_format
from banditroute.config import DEFAULT_SCENARIO


def _load_scenario(path: Path) -> Any:
    from banditroute.sim.scenario import Scenario, ScenarioError

    try:
        return Scenario.load(path)
    except (OSError, ScenarioError) as exc:
        fail(f"cannot load scenario {path}: {exc}")


POOLING_MIN_TASK_TYPES = 4
"""Worlds with fewer task types are demonstrated without pooled priors (see ``_write_worker_config``)."""


def _write_worker_config(scenario: Any, folder: Path) -> Path:
    """models.yaml and policy.yaml for a worker serving the scenario's models with its objective."""
    folder.mkdir(parents=True, exist_ok=True)
    models = [
        {"name": m.name, "cost_per_call_usd": m.cost_per_call_usd, "latency_ms": m.latency_ms}
        for m in scenario.catalog()
    ]
    (folder / "models.yaml").write_text(yaml.safe_dump({"models": models}, sort_keys=False))
    policy: dict[str, Any] = {"defaults": {"lam": scenario.lam, "mu": scenario.mu, "join": {"wait_s": 60}}}
    if len(scenario.task_types) < POOLING_MIN_TASK_TYPES:
        # Pooled priors over two other task types that agree on a specialist's weakness (the default world's
        # open-coder) can keep it from ever being tried where it is best: the demo's `code` task type stayed on
        # mid-tier in 3 of 8 runs on 2026-12-01. The suite did not support turning pooling off for small groups
        # by default (README "Learning"), so the demo's small worlds run without it, and say so.
        policy["pooling"] = {"max_strength": 0}
    (folder / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    (folder / "rules.yaml").write_text("rules: []\n")
    return folder


def _report(summary: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        emit_json(summary)
        return
    rows = []
    for task, info in summary["task_types"].items():
        top = max(info["final_share"].items(), key=lambda kv: kv[1])
        rows.append(
            [
                task,
                info["decisions"],
                info["best_model"],
                f"{info['final_share'].get(info['best_model'], 0.0):.0%}",
                f"{top[0]} ({top[1]:.0%})",
                f"{info['mean_quality']:.3f}",
                f"{info['mean_cost_usd'] * 1000:.3f}",
            ]
        )
    print_table(
        f"banditroute demo: {summary['requests']} requests in {summary['seconds']:.0f} s",
        [
            "task type",
            "decisions",
            "best model",
            "its final share",
            "most routed (last 500)",
            "quality",
            "cost m$",
        ],
        rows,
    )
    drift_rows = [
        [d["task_type"], d["model"], d["at"], f"{d['share_before']:.0%}", f"{d['share_at_end']:.0%}"]
        for d in summary["drift"]
    ]
    print_table(
        "drift events", ["task type", "model", "at request", "share before", "share at end"], drift_rows
    )
    best = summary["best_single_model_cost_usd"]
    click.echo(
        f"total cost ${summary['total_cost_usd']:.2f} vs ${best['cost_usd']:.2f} always on {best['model']}; "
        f"request→decision p50 {summary['round_trip_ms']['p50']:.1f} ms, p99 {summary['round_trip_ms']['p99']:.1f} ms"
    )
    for path in summary.get("plots", []):
        click.echo(f"plot: {path}")


async def _run_simulation(
    settings: Any, scenario: Any, requests: int, seed: int, rate: float, show: bool
) -> Any:
    from rich.progress import Progress

    from banditroute.sim.kafka_sim import simulate

    if not show:
        return await simulate(settings, scenario, requests=requests, seed=seed, rate=rate)
    with Progress(transient=True, console=_stderr_console()) as progress:
        task = progress.add_task("simulating", total=requests)
        return await simulate(
            settings,
            scenario,
            requests=requests,
            seed=seed,
            rate=rate,
            progress=lambda n: progress.advance(task, n),
        )


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _finish(log: Any, out: Path | None, fmt: str) -> dict[str, Any]:
    from banditroute.sim.kafka_sim import plot, summarise

    summary = summarise(log)
    if out is not None:
        summary["plots"] = [str(p) for p in plot(log, out)]
    _report(summary, fmt)
    return summary


_common = [
    click.option(
        "--scenario",
        type=click.Path(path_type=Path),
        default=DEFAULT_SCENARIO,
        show_default="the packaged default scenario",
        help="Scenario file: synthetic models, task mix and drift events.",
    ),
    click.option("--requests", "n", type=click.IntRange(1, 10_000_000), default=10_000, show_default=True),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option(
        "--rate",
        type=float,
        default=400.0,
        show_default=True,
        help="Requests per second (0: as fast as the router answers).",
    ),
    click.option("--out", type=click.Path(path_type=Path), default=None, help="Folder for the PNG plots."),
    click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json"]),
        default=None,
        help="Output format (default: table on a terminal, JSON otherwise).",
    ),
]


def _with_common(func: Any) -> Any:
    for option in reversed(_common):
        func = option(func)
    return func


@click.command()
@_with_common
@click.option(
    "--bootstrap", default=None, help="Kafka bootstrap servers (default: BANDITROUTE_KAFKA_BOOTSTRAP)."
)
@click.option("--topic-prefix", default=None, help="Topic prefix of the running worker.")
def simulate(
    scenario: Path,
    n: int,
    seed: int,
    rate: float,
    out: Path | None,
    fmt: str | None,
    bootstrap: str | None,
    topic_prefix: str | None,
) -> None:
    """Drive a running worker with a synthetic workload and report what it learnt."""
    from banditroute.settings import Settings

    overrides = {k: v for k, v in {"kafka_bootstrap": bootstrap, "topic_prefix": topic_prefix}.items() if v}
    settings = Settings(**overrides)  # type: ignore[arg-type]  # pydantic-settings fills the rest
    world = _load_scenario(scenario)
    fmt = resolve_format(fmt)
    try:
        log = asyncio.run(_run_simulation(settings, world, n, seed, rate, show=sys.stderr.isatty()))
    except (TimeoutError, RuntimeError, OSError) as exc:
        fail(f"simulation failed: {exc}", EXIT_UNAVAILABLE)
    _finish(log, out, fmt)


@click.command()
@_with_common
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=9092,
    show_default=True,
    help="Port of the local broker to use (started if not running).",
)
@click.option("--keep-broker", is_flag=True, help="Leave a broker that the demo started running afterwards.")
@click.option(
    "--bootstrap",
    default=None,
    help="Use this running broker instead of the local one (nothing is started or stopped).",
)
def demo(
    scenario: Path,
    n: int,
    seed: int,
    rate: float,
    out: Path | None,
    fmt: str | None,
    port: int,
    keep_broker: bool,
    bootstrap: str | None,
) -> None:
    """Start a local broker (if needed) and a worker, run the default scenario through them, and report.

    The scenario has a drift event, so the report shows traffic leaving a degraded model. Plots go to
    --out (default ./demo-output).
    """
    from banditroute.kafka.local import BrokerError, LocalKafka
    from banditroute.settings import Settings

    fmt = resolve_format(fmt)
    world = _load_scenario(scenario)
    out = out or Path("demo-output")
    broker = LocalKafka(port)
    started = False
    if bootstrap is None:
        try:
            started, seconds = broker.up()
        except BrokerError as exc:
            fail(str(exc), EXIT_UNAVAILABLE)
        if started:
            click.echo(f"started a local Kafka broker at {broker.bootstrap} in {seconds:.1f} s", err=True)
        bootstrap = broker.bootstrap
    prefix = f"demo{int(time.time())}"
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, app_id=prefix)
    from banditroute.sim.worker_process import log_tail, worker_process

    try:
        with tempfile.TemporaryDirectory(prefix="banditroute-demo-") as tmp:
            config = _write_worker_config(world, Path(tmp) / "config")
            with worker_process(bootstrap, prefix, config, Path(tmp)) as worker:
                click.echo(f"worker pid {worker.pid} up; topics {prefix}.*; running {n} requests", err=True)
                try:
                    log = asyncio.run(
                        _run_simulation(settings, world, n, seed, rate, show=sys.stderr.isatty())
                    )
                except (TimeoutError, RuntimeError, OSError) as exc:
                    fail(f"demo failed: {exc}\nworker log (tail):\n{log_tail(Path(tmp))}", EXIT_UNAVAILABLE)
            _finish(log, out, fmt)
    finally:
        if started and not keep_broker:
            broker.down()
            click.echo("stopped the local broker the demo started (use --keep-broker to keep it)", err=True)
