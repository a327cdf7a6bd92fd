"""Start faust's table manager without its fixed one-second wait.

faust's ``TableManager.on_start`` sleeps a second before it registers the tables' changelog channels and starts
their recovery, so that tables declared while the app starts are in by then. The worker declares every table
in ``Router.__init__``, before the app starts, so the second is only a second more of every worker start (and of
every restart after a crash). faust's conductor waits for the agents to start and for the tables to be
registered either way; :func:`install` leaves out only the sleep.
"""

from __future__ import annotations

from typing import Any

from faust.tables.manager import TableManager


async def on_start(self: Any) -> None:
    """faust's ``TableManager.on_start`` without its ``sleep(1.0)``."""
    if not self.should_stop:
        await self._update_channels()
        await self.recovery.start()


def install() -> None:
    """Patch faust's table manager (every app's); idempotent."""
    TableManager.on_start = on_start  # type: ignore[method-assign]
