"""``banditroute worker``: run one router worker."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Overrides BANDITROUTE_LOG_LEVEL.",
)
def worker(log_level: str | None) -> None:
    """Run a router worker: decide, join feedback, learn. Configured by BANDITROUTE_* environment variables
    and the files in BANDITROUTE_CONFIG_DIR (default ./config). Stops cleanly on SIGTERM or Ctrl-C.
    """
    from banditroute.app import Router
    from banditroute.config import ConfigError
    from banditroute.settings import Settings

    settings = Settings()
    if log_level:
        settings = settings.model_copy(update={"log_level": log_level})
    try:
        router = Router(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    run_worker(router)


def run_worker(router: object) -> None:
    """Run ``router.app`` under a faust Worker with banditroute's logging."""
    import faust

    from banditroute.app import Router
    from banditroute.logs import logging_config

    assert isinstance(router, Router)
    settings = router.settings
    level = settings.log_level.upper()
    import asyncio

    from banditroute.app import TopicLayoutError

    try:
        asyncio.run(router.ensure_topics())
    except TopicLayoutError as exc:
        raise click.ClickException(str(exc)) from exc
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
    worker.execute_from_commandline()
