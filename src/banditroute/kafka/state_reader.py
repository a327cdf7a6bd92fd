"""Keep every worker's :class:`StateView` and model catalog current from the compacted topics.

Each worker reads all partitions of the state topic (the learner table's changelog) and of the catalog topic,
from the beginning, without a consumer group: any worker can then decide for any task type from a recent copy
of its posterior. Staleness is the time from the learner's write to this read (measured by
``banditroute bench freshness``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from banditroute.codec import decode
from banditroute.config import Registry
from banditroute.core import decode_state
from banditroute.events import ModelCatalogEvent
from banditroute.kafka.topics import partitions_of
from banditroute.routing import StateView

log = logging.getLogger("banditroute.state")


class StateReader:
    """Tail the state and catalog topics into the view and the registry."""

    def __init__(
        self,
        view: StateView,
        registry: Registry,
        *,
        bootstrap: str,
        state_topic: str,
        catalog_topic: str,
        security: dict[str, Any],
        on_catalog: Callable[[], None] = lambda: None,
    ) -> None:
        self.view = view
        self.registry = registry
        self.bootstrap = bootstrap
        self.state_topic = state_topic
        self.catalog_topic = catalog_topic
        self.security = security
        self.on_catalog = on_catalog
        self.read = 0
        self.caught_up = asyncio.Event()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        while not self._stopping.is_set():
            tps: list[TopicPartition] = []
            for topic in (self.state_topic, self.catalog_topic):
                parts = await partitions_of(consumer, topic, require_leader=True)
                tps.extend(TopicPartition(topic, p) for p in sorted(parts))
            if any(tp.topic == self.state_topic for tp in tps) and any(
                tp.topic == self.catalog_topic for tp in tps
            ):
                return tps
            await asyncio.sleep(0.5)
        return []

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            **self.security,
        )
        await consumer.start()
        try:
            tps = await self._assign(consumer)
            if not tps:
                return
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=100, max_records=5000)
                for records in batch.values():
                    for record in records:
                        self._apply(record)
                if not self.caught_up.is_set() and all(
                    await asyncio.gather(
                        *(self._position_at_least(consumer, tp, end) for tp, end in ends.items())
                    )
                ):
                    self.caught_up.set()
        finally:
            await consumer.stop()

    @staticmethod
    async def _position_at_least(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> bool:
        return bool(await consumer.position(tp) >= end)

    def _apply(self, record: Any) -> None:
        self.read += 1
        try:
            if record.topic == self.state_topic:
                if record.key is None or record.value is None:
                    return
                key = orjson.loads(record.key)
                self.view.offer(str(key), decode_state(record.value))
            else:
                event = decode(ModelCatalogEvent, record.value)
                if isinstance(event, ModelCatalogEvent):
                    self.registry.apply_catalog(event.model_dump(mode="json"))
                    self.on_catalog()
                # invalid catalog events are dead-lettered once by the catalog agent, not by every reader
        except Exception:  # a bad record must not stop the reader
            log.exception("could not apply a state or catalog record", extra={"topic": record.topic})
