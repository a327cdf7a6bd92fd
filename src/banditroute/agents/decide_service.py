"""Run :class:`DecideLogic` on Kafka with a plain aiokafka consumer group and producer.

Why not a faust agent: deciding is stateless per request (the state comes from the :class:`StateView`), and
faust's per-event consume path costs several times more than the raw client (see README, Benchmarks). A raw
``getmany`` batch loop inside the faust worker keeps the same at-least-once contract: offsets are committed
only after every decision of the batch is acknowledged by the broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from banditroute.agents.decide import DecideLogic
from banditroute.codec import DeadLetterCounter, DuplicateIdCheck, decode_record, encode, unknown_model_check
from banditroute.events import DeadLetter, DeadLetterReason, RoutingRequest

log = logging.getLogger("banditroute.decide")

CONSUMER_TUNING: dict[str, Any] = {"fetch_max_wait_ms": 100}
"""Consumer settings of the decide loop (shared with the bench relay so both measure the same client)."""
PRODUCER_TUNING: dict[str, Any] = {"linger_ms": 1}
"""Producer settings of the decide loop (idem)."""


class DecideService:
    """The request → decision loop."""

    def __init__(
        self,
        logic: DecideLogic,
        *,
        bootstrap: str,
        requests_topic: str,
        decisions_topic: str,
        deadletter_topic: str,
        group_id: str,
        security: dict[str, Any],
        max_payload_bytes: int,
        dead_letters: DeadLetterCounter,
        on_decision: Callable[[dict[str, Any]], None] = lambda _d: None,
        max_batch: int = 2000,
        linger_ms: int = 1,
        session_timeout_s: float = 10.0,
    ) -> None:
        self.logic = logic
        self.bootstrap = bootstrap
        self.requests_topic = requests_topic
        self.decisions_topic = decisions_topic
        self.deadletter_topic = deadletter_topic
        self.group_id = group_id
        self.security = security
        self.max_payload_bytes = max_payload_bytes
        self.dead_letters = dead_letters
        self.on_decision = on_decision
        self.max_batch = max_batch
        self.linger_ms = linger_ms
        self.session_timeout_s = session_timeout_s
        self.duplicates = DuplicateIdCheck("request_id", capacity=100_000)
        self.checks = (unknown_model_check(lambda: logic.registry.model_names), self.duplicates)
        self.decided = 0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            self.requests_topic,
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_batch,
            fetch_max_wait_ms=100,
            session_timeout_ms=int(self.session_timeout_s * 1000),
            heartbeat_interval_ms=int(max(1.0, self.session_timeout_s / 4) * 1000),
            **self.security,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=self.linger_ms, acks="all", **self.security
        )
        await producer.start()
        await consumer.start()
        log.info("decide loop started", extra={"topic": self.requests_topic, "group": self.group_id})
        try:
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=self.max_batch)
                if not batch:
                    continue
                futures: list[asyncio.Future[Any]] = []
                offsets: dict[TopicPartition, int] = {}
                for tp, records in batch.items():
                    for record in records:
                        futures.extend(await self._handle(producer, record))
                    offsets[tp] = records[-1].offset + 1
                if futures:
                    await asyncio.gather(*futures)
                await consumer.commit(offsets)
        finally:
            try:
                await producer.flush()
            finally:
                await consumer.stop()
                await producer.stop()

    async def _handle(self, producer: AIOKafkaProducer, record: Any) -> list[asyncio.Future[Any]]:
        result = decode_record(
            RoutingRequest,
            record.value,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            max_bytes=self.max_payload_bytes,
            checks=self.checks,
        )
        if isinstance(result, DeadLetter):
            self.dead_letters.record(result.reason)
            return [
                await producer.send(self.deadletter_topic, key=record.topic.encode(), value=encode(result))
            ]
        try:
            decision = self.logic.decide(result)
        except Exception as exc:  # the worker must never die on one request
            log.exception("decision failed", extra={"request_id": result.request_id})
            letter = DeadLetter(
                original="",
                original_size=len(record.value or b""),
                source_topic=record.topic,
                source_partition=record.partition,
                source_offset=record.offset,
                event_type="RoutingRequest",
                reason=DeadLetterReason.VALIDATION_ERROR,
                error=f"the router could not decide this request: {type(exc).__name__}: {exc}"[:1000],
                dead_lettered_at=datetime.now(UTC),
            )
            self.dead_letters.record(letter.reason)
            return [
                await producer.send(self.deadletter_topic, key=record.topic.encode(), value=encode(letter))
            ]
        payload = orjson.dumps(decision)
        key = result.request_id.encode()
        futures = [await producer.send(self.decisions_topic, key=key, value=payload)]
        if result.reply_to:
            futures.append(await producer.send(result.reply_to, key=key, value=payload))
        self.decided += 1
        self.on_decision(decision)
        return futures
