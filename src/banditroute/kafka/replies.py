"""Replies to remote clients: sent to the topic each request names, without remembering every name.

A remote client names its own reply topic in each request (``reply_to``), creates it when it starts and
deletes it when it closes. Sending with aiokafka's producer directly has two costs the worker must not pay:

- ``send`` (and ``partitions_for``) add the topic to the set the producer refreshes metadata for, and never
  drop it: a worker that served many short-lived clients asks for every deleted reply topic on each refresh
  (and logs an error for each), and a sender can grow that set with made-up names.
- for a topic that does not exist, ``send`` waits up to the request timeout, retrying: the decide loop would
  stall that long for each unknown name.

:class:`ReplySender` sends at once to topics it has seen exist. A reply to a name it does not know waits
(bounded) while one background task looks the names up in the cluster's topic list, fetched at most every
``min_refresh_s``; replies to a missing topic are skipped and counted, and the name is remembered as missing
for ``recheck_s``. Reply topics with no reply for ``idle_s`` are dropped from the producer's metadata set.
Every cache is bounded by ``max_names``.

A reply topic must take the producer's record batches (``max.message.bytes`` at least ``batch_bytes``, as the
worker's own topics must): several replies to one client go out in one batch, and a topic with a lower limit
refuses the whole batch. Such a topic is found at its lookup (or by the broker's refusal, should its limit be
lowered later), named in a warning with the remedy, and its replies are skipped and counted like a missing
topic's, for ``recheck_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

from banditroute.kafka.admin import message_bytes_advice, message_bytes_of

log = logging.getLogger("banditroute.decide")

RECHECK_S = 30.0
"""How long a missing reply topic is remembered as missing before it is looked up again."""
MIN_REFRESH_S = 0.2
"""Least time between two fetches of the cluster's topic list (bounds the cost of made-up names)."""
IDLE_S = 120.0
"""A reply topic without a reply for this long is dropped from the producer's metadata set."""
MAX_NAMES = 10_000
"""Bound of the known and the missing names each, and of the replies waiting for a lookup."""


