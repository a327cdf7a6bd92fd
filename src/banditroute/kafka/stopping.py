"""Stop several Kafka clients, each of them even when an earlier one's ``stop()`` raises."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable
from typing import Protocol


class Stoppable(Protocol):
    """A client with an async ``stop()`` (aiokafka's consumers and producers)."""

    def stop(self) -> Awaitable[object]: ...


async def stop_all(
    clients: Iterable[Stoppable | None], log: logging.Logger, *, raise_first: bool = True
) -> None:
    """Await ``stop()`` of every client in order (``None`` skipped). A failure is logged and the next client is
    stopped all the same; once all are, the first failure is raised (with ``raise_first``; without it, as when
    an error of the caller's is already on its way out, logging is all)."""
    first: Exception | None = None
    for client in clients:
        if client is None:
            continue
        try:
            await client.stop()
        except Exception as exc:
            log.warning("stopping %s failed: %r", type(client).__name__, exc, exc_info=True)
            first = first or exc
    if first is not None and raise_first:
        raise first


__all__ = ["Stoppable", "stop_all"]
