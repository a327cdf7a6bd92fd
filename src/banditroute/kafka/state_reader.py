"""Keep every worker's :class:`StateView` and model catalog current from the compacted topics.

Each worker reads all partitions of the state topic (the learner table's changelog) and of the catalog topic,
from the beginning, without a consumer group: any worker can then decide for any task type from a recent copy
of its posterior. Staleness is the time from the learner's write to this read (measured by
``banditroute bench freshness``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ConsumerStoppedError, IllegalStateError, KafkaError

from banditroute.codec import decode
from banditroute.config import ConfigError, Registry
from banditroute.core import TaskState, decode_state
from banditroute.events import ModelCatalogEvent
from banditroute.kafka.stopping import stop_all
from banditroute.kafka.topics import partitions_of
from banditroute.routing import StateView

log = logging.getLogger("banditroute.state")

FETCH_DEADLINE_S = 5.0
"""How long reading one state back from the state topic may go without an answer from the broker before it fails
(:class:`StateReadFailed`)."""
READ_THROUGH_POLL_S = 0.05
"""How often :meth:`StateReader.read_through` looks at the reader's position."""
UNDECODABLE_INDEX_MAX = 10_000
"""Places of undecodable state records remembered (for the learner's dead letters); past this, the oldest go."""


class StateReadFailed(RuntimeError):
    """A state could not be read back from the state topic (broker unreachable or slow): whether the topic holds
    one for the key is not known."""


