"""Committed consumer lag of consumer groups, for the dashboard's sampler and the soak benchmark.

For each group and topic: the sum over its partitions of ``end offset - committed offset`` (a partition
nothing was committed for counts from 0). A :class:`LagProbe` keeps one admin client and one consumer open, so
sampling every few seconds does not reconnect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from banditroute.kafka.admin import admin_client
from banditroute.kafka.topics import partitions_of

GroupTopics = Mapping[str, Sequence[str]]
"""Consumer group -> the topics it reads."""


class LagProbe:
    """``async with LagProbe(bootstrap, security) as probe: await probe.lag(groups)``."""

    def __init__(self, bootstrap: str, security: Mapping[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.security = dict(security or {})
        self._admin: Any = None
        self._consumer: Any = None
        self._clients = contextlib.AsyncExitStack()

    async def start(self) -> LagProbe:
        """Open the admin client and the consumer (both closed again if either fails)."""
        try:
            self._admin = await self._clients.enter_async_context(admin_client(self.bootstrap, self.security))
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False, **self.security
            )
            self._clients.push_async_callback(consumer.stop)
            await consumer.start()
            self._consumer = consumer
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        self._admin = self._consumer = None
        await self._clients.aclose()

    async def lag(self, groups: GroupTopics) -> dict[tuple[str, str], int]:
        """Committed lag per (group, topic); a topic that does not exist yet is left out."""
        if self._admin is None or self._consumer is None:
            raise RuntimeError("LagProbe.lag before start")
        out: dict[tuple[str, str], int] = {}
        for group, topics in groups.items():
            tps = [
                TopicPartition(t, p) for t in topics for p in sorted(await partitions_of(self._consumer, t))
            ]
            if not tps:
                continue
            ends = await self._consumer.end_offsets(tps)
            committed = await self._admin.list_consumer_group_offsets(group, partitions=tps)
            for tp in tps:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                key = (group, tp.topic)
                out[key] = out.get(key, 0) + max(int(ends.get(tp, 0)) - done, 0)
        return out

    async def __aenter__(self) -> LagProbe:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()


__all__ = ["GroupTopics", "LagProbe"]
