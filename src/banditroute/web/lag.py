"""Consumer lag of the worker's consumer groups, sampled in the background (never on a scrape) through
:class:`banditroute.kafka.lag.LagProbe`.

What is measured: for each group and topic, the sum over partitions of ``end offset - committed offset`` (a
partition nothing was committed for counts from 0). That is *committed* lag: it includes records already read
but not yet committed (faust commits every 0.5 s, the decide loop after each batch), and the worker's own tick
records. Groups: ``<app_id>.decide`` reads the requests topic (the worker's decide loop);
``<app_id>.join-decisions``, ``<app_id>.join-feedback`` and ``<app_id>.learn`` hold the offsets of the join's
decisions and feedback readers and of the learner's outcomes reader (manual assignment); ``<app_id>`` is
faust's group for the catalog agent. The
numbers are group-wide: every worker of the group reports the same totals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger("banditroute.web")


class LagSampler:
    """Keeps ``snapshot()`` current by polling the broker every ``interval_s`` seconds."""

    def __init__(
        self, bootstrap: str, security: dict[str, Any], groups: dict[str, list[str]], interval_s: float = 5.0
    ):
        self.bootstrap = bootstrap
        self.security = security
        self.groups = groups
        self.interval_s = interval_s
        self.lag: dict[tuple[str, str], int] = {}
        self.sampled_at: float | None = None
        self.errors = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "sampled_at": self.sampled_at,
            "groups": [{"group": g, "topic": t, "lag": n} for (g, t), n in sorted(self.lag.items())],
        }

    async def run(self) -> None:
        from banditroute.kafka.lag import LagProbe

        async with LagProbe(self.bootstrap, self.security) as probe:
            while True:
                try:
                    self.lag = await probe.lag(self.groups)
                    self.sampled_at = time.time()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # lag is best effort; never disturb the worker
                    self.errors += 1
                    log.debug("lag sample failed: %s", exc)
                await asyncio.sleep(self.interval_s)