class ReplySender:
    """Best-effort replies through one producer; all methods run on the producer's event loop."""

    def __init__(
        self,
        producer: Any,
        *,
        recheck_s: float = RECHECK_S,
        min_refresh_s: float = MIN_REFRESH_S,
        idle_s: float = IDLE_S,
        max_names: int = MAX_NAMES,
        refused: Callable[[str], bool] = lambda topic: False,
        batch_bytes: int | None = None,
    ) -> None:
        self.producer = producer
        self.refused = refused
        """Names a reply may never go to (the worker's own topics: a request must not make it write there)."""
        self.batch_bytes = batch_bytes
        """The producer's largest record batch: a reply topic whose ``max.message.bytes`` is lower is refused
        (None: not checked)."""
        self.recheck_s = recheck_s
        self.min_refresh_s = min_refresh_s
        self.idle_s = idle_s
        self.max_names = max_names
        self._used: dict[str, float] = {}  # topics seen to exist -> last reply (monotonic s)
        self._missing: dict[str, float] = {}  # topics seen missing -> when
        self._waiting: dict[str, list[tuple[bytes, bytes]]] = {}
        self._queued = 0
        self._in_lookup = 0  # replies the lookup has taken from ``_waiting`` and not yet sent or skipped
        self._fetched_at = float("-inf")
        self._pruned_at = time.monotonic()
        self._resolver: asyncio.Task[None] | None = None
        self._own = frozenset(getattr(producer.client, "_topics", ()))  # the worker's topics: never dropped
        self.stats = {"sent": 0, "skipped": 0, "lookups": 0, "dropped_topics": 0, "too_small_topics": 0}

    async def send(self, topic: str, key: bytes, payload: bytes) -> None:
        """Send ``payload`` to ``topic`` now if it is known to exist, else after a lookup (or skip it)."""
        now = time.monotonic()
        if topic in self._used:
            if self.producer.client.cluster.partitions_for_topic(topic) is not None:
                self._used[topic] = now
                await self._produce(topic, key, payload)
                if now - self._pruned_at >= min(self.idle_s, 60.0) / 2:
                    self.prune(now)
                return
            # deleted since (a refresh dropped it): producing would wait the request timeout; look it up again
            self._drop([topic])
        missing_at = self._missing.get(topic)
        if (missing_at is not None and now - missing_at < self.recheck_s) or self._queued >= self.max_names:
            self.stats["skipped"] += 1
            return
        if self.refused(topic):
            self.stats["skipped"] += 1
            self._remember(self._missing, topic, now)
            log.warning("reply_to %r names one of the router's own topics; reply skipped", topic)
            return
        self._waiting.setdefault(topic, []).append((key, payload))
        self._queued += 1
        if self._resolver is None or self._resolver.done():
            self._resolver = asyncio.create_task(self._resolve(), name="banditroute-reply-lookup")

    async def _produce(self, topic: str, key: bytes, payload: bytes) -> None:
        try:
            future = await self.producer.send(topic, key=key, value=payload)
        except Exception as exc:  # e.g. deleted between the check and the send: never the decide loop's error
            self.stats["skipped"] += 1
            self._drop([topic])
            log.warning("reply to %r not sent: %r", topic, exc)
            return
        future.add_done_callback(lambda f: self._sent(topic, f))

    def _sent(self, topic: str, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.stats["skipped"] += 1
            error = None if future.cancelled() else future.exception()
            if isinstance(error, MessageSizeTooLargeError | RecordListTooLargeError):
                if topic in self._used:  # the first refused send of a batch: said once
                    self._too_small(
                        topic, f"the broker refused a batch ({error!r}); raise its max.message.bytes."
                    )
                self._remember(self._missing, topic, time.monotonic())
            self._drop([topic])  # deleted meanwhile? look it up again next time
        else:
            self.stats["sent"] += 1

    def _too_small(self, topic: str, why: str) -> None:
        self.stats["too_small_topics"] += 1
        log.warning(
            "reply topic %r refuses the worker's batches of replies: %s Its replies are skipped for %g s.",
            topic,
            why,
            self.recheck_s,
        )

    async def _limits(self, topics: list[str]) -> dict[str, int]:
        """``max.message.bytes`` of ``topics`` below ``batch_bytes`` (none when not checked or not known)."""
        if self.batch_bytes is None or not topics:
            return {}
        try:
            limits = await message_bytes_of(self.producer.client, topics)
        except Exception as exc:  # broker trouble or not authorised to describe: the sends will tell
            log.warning("looking up reply topics' max.message.bytes failed: %r", exc)
            return {}
        return {topic: limit for topic, limit in limits.items() if limit < self.batch_bytes}

    async def _resolve(self) -> None:
        """Look up the waiting names (one topic-list fetch for all of them) until none wait."""
        while self._waiting:
            delay = self._fetched_at + self.min_refresh_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                cluster = await self.producer.client.fetch_all_metadata()
                existing: set[str] | None = set(cluster.topics())
            except Exception as exc:  # broker trouble: skip what waits, but do not call those topics missing
                log.warning("looking up reply topics failed: %r", exc)
                existing = None
            self._fetched_at = now = time.monotonic()
            self.stats["lookups"] += 1
            waiting, self._waiting, self._queued = self._waiting, {}, 0
            # what close() counts as skipped, if it comes now
            self._in_lookup = sum(map(len, waiting.values()))
            too_small = await self._limits([t for t in waiting if existing is not None and t in existing])
            for topic, replies in waiting.items():
                if existing is None:
                    self._skip_looked_up(len(replies))
                elif topic in too_small:
                    assert self.batch_bytes is not None
                    self._skip_looked_up(len(replies))
                    self._remember(self._missing, topic, now)
                    self._too_small(topic, message_bytes_advice({topic: too_small[topic]}, self.batch_bytes))
                elif topic in existing:
                    self._missing.pop(topic, None)
                    for key, payload in replies:
                        await self._produce(topic, key, payload)
                        self._in_lookup -= 1
                    # known (sent to at once from now on) only once the producer has the topic's metadata;
                    # replies arriving meanwhile wait for the next lookup
                    if self.producer.client.cluster.partitions_for_topic(topic) is not None:
                        self._remember(self._used, topic, time.monotonic())
                else:
                    self._skip_looked_up(len(replies))
                    self._remember(self._missing, topic, now)
                    log.warning("reply topic %r does not exist; %d replies skipped", topic, len(replies))

    def _skip_looked_up(self, count: int) -> None:
        self.stats["skipped"] += count
        self._in_lookup -= count

    def prune(self, now: float | None = None) -> int:
        """Drop reply topics idle for ``idle_s`` from the producer's metadata set; returns how many."""
        now = time.monotonic() if now is None else now
        self._pruned_at = now
        idle = [topic for topic, at in self._used.items() if now - at >= self.idle_s]
        self._drop(idle)
        return len(idle)

    def _drop(self, topics: list[str]) -> None:
        if not topics:
            return
        for topic in topics:
            self._used.pop(topic, None)
        client = self.producer.client
        tracked: set[str] = set(getattr(client, "_topics", ()))  # aiokafka has no public getter for it
        keep = tracked.difference(topics) | (tracked & self._own)  # a reply_to naming a worker topic stays
        if keep != tracked and keep:  # an empty set would mean "every topic" to aiokafka
            client.set_topics(keep)
        self.stats["dropped_topics"] += len(topics)

    def _remember(self, cache: dict[str, float], topic: str, now: float) -> None:
        cache[topic] = now
        if len(cache) > self.max_names:  # forget the oldest half (known ones leave the producer too)
            oldest = sorted(cache, key=cache.__getitem__)[: len(cache) // 2]
            if cache is self._used:
                self._drop(oldest)
            else:
                for name in oldest:
                    del cache[name]

    @property
    def tracked(self) -> int:
        """Topics the producer refreshes metadata for (reply topics included)."""
        return len(getattr(self.producer.client, "_topics", ()))

    async def close(self) -> None:
        """Stop looking up; replies still waiting for a lookup, or in one, are skipped."""
        if self._resolver is not None:
            self._resolver.cancel()
            with contextlib.suppress(BaseException):
                await self._resolver
            self._resolver = None
        self.stats["skipped"] += self._queued + self._in_lookup  # the lookup's too, cancelled in its middle
        self._waiting, self._queued, self._in_lookup = {}, 0, 0


def own_topics_refused(names: Iterable[str], internal_prefix: str) -> Callable[[str], bool]:
    """A ``refused`` rule for :class:`ReplySender`: the router's own topics (``names``) and faust's internal
    ones (``internal_prefix``: the app id and a dash, e.g. table changelogs)."""
    own = frozenset(names)
    return lambda topic: topic in own or topic.startswith(internal_prefix)


__all__ = ["IDLE_S", "MAX_NAMES", "MIN_REFRESH_S", "RECHECK_S", "ReplySender", "own_topics_refused"]
