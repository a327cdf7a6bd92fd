"""The Python client: ask the router for a model, send feedback, read topics.

``RouterClient`` is asyncio-native; ``SyncRouterClient`` runs one in a background thread for synchronous code.

Request-reply: each client owns a private reply topic, ``<prefix>.replies.<client-uuid>`` by default, created
with one partition when the client starts and deleted when it closes (pass ``reply_topic=`` to use an existing
topic instead; the client then neither creates nor deletes it). Every request names it in ``reply_to``; one
background task reads it and resolves the waiting ``route()`` call by ``request_id``, so any number of
concurrent ``route()`` calls share ONE producer and ONE consumer.

Nothing here hangs on a broken broker: start-up is bounded by ``start_timeout_s`` (the client then runs
"degraded"), and every ``route()`` is bounded by ``timeout_s``. On timeout or trouble ``route()`` returns the
static default route, a :class:`RoutingDecision` with ``is_default_route=True``, ``propensity=1.0`` and
``reasons.rules`` holding ``"default_route"`` and ``"default_route:<why>"``; without a default route it raises
:class:`RouteTimeout`.

This module is the client's public face; the parts live in :mod:`banditroute.router_client` (``RouterClient``),
:mod:`banditroute.sync_client` (``SyncRouterClient``) and :mod:`banditroute.messages` (request, feedback and
default-route construction).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from pydantic import BaseModel

from banditroute.codec import encode
from banditroute.kafka.topics import partitions_of, read_topic
from banditroute.messages import (
    DEFAULT_ROUTE_ENV,
    DEFAULT_ROUTE_RULE,
    DefaultRoute,
    build_feedback,
    build_request,
    default_decision,
    default_route_reason,
    idempotency_key_for,
    new_request_id,
    request_id_of_decision,
    utcnow,
)
from banditroute.router_client import (
    REPLY_RETENTION_MS,
    RouterClient,
    RouterUnavailable,
    RouteTimeout,
    ensure_topics,
    topic_layout,
)
from banditroute.settings import Settings
from banditroute.sync_client import SyncRouterClient


async def produce_events(
    settings: Settings,
    suffix: str,
    events: Iterable[tuple[str, BaseModel]],
    *,
    timeout_s: float = 10.0,
) -> int:
    """Produce ``(key, event)`` pairs to the default topic ``suffix`` (created with the worker's layout when
    missing) and wait until the broker has them all. Returns the count; RouterUnavailable on trouble."""
    from banditroute.kafka.client_io import produce_records

    items = [(key.encode(), encode(ev)) for key, ev in events]

    async def run() -> None:
        await ensure_topics(settings, [suffix], timeout_s=timeout_s)
        await produce_records(settings, settings.topic(suffix), items)

    try:
        await asyncio.wait_for(run(), timeout_s)
    except Exception as exc:
        raise RouterUnavailable(f"could not produce to {settings.topic(suffix)}: {exc!r}") from exc
    return len(items)


__all__ = [
    "DEFAULT_ROUTE_ENV",
    "DEFAULT_ROUTE_RULE",
    "REPLY_RETENTION_MS",
    "DefaultRoute",
    "RouteTimeout",
    "RouterClient",
    "RouterUnavailable",
    "SyncRouterClient",
    "build_feedback",
    "build_request",
    "default_decision",
    "default_route_reason",
    "ensure_topics",
    "idempotency_key_for",
    "new_request_id",
    "partitions_of",
    "produce_events",
    "read_topic",
    "request_id_of_decision",
    "topic_layout",
    "utcnow",
]