def state_key_of(raw: bytes | None) -> str | None:
    """The state key of a state topic record's key: a JSON string (what every learner writes), else None. The
    learner's table reads the same keys (``kafka/state_keys.py``), so a reader never holds a state under a key
    the learner would not learn it under."""
    try:
        key = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        return None
    return key if isinstance(key, str) else None


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
        on_forget: Callable[[str], None] = lambda _key: None,
        keep: Callable[[str], bool] | None = None,
        config_topic: str | None = None,
        fetch_max_wait_ms: int = 20,
        counters: Counter[str] | None = None,
    ) -> None:
        """``keep`` (a client in local mode): which state keys to hold; of the others only the place in the
        topic of their newest state that decodes is remembered (:meth:`StateView.remember`), so they can be read back when wanted.
        ``fetch_max_wait_ms``: how long the broker holds a fetch of topics without new records (records are
        answered at once; a longer wait only means fewer empty fetches while the topics are quiet).
        ``counters``: where records that cannot be used are counted (``bad_state_records``,
        ``bad_catalog_records``, ``bad_config_records``), and the tombstones read (``states_forgotten``)."""
        self.view = view
        self.registry = registry
        self.bootstrap = bootstrap
        self.state_topic = state_topic
        self.catalog_topic = catalog_topic
        self.security = security
        self.on_catalog = on_catalog
        self.on_forget = on_forget
        self.restored = 0
        self.restore_missed = 0
        self.restore_failed = 0
        self._fetcher: AIOKafkaConsumer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._fetch_lock = asyncio.Lock()
        self.keep = keep
        self.config_topic = config_topic
        self.config_version: int | None = None
        self.fetch_max_wait_ms = fetch_max_wait_ms
        """Version of the config-topic document in use (None: the config folder)."""
        self.read = 0
        self.polled_at = 0.0
        """``time.monotonic()`` when the broker last answered a fetch for every partition read (0 before the
        first): an empty answer counts (nothing new), an unreachable broker does not."""
        self.caught_up = asyncio.Event()
        self._stopping = asyncio.Event()
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.undecodable: dict[str, tuple[int, int]] = {}
        """State key -> (partition, offset) of its newest record, when that one does not decode."""

    def stop(self) -> None:
        self._stopping.set()

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        while not self._stopping.is_set():
            tps: list[TopicPartition] = []
            for topic in (self.state_topic, self.catalog_topic, self.config_topic):
                if topic is None:
                    continue
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
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            **self.security,
        )
        await consumer.start()
        failed = True  # until the run ends well: then a client's failing stop is the run's error
        try:
            tps = await self._assign(consumer)
            if not tps:
                failed = False
                return
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self._consumer = consumer
            ends = await consumer.end_offsets(tps)
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=100, max_records=5000)
                self._note_fetched(consumer, tps)
                for records in batch.values():
                    for record in records:
                        self._apply(record)
                if self.view.wanted:
                    await self._restore_wanted()
                if not self.caught_up.is_set() and all(
                    await asyncio.gather(
                        *(self._position_at_least(consumer, tp, end) for tp, end in ends.items())
                    )
                ):
                    self.caught_up.set()
            failed = False
        finally:
            self._consumer = None
            # taken before any wait: a read-back may make a new client while these stop (one whose client was
            # stopped under it drops it, and the next makes one), and that one must stay the reader's
            fetcher, self._fetcher = self._fetcher, None
            # the fetcher too when the consumer's stop raises; a failing stop does not replace the run's own error
            await stop_all((consumer, fetcher), log, raise_first=not failed)

    async def read_through(self, partition: int) -> None:
        """Return once this reader has read ``partition`` of the state topic up to its end offset of now: it
        has then read every record that a table recovered from that partition before now holds, and holds the
        newest good state of each of its keys (the caller bounds the wait)."""
        tp = TopicPartition(self.state_topic, partition)
        end: int | None = None
        while True:
            consumer = self._consumer  # None until this reader has its partitions (and while it restarts)
            if consumer is not None:
                with contextlib.suppress(KafkaError, IllegalStateError):
                    if end is None:
                        end = (await consumer.end_offsets([tp]))[tp]
                    if await consumer.position(tp) >= end:
                        return
            await asyncio.sleep(READ_THROUGH_POLL_S)

    def _note_fetched(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        stamps = [consumer.last_poll_timestamp(tp) for tp in tps]
        if stamps and all(stamps):
            oldest_s = min(stamps) / 1000.0  # aiokafka stamps each fetch answer with time.time()
            self.polled_at = max(self.polled_at, time.monotonic() - max(0.0, time.time() - oldest_s))

    @staticmethod
    async def _position_at_least(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> bool:
        return bool(await consumer.position(tp) >= end)

    async def fetch(self, key: str) -> bytes | None:
        """Read a state back from the state topic at the place the view remembered for it (evicted, or held
        by the view but not by this worker's learner): the first record of the key from that place on (the
        record there, or a later one after compaction), read at most up to the partition's end offset. None
        when the topic holds no state of the key from that place on (none up to the end, or a tombstone).

        Raises :class:`StateReadFailed` when the broker leaves it ``FETCH_DEADLINE_S`` without records before
        it got that far (unreachable or slow), or its client was stopped under it (the reader restarting): then
        nothing is known, and a learner must not take the key for one without learnt state."""
        where = self.view.evicted.get(key) or self.view.where.get(key)
        if where is None:
            return None
        partition, offset = where
        async with self._fetch_lock:
            try:
                async with asyncio.timeout(FETCH_DEADLINE_S) as deadline:
                    found, raw = await self._read_from(key, partition, offset, deadline)
            except (TimeoutError, KafkaError, OSError, ConsumerStoppedError) as exc:
                if isinstance(exc, ConsumerStoppedError):
                    self._fetcher = (
                        None  # stopped under the read (the reader restarting): a new client next time
                    )
                self.restore_failed += 1
                raise StateReadFailed(
                    f"state {key!r} not read back from {self.state_topic}[{partition}]@{offset}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        if raw is not None:
            self.restored += 1
            return raw
        self.restore_missed += 1
        log.warning(
            "state %r not at %s[%d]@%d: %s",
            key,
            self.state_topic,
            partition,
            offset,
            "a tombstone follows it" if found else "no record of the key from there to the end",
        )
        return None

    async def _read_from(
        self, key: str, partition: int, offset: int, deadline: asyncio.Timeout
    ) -> tuple[bool, bytes | None]:
        """(found, value) of the first record of ``key`` at or after ``offset`` in ``partition``, reading up to
        the end offset of this moment; (False, None) if there is none. Every fetch that brings records moves
        ``deadline`` on: a long read that keeps going is not cut short, one the broker does not answer is."""
        fetcher = self._fetcher
        if fetcher is None:
            fetcher = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="earliest",  # a place compaction removed: read on from the oldest record
                fetch_max_wait_ms=20,
                **self.security,
            )
            try:
                await fetcher.start()
            except BaseException:  # tried again at the next fetch, with a new client
                with contextlib.suppress(Exception):
                    await fetcher.stop()
                raise
            self._fetcher = fetcher
        try:
            return await self._read_with(fetcher, key, partition, offset, deadline)
        except ConsumerStoppedError:
            # stopped under the read (the reader restarting): a request of the stopped client connects again
            # before it fails, and stopping it again closes nothing, so its connections are closed here
            with contextlib.suppress(Exception):
                await fetcher._client.close()
            raise

    async def _read_with(
        self, fetcher: AIOKafkaConsumer, key: str, partition: int, offset: int, deadline: asyncio.Timeout
    ) -> tuple[bool, bytes | None]:
        tp = TopicPartition(self.state_topic, partition)
        fetcher.assign([tp])
        end = (await fetcher.end_offsets([tp]))[tp]
        if offset >= end:  # the log no longer reaches the place (truncated, or the topic made again)
            return False, None
        fetcher.seek(tp, offset)
        wanted = orjson.dumps(key)
        while await fetcher.position(tp) < end:
            records = (await fetcher.getmany(tp, timeout_ms=1000, max_records=500)).get(tp, [])
            if records:
                deadline.reschedule(asyncio.get_running_loop().time() + FETCH_DEADLINE_S)
            for record in records:
                if record.offset >= end:
                    return False, None
                if record.offset >= offset and record.key == wanted:
                    value: bytes | None = record.value
                    return True, value
        return False, None

    async def _restore_wanted(self) -> None:
        """Read back the evicted states the decide loop asked for (it decides with the prior meanwhile)."""
        view = self.view
        while view.wanted:
            key = view.wanted.popleft()
            if view.get(key) is not None or key not in view.evicted:
                continue
            where = view.evicted[key]
            try:
                raw = await self.fetch(key)
            except StateReadFailed as exc:  # decided with the prior meanwhile; the decide loop asks again
                log.warning("%s", exc)
                return
            if raw is None or view.get(key) is not None:
                continue
            state = self.decode(key, raw)
            if state is not None:
                view.offer(key, state, where)
            else:  # nothing good to read back: decided with the prior (the learner dead-letters it when it learns)
                view.evicted.pop(key, None)

    def decode(self, key: str, raw: bytes, where: tuple[int, int] | None = None) -> TaskState | None:
        """The state in a record of the state topic, or None (counted and logged) when it does not decode:
        written by something other than a learner, it must not stop this reader nor replace a good state."""
        try:
            state = decode_state(raw)
        except ValueError as exc:
            self.counters["bad_state_records"] += 1
            if where is not None:
                self.undecodable.pop(key, None)
                if len(self.undecodable) >= UNDECODABLE_INDEX_MAX:
                    del self.undecodable[next(iter(self.undecodable))]
                self.undecodable[key] = where
            log.error(
                "state record of %r does not decode, kept the last good state: %s",
                key,
                exc,
                extra={"topic": self.state_topic, "where": where},
            )
            return None
        self.undecodable.pop(key, None)
        return state

    def _apply_config(self, raw: bytes | None) -> None:
        if raw is None:
            return
        try:
            self.config_version = self.registry.apply_document(raw)
        except ConfigError as exc:  # validated by `banditroute config push`; a hand-made record is refused
            self.counters["bad_config_records"] += 1
            log.error("config topic: document refused, keeping the configuration in use: %s", exc)
            return
        log.info("configuration applied from the config topic", extra={"config_version": self.config_version})
        self.on_catalog()

    def _kind(self, topic: str) -> str:
        return {self.state_topic: "state", self.config_topic: "config"}.get(topic, "catalog")

    def _apply(self, record: Any) -> None:
        self.read += 1
        try:
            if record.topic == self.state_topic:
                if record.key is None:
                    return
                key = state_key_of(record.key)
                if key is None:  # the learner's table holds it under a key no task type has
                    self.counters["bad_state_records"] += 1
                    log.error(
                        "state record with a key that is not a JSON string: skipped",
                        extra={"topic": self.state_topic, "where": (record.partition, record.offset)},
                    )
                    return
                if record.value is None:  # a tombstone: ``banditroute state forget``
                    self.undecodable.pop(key, None)
                    self.view.drop(key)
                    self.on_forget(key)
                    self.counters["states_forgotten"] += 1
                    return
                where = (record.partition, record.offset)
                if self.keep is not None and not self.keep(key) and self.view.get(key) is None:
                    if self.decode(key, record.value, where) is not None:  # a bad record keeps the good place
                        self.view.remember(key, where)
                    return
                state = self.decode(key, record.value, where)
                if state is not None:
                    self.view.offer(key, state, where)
            elif record.topic == self.config_topic:
                self._apply_config(record.value)
            else:
                event = decode(ModelCatalogEvent, record.value)
                if isinstance(event, ModelCatalogEvent):
                    self.registry.apply_catalog(event.model_dump(mode="json"))
                    self.on_catalog()
                elif record.value is not None:  # dead-lettered once by the worker's catalog agent, not here
                    self.counters["bad_catalog_records"] += 1
        except Exception:  # a bad record must not stop the reader
            self.counters[f"bad_{self._kind(record.topic)}_records"] += 1
            log.exception("could not apply a state or catalog record", extra={"topic": record.topic})
