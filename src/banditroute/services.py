"""The worker's long-running loops as ``mode`` services, and the faust app that closes the worker's own clients.

A :class:`LoopService` is registered on the faust app (``app.service``): it starts once the tables are
recovered, restarts its loop after a failure (with backoff, counted as ``<name>_restarts``) so the worker never
dies of it, and stops with the app.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import mode

log = logging.getLogger("banditroute.worker")

MAX_BACKOFF_S = 10.0


class LoopService(mode.Service):
    """Run ``run()`` until the app stops; ``stop()`` asks the loop to end."""

    def __init__(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        stop: Callable[[], None],
        counters: Counter[str],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.loop_name = name
        self._run = run
        self._stop = stop
        self.counters = counters

    @property
    def shortlabel(self) -> str:
        return self.loop_name

    async def on_start(self) -> None:
        self.add_future(self._supervise())

    async def on_stop(self) -> None:
        self._stop()

    async def _supervise(self) -> None:
        backoff = 0.5
        try:
            while True:
                try:
                    await self._run()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s loop failed; restarting in %.1f s", self.loop_name, backoff)
                    self.counters[f"{self.loop_name}_restarts"] += 1
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            self._stop()


class WorkerApp(faust.App):
    """faust's app, closing the worker's own Kafka clients (outboxes, gap reader) after everything that uses
    them (agents, services, timers) has stopped."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closers: list[Callable[[], Awaitable[None]]] = []

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        for close in self.closers:
            try:
                await close()
            except Exception:  # one client failing to close must not keep the others open
                log.exception("closing a Kafka client failed")


__all__ = ["LoopService", "WorkerApp"]
