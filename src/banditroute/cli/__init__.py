"""The ``banditroute`` command.

Subcommands live in their own modules and are imported only when used, so ``banditroute --help`` stays fast
and a broken optional dependency of one command never breaks the others.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
from typing import Any

import click

# name -> "module:attribute"; each attribute is a click command or group.
COMMANDS: dict[str, str] = {
    "bench": "banditroute.cli.bench_cmd:bench",
    "contracts": "banditroute.cli.contracts_cmd:contracts",
    "evaluate": "banditroute.cli.evaluate_cmd:evaluate",
    "evaluate-policy": "banditroute.cli.evaluate_policy_cmd:evaluate_policy",
    "kafka": "banditroute.cli.kafka_cmd:kafka",
    "demo": "banditroute.cli.demo_cmd:demo",
    "simulate": "banditroute.cli.demo_cmd:simulate",
    "replay": "banditroute.cli.replay_cmd:replay",
    "priors": "banditroute.cli.priors_cmd:priors",
    "route": "banditroute.cli.route_cmd:route",
    "feedback": "banditroute.cli.feedback_cmd:feedback",
    "tail": "banditroute.cli.tail_cmd:tail",
    "state": "banditroute.cli.state_cmd:state",
    "catalog": "banditroute.cli.catalog_cmd:catalog",
    "config": "banditroute.cli.config_cmd:config",
    "init": "banditroute.cli.init_cmd:init",
    "worker": "banditroute.cli.worker_cmd:worker",
    "soak": "banditroute.cli.soak_cmd:soak",
}


STOPPED_BY_SIGTERM_WHILE_STARTING = frozenset({"worker"})
"""Commands that exit 0 on SIGTERM while they are still importing and setting up: the worker takes seconds to
get there on a loaded machine, and faust installs its own SIGTERM handler only once the worker runs; until
then there is nothing to clean up, but the signal's default action ended the process as -15."""


def _exit_cleanly(_signum: int, _frame: Any) -> None:
    """Exit 0 at once. Not ``SystemExit``: a signal that lands while a finalizer (``__del__``) runs has its
    exception printed and ignored, and the worker went on starting (a reliability test then had to kill it)."""
    logging.shutdown()  # flushes the log handlers
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._lazy))

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] in STOPPED_BY_SIGTERM_WHILE_STARTING and "--check" not in args:
            # (a check stopped by SIGTERM must not exit 0, which says "ok")
            signal.signal(signal.SIGTERM, _exit_cleanly)  # before the command's imports
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            module_name, attr = self._lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="banditroute")
def main() -> None:
    """banditroute: adaptive, cost-aware routing of requests to AI models over Kafka."""
    from banditroute.logs import quiet_kafka_logs

    quiet_kafka_logs()


__all__ = ["main"]
