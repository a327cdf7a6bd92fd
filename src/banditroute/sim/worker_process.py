"""A ``banditroute worker`` subprocess for commands that bring their own (``demo``, ``replay --through-kafka``):
its own topic prefix, config and data folder, its log in a file, stopped when the command ends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click


@contextlib.contextmanager
def worker_process(
    bootstrap: str, prefix: str, config: Path, folder: Path, **extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a worker (web off, log level warning unless ``extra`` says otherwise) and wait until it has
    created its topics; terminate it on exit. Its log is ``folder/worker.log``."""
    env = {
        **os.environ,
        "BANDITROUTE_KAFKA_BOOTSTRAP": bootstrap,
        "BANDITROUTE_TOPIC_PREFIX": prefix,
        "BANDITROUTE_APP_ID": prefix,
        "BANDITROUTE_CONFIG_DIR": str(config),
        "BANDITROUTE_DATA_DIR": str(folder / "data"),
        "BANDITROUTE_WEB_ENABLED": os.environ.get("BANDITROUTE_WEB_ENABLED", "false"),
        "BANDITROUTE_LOG_LEVEL": "warning",
        **extra,
    }
    with open(folder / "worker.log", "ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "banditroute", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        from banditroute.settings import Settings

        asyncio.run(_wait_for_topics(Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix), worker))
        yield worker
    finally:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)


def log_tail(folder: Path, chars: int = 2000) -> str:
    path = folder / "worker.log"
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


async def _wait_for_topics(settings: Any, worker: Any, timeout_s: float = 90.0) -> None:
    """Wait until the worker has created its topics (or fail if it exits)."""
    from banditroute.kafka.admin import wait_for_topics

    wanted = [settings.topic(t) for t in ("requests", "decisions", "feedback")]
    try:
        await wait_for_topics(
            settings.kafka_bootstrap, None, wanted, timeout_s, lambda: worker.poll() is None
        )
    except ChildProcessError:
        raise click.ClickException(f"the worker exited with code {worker.returncode}") from None
    except TimeoutError:
        raise click.ClickException("the worker did not create its topics in time") from None
