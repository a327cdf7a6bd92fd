"""Back off between failed metadata refreshes in aiokafka (a busy loop while the broker is down otherwise).

With every broker unreachable, aiokafka 0.14 refreshes metadata in a tight loop: a refused connection fails at
once, the failure itself asks for another refresh, and the background synchronizer runs again straight away
(aio-libs/aiokafka#496). The process then spends its event loop on connect attempts and error logging, and every
other coroutine, a ``route()`` waiting for its timeout included, runs late; we measured the loop stalling for up to
0.9 s during a 6 s broker outage. :func:`install` makes a failed refresh wait before it returns, doubling from the
client's ``retry_backoff_ms`` up to :data:`MAX_BACKOFF_S`, and resets once a refresh succeeds. Callers waiting on a
refresh (producer sender, fetcher, coordinator) simply wait for the throttled one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiokafka
from aiokafka.client import AIOKafkaClient

from banditroute.kafka.aiokafka_release import checked

MAX_BACKOFF_S = 1.0
"""The longest wait between two failed refreshes: also the longest a recovered broker goes unnoticed."""

_DELAY_ATTR = "_banditroute_md_backoff_s"
_ORIGINAL: Any = None


async def _metadata_update_with_backoff(self: Any, cluster_metadata: Any, topics: Any) -> Any:
    updated = await _ORIGINAL(self, cluster_metadata, topics)
    base = max(0.01, float(getattr(self, "_retry_backoff", 0.1)))
    if updated:
        setattr(self, _DELAY_ATTR, base)
        return updated
    delay = float(getattr(self, _DELAY_ATTR, base))
    setattr(self, _DELAY_ATTR, min(MAX_BACKOFF_S, delay * 2))
    await asyncio.sleep(delay)
    return updated


def install(aiokafka_version: str = aiokafka.__version__) -> bool:
    """Patch aiokafka's client class once per process (idempotent); every producer, consumer and admin gains it.
    Returns whether it is installed: not under a release other than the checked one (kafka/aiokafka_release.py)."""
    global _ORIGINAL
    if _ORIGINAL is not None:
        return True
    if not checked("kafka/backoff.py (back-off between failed metadata refreshes)", aiokafka_version):
        return False
    _ORIGINAL = AIOKafkaClient._metadata_update
    AIOKafkaClient._metadata_update = _metadata_update_with_backoff
    return True


def installed() -> bool:
    return _ORIGINAL is not None
