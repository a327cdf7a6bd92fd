"""Feed published decisions to the join with a raw aiokafka batch loop, following faust's partition assignment.

Why not the faust agent: the join reads every decision the worker publishes, and faust's per-event consume
path cost ~165 us of CPU per decision there (py-spy, ``banditroute bench e2e``): eight times the decide loop
itself, and what capped the whole worker. This loop reads the decisions partitions that match the feedback
partitions faust assigned to this worker (the two topics and the join table are co-partitioned), in batches
of up to ``max_records``, and hands each batch to the join on the worker's own event loop.

Contract, the same as the agent's:

* offsets are committed (consumer group ``<app id>.join-decisions``, manual assignment: no group membership)
  only after the batch's join state and outcomes are acknowledged by the broker, so a crash replays
  decisions, which the join recognises (duplicate decisions, redelivered joins);
* partitions follow faust: on revocation the loop finishes its batch and lets go of everything before faust
  moves the partitions; once faust has settled again (rebalance done, tables recovered, streams resumed; the
  worker polls for it) it takes the decisions partitions of the feedback partitions faust assigned, so it
  never writes into a table partition being recovered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger("banditroute.decision_reader")

Handler = Callable[[list[Any]], Awaitable[None]]


class DecisionReader:
    """Reads ``topic`` for the partitions it is given; ``handle(records)`` processes one batch in order."""

    def __init__(
        self,
        handle: Handler,
        *,
        bootstrap: str,
        topic: str,
        group_id: str,
        security: dict[str, Any],
        max_records: int = 5000,
    ) -> None:
        self.handle = handle
        self.bootstrap = bootstrap
        self.topic = topic
        self.group_id = group_id
        self.security = security
        self.max_records = max_records
        self.partitions: frozenset[int] = frozenset()
        self.batches = 0
        self.records = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._busy = asyncio.Lock()  # held while a batch is read, handled and committed
        self._changed = asyncio.Event()
        self._stopping = False

    async def assign(self, partitions: Iterable[int], *, unless: Callable[[], bool] | None = None) -> None:
        """Read exactly these partitions from now on (after the batch in hand is handled and committed).

        ``unless`` is checked once the batch in hand is done: if it returns true, nothing changes (a
        reconciliation that a rebalance overtook).
        """
        wanted = frozenset(partitions)
        async with self._busy:
            if unless is not None and unless():
                return
            self.partitions = wanted
            if self._consumer is not None:
                self._consumer.assign([TopicPartition(self.topic, p) for p in sorted(wanted)])
        self._changed.set()
        log.info("decision reader assigned", extra={"topic": self.topic, "partitions": sorted(wanted)})

    def stop(self) -> None:
        self._stopping = True
        self._changed.set()

    async def run(self) -> None:
        self._stopping = False
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_records,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **self.security,
        )
        await consumer.start()
        try:
            async with self._busy:
                self._consumer = consumer
                if self.partitions:
                    consumer.assign([TopicPartition(self.topic, p) for p in sorted(self.partitions)])
            while not self._stopping:
                if not self.partitions:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                async with self._busy:
                    if not self.partitions:
                        continue
                    batch = await consumer.getmany(timeout_ms=100, max_records=self.max_records)
                    records = [r for tp in sorted(batch, key=lambda t: t.partition) for r in batch[tp]]
                    if not records:
                        continue
                    await self.handle(records)
                    await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batch.items() if rs})
                    self.batches += 1
                    self.records += len(records)
        finally:
            async with self._busy:
                self._consumer = None
            with contextlib.suppress(Exception):
                await consumer.stop()
