"""``banditroute worker``: run one router worker (or check that it could run, with ``--check``)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import click

from banditroute.cli.output import EXIT_INVALID, EXIT_UNAVAILABLE, fail


@click.command()
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Overrides BANDITROUTE_LOG_LEVEL.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Validate the settings, the config folder, the data folder and the connection to Kafka, then exit "
    "(0 ok, 1 invalid configuration, 3 Kafka unreachable or topic layout mismatch).",
)
def worker(log_level: str | None, check: bool) -> None:
    """Run a router worker: decide, join feedback, learn. Configured by BANDITROUTE_* environment variables
    and the files in BANDITROUTE_CONFIG_DIR (default ./config; without it, the packaged defaults that
    `banditroute init` writes). Logs a "worker ready" line once it decides. Stops cleanly on SIGTERM or
    Ctrl-C.
    """
    from pydantic import ValidationError

    from banditroute.app import Router
    from banditroute.config import ConfigError, config_dir_of
    from banditroute.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        fail(f"invalid BANDITROUTE_* settings: {exc}", EXIT_INVALID)
    config_dir, packaged = config_dir_of(settings)
    updates: dict[str, Any] = {"config_dir": config_dir}
    if log_level:
        updates["log_level"] = log_level
    settings = settings.model_copy(update=updates)
    prepare_data_dir(settings.data_dir)
    try:
        router = Router(settings)
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    if check:
        run_check(router, packaged)
        return
    run_worker(router)


def prepare_data_dir(path: Path) -> None:
    """Create the worker's data folder (parents included) or exit 1 saying exactly what is wrong."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        fail(f"data folder {path} exists but is not a folder (set BANDITROUTE_DATA_DIR)", EXIT_INVALID)
    except PermissionError as exc:
        fail(
            f"cannot create the data folder {path}: permission denied on {exc.filename or path} "
            "(set BANDITROUTE_DATA_DIR to a writable folder)",
            EXIT_INVALID,
        )
    except OSError as exc:
        fail(f"cannot create the data folder {path}: {exc.strerror or exc} (set BANDITROUTE_DATA_DIR)")
    if not os.access(path, os.W_OK | os.X_OK):
        fail(f"data folder {path} is not writable (set BANDITROUTE_DATA_DIR)", EXIT_INVALID)


def run_check(router: Any, packaged: bool) -> None:
    """Print what the worker would use and whether Kafka answers with a compatible topic layout."""
    from banditroute import native
    from banditroute.kafka.admin import TopicError

    settings = router.settings
    models = sorted(m.name for m in router.registry.models)
    where = " (the packaged defaults: no ./config here; `banditroute init` writes one)" if packaged else ""
    click.echo(f"config: {settings.config_dir}{where} ({len(models)} models: {', '.join(models)})")
    click.echo(f"data folder: {settings.data_dir} (writable)")
    click.echo(f"native extension: {native.describe()}")
    try:
        present = asyncio.run(asyncio.wait_for(router.ensure_topics(create=False), 10.0))
    except TopicError as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except Exception as exc:
        fail(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc!r}", EXIT_UNAVAILABLE)
    click.echo(
        f"kafka: {settings.kafka_bootstrap} reachable; {present} of the worker's topics for prefix "
        f"{settings.topic_prefix!r} exist (the worker creates the others)"
    )
    click.echo("ok")


def run_worker(router: object) -> None:
    """Run ``router.app`` under a faust Worker with banditroute's logging."""
    import faust

    from banditroute.app import Router
    from banditroute.gc_tuning import tune_for_worker
    from banditroute.logs import logging_config
    from banditroute.malloc_tuning import tune_malloc
    from banditroute.switch_interval import tune_switch_interval

    assert isinstance(router, Router)
    settings = router.settings
    level = settings.log_level.upper()

    from banditroute.core.summary import load_special
    from banditroute.kafka.admin import TopicError

    tune_malloc()  # bursts of record batches: see malloc_tuning.py (before the worker starts its threads)
    # the dashboard's and /metrics' credible intervals need scipy.special: import it while the worker starts
    # (mostly waiting on the broker), not on faust's event loop at the first request
    threading.Thread(target=load_special, name="import-scipy-special", daemon=True).start()
    try:
        asyncio.run(asyncio.wait_for(router.ensure_topics(), 60.0))
    except TopicError as exc:  # a layout mismatch or a refused creation: stop with the broker's message
        fail(str(exc), EXIT_UNAVAILABLE)
    except Exception as exc:
        fail(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc!r}", EXIT_UNAVAILABLE)
    worker = faust.Worker(
        router.app,
        loglevel="warn" if level == "WARNING" else level.lower(),
        quiet=True,
        redirect_stdouts=False,
        logging_config=logging_config(level) if settings.log_format == "json" else None,
    )
    # faust's terminal spinner sets the root logger to DEBUG while it spins, which makes every aiokafka debug
    # line build a log record (measured: ~7% of the worker's time); logs are our progress report instead.
    worker.spinner = None
    tune_for_worker()  # per-decision garbage: see gc_tuning.py
    tune_switch_interval()  # two busy threads: see switch_interval.py
    worker.execute_from_commandline()
