"""Let the broker gather a paced stream's requests into fewer fetches (issue #16).

A consumer with ``fetch_min_bytes=1`` gets a fetch response as soon as any request reaches the broker: at a
paced 1,000 requests/s the decide loop took 600-720 steps a second of one request each (p50), each with a fetch,
a produce request and their fixed client work (the decide thread spent ~600 µs of CPU per request, 2.5-3x the relay,
whose sequential loop lets records gather while it waits for its acknowledgement).

:class:`FetchLinger` watches the loop's polls. While requests keep arriving (two polls with requests less than
``linger_ms`` apart), the consumer's next fetches ask the broker to wait up to ``linger_ms`` for
``LINGER_MIN_BYTES``: a request then waits at most that long at the broker, and the fetches, steps and produce
requests per second fall to about ``1000 / linger_ms``. A poll that finds nothing for ``2 * linger_ms`` ends the
linger, so an idle or sparse stream keeps aiokafka's settings: its first request is fetched at once, and an idle
consumer sends a fetch every ``fetch_max_wait_ms``, not every ``linger_ms``. A backlog is unaffected: the broker
answers a fetch at once when ``LINGER_MIN_BYTES`` are waiting.

aiokafka builds each fetch request from its fetcher's ``_fetch_min_bytes`` and ``_fetch_max_wait_ms``
(aiokafka 0.14, ``Fetcher._get_actions_per_node``); a change applies from the next fetch sent.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("banditroute.decide")

LINGER_MIN_BYTES = 64 * 1024
"""What a lingering fetch waits for at most, besides time: ~200 requests of ~300 bytes. Below ~40,000 requests/s
a 5 ms linger ends first; above it, and for a backlog, the broker answers as soon as that much waits."""


class FetchLinger:
    """Switches a consumer's fetches between aiokafka's settings and a short linger, by what its polls return."""

    def __init__(self, consumer: Any, linger_ms: float) -> None:
        fetcher: Any = getattr(consumer, "_fetcher", None)
        self._fetcher = fetcher
        try:
            self._plain = (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms)
        except AttributeError:
            # an aiokafka other than the 0.14 this is written for: decide without lingering
            if linger_ms > 0:
                log.warning(
                    "the decide loop's fetch linger is off: this aiokafka's consumer has no fetch settings "
                    "to change (written for aiokafka 0.14)"
                )
            linger_ms = 0
            self._plain = (1, 0)
        self._linger = (LINGER_MIN_BYTES, max(1, round(linger_ms)))
        self.linger_s = linger_ms / 1000
        self.lingering = False
        self.switches = 0
        """Times the linger started or ended (a figure for benchmarks and tests)."""
        self._last_records_at = float("-inf")

    def poll_timeout_ms(self, timeout_ms: int) -> int:
        """The poll's timeout: while lingering, short enough that an empty poll soon ends the linger."""
        return min(timeout_ms, max(1, round(2000 * self.linger_s))) if self.lingering else timeout_ms

    def polled(self, got_records: bool, now: float) -> None:
        """After each poll (``now``: ``time.monotonic()``), whether it returned requests."""
        if got_records:
            if not self.lingering and self.linger_s > 0 and now - self._last_records_at < self.linger_s:
                self._set(True)
            self._last_records_at = now
        elif self.lingering:
            self._set(False)

    def _set(self, lingering: bool) -> None:
        self.lingering = lingering
        self.switches += 1
        self._fetcher._fetch_min_bytes, self._fetcher._fetch_max_wait_ms = (
            self._linger if lingering else self._plain
        )
