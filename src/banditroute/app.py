"""The worker as a diagram: the faust app, its topics and tables, the agents, timers and services.

    requests ──► decide (aiokafka loop) ──► decisions ──┐
                      ▲                                 ├─► join (readers) ──► outcomes ──► learn (reader) ──► state
                      │ StateView ◄── StateReader ◄─────│──────────────────────────────────────────────────────┘
    feedback ─────────────────────────────────────────┘        (ticks expire the reward wait window)

``request_to_pending`` (changelogged) holds decisions awaiting feedback; ``task_to_state`` (changelogged to the
compacted state topic) holds the posteriors with their idempotency watermarks.

The logic comes from ``agents`` (``DecideLogic``, ``JoinLogic``, ``LearnLogic``: no Kafka in them), every Kafka
client from ``kafka`` (the decide loop, the decision and state readers, the outboxes, the gap reader, the admin
helper); the long-running loops are ``LoopService``s registered on the app, so they stop with it. The join and
the learner read ``decisions``, ``feedback`` and ``outcomes`` with raw batch loops (``PartitionReader``) on the
partitions faust assigns; faust's agents on ``feedback`` and ``outcomes`` only hold that assignment and never
receive a record (``kafka/faust_hold.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from operator import countOf, itemgetter
from typing import Any

import numpy as np
import orjson
from faust.exceptions import ConsumerNotStarted

from banditroute import memory, memory_probe
from banditroute.agents.budget_split import BudgetSplit
from banditroute.agents.decide import DecideLogic, StateView
from banditroute.agents.join import JoinLogic
from banditroute.agents.learn import LearnLogic, Undecodable, outcome_problem
from banditroute.agents.pending import PendingStore
from banditroute.agents.prior_pool import PriorPool
from banditroute.codec import DeadLetterCounter, decode_record, encode, make_dead_letter
from banditroute.config import PACKAGED_CONFIG, Registry, RouterConfig
from banditroute.core import TaskState
from banditroute.events import DeadLetter, DeadLetterReason, ModelCatalogEvent
from banditroute.join_io import TICK_HEADER, JoinIO, LetterKey, acknowledged, letter_key
from banditroute.kafka import backoff, faust_fetch, faust_hold, faust_start, fetch_cycles, state_keys
from banditroute.kafka.admin import (
    admin_client,
    check_message_bytes,
    check_partitions,
    create_topics,
    new_topic,
)
from banditroute.kafka.decide_service import DecideService
from banditroute.kafka.fence import Fenced, Lease
from banditroute.kafka.gaps import GapFiller
from banditroute.kafka.outbox import Outbox
from banditroute.kafka.partition_reader import QUIET_FETCH_WAIT_MS, PartitionReader
from banditroute.kafka.record_batch import MAX_BATCH_BYTES
from banditroute.kafka.replies import own_topics_refused
from banditroute.kafka.spill import SPILL_SUFFIX
from banditroute.kafka.staged import StagedTable, flush_acknowledged
from banditroute.kafka.state_keys import STATE_KEY_CODEC
from banditroute.kafka.state_reader import StateReader, StateReadFailed
from banditroute.kafka.topics import partition_for
from banditroute.limits import CAP_RATE, CAPS
from banditroute.routing import TENANT_SEPARATOR
from banditroute.served import Decided
from banditroute.services import LoopService, make_app
from banditroute.settings import Settings
from banditroute.topics import DEFAULT_TOPICS, WRITTEN_IN_BATCHES, layout
from banditroute.web.top import NAMED_CLIENTS, TopTaskTypes

log = logging.getLogger("banditroute.worker")

TICK_INTERVAL_S = 1.0
FOLLOW_INTERVAL_S = 0.2
"""How often the decision reader's partitions are checked against faust's settled assignment."""
STATE_READ_WAIT_S = 30.0
"""How long the learner waits for the state reader to read a key's partition before it replaces a state of the key
that does not decode (past it the batch fails and is read again)."""
EVICT_INTERVAL_S = 30.0
"""How often held states are checked for idleness (policy.yaml ``limits.idle_evict_s``; a quarter of it when
that is shorter)."""


_TYPE_AND_MODEL = itemgetter(0, 1)  # of a Decided: (task type, model)
_TYPE = itemgetter(0)
_MODEL = itemgetter(1)
_CAP = itemgetter(2)
_TEXT = itemgetter(4)


class Router(JoinIO):
    """One banditroute worker: build it from settings, then run ``router.app`` with a faust Worker."""

    def __init__(self, settings: Settings, config: RouterConfig | None = None) -> None:
        memory.limit_arenas()  # before any of the worker's threads start (see memory.py)
        memory.fix_mmap_threshold()  # large buffers leave no holes in the heap (see memory.py)
        backoff.install()  # every aiokafka client of the worker, faust's included (see kafka/backoff.py)
        faust_fetch.install()  # no tasks per fetched record in faust's consumer (see kafka/faust_fetch.py)
        faust_hold.install()  # faust never delivers what the worker's own readers read (kafka/faust_hold.py)
        faust_start.install()  # tables recovered without faust's fixed second's wait (kafka/faust_start.py)
        state_keys.install()  # the state topic's key codec (kafka/state_keys.py)
        fetch_cycles.install()  # a fetch dropped unread is freed at once, not by a collection (kafka/fetch_cycles.py)
        self.settings = settings
        self.registry = Registry(config or RouterConfig.load(settings.config_dir), settings.config_dir)
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.view = StateView()
        self.dead_letters = DeadLetterCounter()
        self.counters: Counter[str] = Counter()
        self.decisions_by_model: Counter[tuple[str, str]] = Counter()
        """Decisions by (task type label, model): named task types only, the rest under ``other`` (web/top.py)."""
        self.top = TopTaskTypes()
        self.client_top = TopTaskTypes(NAMED_CLIENTS)
        self.local_decisions: Counter[tuple[str, str]] = Counter()
        """Local-mode clients' decisions joined here, by (client id label, model): the 20 busiest clients by
        name, the rest under ``other`` (web/top.py); a model not in the catalog under ``other`` too
        (``join_io.local_counted``)."""
        self._configure_top()
        self.capped: Counter[str] = Counter({cap: 0 for cap in CAPS})
        """Requests a cap applied to, by cap (policy.yaml ``limits``)."""
        self.foreign_capped: Counter[str] = Counter({cap: 0 for cap in CAPS if cap != CAP_RATE})
        """Decisions read from the decisions topic (not this worker's) a cap applied to, by cap: learnt into
        ``~shared`` or the task type's state, or dead-lettered (``unknown_task_type``); ``join_io._foreign_served``."""
        self.recent_decisions: list[dict[str, Any] | bytes] = []
        """The newest decisions (their JSON text as published; the dashboard decodes the ones it shows)."""
        self.learned_at: dict[str, float] = {}
        self.ready = False
        """Set once, when the worker first decides: partitions assigned, tables recovered, state read."""
        self._next_evict = 0.0
        self.app = make_app(settings)
        self._declare()

    # -- declarations -------------------------------------------------------------------------------------
    def _declare(self) -> None:
        s, app = self.settings, self.app
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        self.requests = app.topic(s.topic("requests"), partitions=s.partitions, **raw)
        self.decisions = app.topic(s.topic("decisions"), partitions=s.partitions, **raw)
        self.feedback = app.topic(s.topic("feedback"), partitions=s.partitions, **raw)
        self.catalog = app.topic(s.topic("catalog"), partitions=1, compacting=True, **raw)
        self.outcomes = app.topic(
            s.topic("outcomes"), partitions=s.state_partitions, key_serializer="json", value_serializer="raw"
        )
        self.deadletter = app.topic(s.topic("deadletter"), partitions=1, **raw)
        self.state_topic = app.topic(
            s.topic("state"),
            partitions=s.state_partitions,
            compacting=True,
            deleting=False,
            key_serializer=STATE_KEY_CODEC,  # JSON, and keys no learner writes do not stop table recovery
            value_serializer="raw",
        )
        self.request_to_pending = self._join_table("request_to_pending")
        self.request_to_early_feedback = self._join_table("request_to_early_feedback")
        self.task_to_state = app.Table(
            "task_to_state",
            partitions=s.state_partitions,
            key_type=str,
            value_type=bytes,
            use_partitioner=True,
            changelog_topic=self.state_topic,
        )
        self.pending_view = StagedTable(
            self.request_to_pending, self._partition_of_request, self._partitions_of_requests
        )
        self.early_view = StagedTable(
            self.request_to_early_feedback, self._partition_of_request, self._partitions_of_requests
        )
        self.join = JoinLogic(
            PendingStore(self.pending_view),
            self.early_view,
            self.registry.join_policy,
            max_capped=lambda: self.registry.snapshot.limits.max_capped_in_flight,
        )
        self._init_join()
        self.state_view = StagedTable(self.task_to_state, self._partition_of_task)
        # the split's draws: seeded apart from the sampler's (as the replay's), from the OS without a seed
        split_rng = np.random.default_rng(None if s.seed is None else [s.seed, 3])
        self.learn = LearnLogic(
            self.state_view,
            self.registry,
            self._on_learned,
            pool=PriorPool(self.view.items),
            split=BudgetSplit(self.view.items, split_rng, state=self.view.get),
            last_good=self.view.get,  # what this worker read last for the key (the reader skips bad records)
        )
        self.decide_logic = DecideLogic(
            self.registry,
            self.view,
            np.random.default_rng(s.seed),
            worker_id=self.worker_id,
        )
        self.decider = DecideService(
            self.decide_logic,
            bootstrap=s.kafka_bootstrap,
            requests_topic=self.requests.get_topic_name(),
            decisions_topic=self.decisions.get_topic_name(),
            deadletter_topic=self.deadletter.get_topic_name(),
            shadow_topic=s.topic("shadow-decisions"),
            group_id=f"{s.app_id}.decide",
            security=s.aiokafka_security(),
            max_payload_bytes=s.max_payload_bytes,
            dead_letters=self.dead_letters,
            on_decisions=self._on_decisions,
            session_timeout_s=s.session_timeout_s,
            commit_interval_ms=s.decide_commit_interval_ms,
            fetch_linger_ms=s.decide_fetch_linger_ms,
            compression=None if s.decisions_compression == "none" else s.decisions_compression,
            follow=True,  # the partitions of faust's feedback assignment (join_io.py)
            on_pending=self._on_pending,
            priority_lane=True,  # new and capped task types wait behind established ones (kafka/low_lane.py)
            spill_topic=s.topic(SPILL_SUFFIX),  # and past the lane's bound, in this topic (kafka/spill.py)
            # a request's reply_to must not make the worker write into its own topics
            reply_refused=own_topics_refused(
                (spec.name(s.topic_prefix) for spec in DEFAULT_TOPICS), f"{s.app_id}-"
            ),
        )
        self.gaps = GapFiller(s.kafka_bootstrap, s.aiokafka_security(), self.counters)
        self.outbox = Outbox(s.kafka_bootstrap, s.aiokafka_security())  # the join's
        self.learn_outbox = Outbox(s.kafka_bootstrap, s.aiokafka_security())
        self._learn_letters_held: dict[LetterKey, DeadLetter] = {}
        """Dead letters of learner batches that failed, not acknowledged: sent first by the next batch."""
        self.catalog_outbox = Outbox(s.kafka_bootstrap, s.aiokafka_security())
        self.reader = StateReader(
            self.view,
            self.registry,
            bootstrap=s.kafka_bootstrap,
            state_topic=self.state_topic.get_topic_name(),
            catalog_topic=self.catalog.get_topic_name(),
            security=s.aiokafka_security(),
            on_forget=self._drop_learnt,
            config_topic=s.topic("config"),
            fetch_max_wait_ms=QUIET_FETCH_WAIT_MS,  # how long the broker holds an empty fetch (few a second when idle)
            counters=self.counters,
        )
        # the join and the learner write and commit as owners only while faust's membership is confirmed
        self.lease = Lease(
            self._faust_coordinator, s.session_timeout_s, self.counters, lambda: bool(app.rebalancing)
        )
        # decisions others publish reach the join through a raw batch loop on faust's assignment; it also
        # rebuilds the pending entries after a restart or a rebalance (kafka/partition_reader.py, join_io.py)
        self.decision_reader = self._reader(
            self._join_decisions,
            self.decisions,
            "join-decisions",
            floor=self._join_floor,
            on_commit=self._on_join_commit,
            skip=self._skip_own,  # the worker's own decisions reach the join in memory
        )
        # feedback and outcomes too: faust's agents on them only hold the assignment (kafka/faust_hold.py);
        # each reader starts where faust's group left off when its own group has no offset yet
        self.feedback_reader = self._reader(
            self._join_feedback_records, self.feedback, "join-feedback", seed=True
        )
        self.learn_reader = self._reader(self._learn_records, self.outcomes, "learn", seed=True)
        app.held_topics = frozenset({self.feedback.get_topic_name(), self.outcomes.get_topic_name()})
        app.agent(self.feedback, name="join_feedback")(self._held_by_reader)
        app.agent(self.outcomes, name="learn")(self._held_by_reader)
        app.agent(self.catalog, name="check_catalog")(self._check_catalog)
        app.timer(TICK_INTERVAL_S)(self._tick)
        app.timer(5.0)(self._reload_config)
        app.timer(1.0)(self._evict_idle)
        app.timer(memory.TRIM_INTERVAL_S)(self._trim_memory)
        path = memory_probe.probe_path()
        if path is not None:  # a debug hook, off unless BANDITROUTE_MEMORY_PROBE names a file
            app.timer(memory_probe.PROBE_INTERVAL_S)(memory_probe.MemoryProbe(path, self._probe_sizes).run)
        for name, loop in (
            ("state_reader", self.reader),
            ("decide", self.decider),
            ("decision_reader", self.decision_reader),
            ("feedback_reader", self.feedback_reader),
            ("learn_reader", self.learn_reader),
        ):
            # a reader fenced while stalled (kafka/fence.py) restarts as designed: a warning, not an error's traceback
            service = LoopService(name, loop.run, loop.stop, self.counters, expected=(Fenced,))
            app.service(service)  # type: ignore[arg-type]  # instances work too
        app.closers += [self.outbox.stop, self.learn_outbox.stop, self.catalog_outbox.stop, self.gaps.stop]
        app.task(self._announce_config)
        if s.web_enabled:
            from banditroute.web import install_web

            install_web(self)
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.timer(FOLLOW_INTERVAL_S)(self._follow_assignment)

    def _join_table(self, name: str) -> Any:
        """A join table (request_id -> bytes), changelogged to the topic faust would make for it, whose keys
        faust's recovery reads as the state topic's are: a record whose key is not a JSON string (no join
        writes one) is held under a key no request has instead of stopping the recovery (kafka/state_keys.py)."""
        s, app = self.settings, self.app
        changelog = app.topic(
            f"{app.conf.id}-{name}-changelog",  # faust's name and settings for a table's changelog
            key_type=str,
            value_type=bytes,
            key_serializer=STATE_KEY_CODEC,
            value_serializer="raw",
            partitions=s.partitions,
            compacting=True,
            deleting=True,
            acks=False,
            internal=True,
            maxsize=131_072,
            allow_empty=True,
        )
        return app.Table(
            name, partitions=s.partitions, key_type=str, value_type=bytes, changelog_topic=changelog
        )

    def _reader(
        self, handle: Any, topic: Any, group: str, *, seed: bool = False, **kwargs: Any
    ) -> PartitionReader:
        """A batch reader of ``topic`` for this worker, committing in the group ``<app_id>.<group>`` (seeded from
        faust's group if ``seed``)."""
        s = self.settings
        return PartitionReader(
            handle,
            bootstrap=s.kafka_bootstrap,
            topic=topic.get_topic_name(),
            group_id=f"{s.app_id}.{group}",
            security=s.aiokafka_security(),
            seed_group=s.app_id if seed else None,
            fence=self.lease.hold,
            **kwargs,
        )

    def _faust_coordinator(self) -> Any | None:
        """The group coordinator of faust's consumer (its thread's aiokafka consumer), or None before it is made
        or started. Any other failure to reach it (a faust whose consumer is not laid out as checked) is logged as
        an error once and counted (``lease_unavailable``), and None returned: the worker writes unfenced, as under
        an aiokafka release the lease's patch was not checked against. Until review20 every exception gave None
        silently, so a faust upgrade could turn the lease off with no word."""
        consumer = self.app._consumer  # not ``app.consumer``: that would make one
        if consumer is None:
            return None  # not made yet
        try:
            return consumer._thread._ensure_consumer()._coordinator  # type: ignore[attr-defined]
        except ConsumerNotStarted:  # its thread not started yet: no lease to hold
            return None
        except Exception:
            if not self.counters["lease_unavailable"]:
                log.exception(
                    "faust's group coordinator cannot be reached: the lease (kafka/fence.py) holds nothing, the "
                    "join and the learner write without it"
                )
            self.counters["lease_unavailable"] += 1
            return None

    # -- services -----------------------------------------------------------------------------------------
    async def ensure_topics(self, *, create: bool = True) -> int:
        """Create the worker's topics (the layout of ``topics.DEFAULT_TOPICS``) where missing, after checking
        that existing ones have the partition counts this worker needs; then checks that they, those it made and
        the join tables' changelogs (once faust has made them) take its record batches (``max.message.bytes``;
        ``create=False`` only checks). Returns
        how many existed. Raises TopicLayoutError or TopicCreationError (any refusal but "already exists")
        with the broker's message."""
        s = self.settings
        wanted = [
            new_topic(name, partitions, configs)
            for name, (partitions, configs) in layout(s.topic, s.partitions, s.state_partitions).items()
        ]
        async with admin_client(s.kafka_bootstrap, s.aiokafka_security()) as admin:
            existing = set(await admin.list_topics())
            await check_partitions(
                admin, wanted, "requests, decisions and feedback must co-partition by request_id"
            )
            created = await create_topics(admin, wanted) if create else []
            # after creating: a topic made here takes the broker's default, which may be lower as well; and the
            # join tables' changelogs (faust makes them, with that default), which the join writes in batches too
            batched = [s.topic(suffix) for suffix in WRITTEN_IN_BATCHES]
            batched += [
                t.changelog_topic.get_topic_name()
                for t in (self.request_to_pending, self.request_to_early_feedback)
            ]
            await check_message_bytes(admin, batched, MAX_BATCH_BYTES, created)
        return sum(t.name in existing for t in wanted)

    async def _announce_config(self) -> None:
        if self.settings.config_dir == PACKAGED_CONFIG:
            log.info(
                "no config folder at ./config: using the packaged defaults in %s (`banditroute init` writes a "
                "copy to edit; BANDITROUTE_CONFIG_DIR chooses another folder)",
                PACKAGED_CONFIG,
            )

    async def _on_revoked(self, _sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Before faust moves partitions: the decide loop hands over what it decided, the decision reader
        finishes its batch, and both let go of all of them."""
        await self._release()

    async def _on_assigned(self, _sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", ())
        await self._let_go_unassigned(assigned)  # faust's tables have just taken this assignment
        # (the join's deadline index is rebuilt in _follow_assignment, once the tables are recovered)
        self.learn.forget_cache()
        catalog = self.catalog.get_topic_name()  # the one topic faust's agents read (the others are held)
        await self.gaps.seed(self.settings.app_id, [tp for tp in assigned if tp.topic == catalog])

    async def _let_go_unassigned(self, assigned: Any) -> None:
        """At each assignment, let go of what the learner's and the join's tables hold of partitions neither
        assigned here nor kept by faust's recovery (``_let_go_of_states``, ``_let_go_outside``; its active
        changelog partitions: it keeps the last ones through a rebalance it finds stale, and does not read their
        changelogs again). Should such a partition come back, faust recovers it from its changelog's start, and
        writes staged for it before it left would overwrite what its owner wrote meanwhile. The drops once the assignment has settled
        (``_follow_assignment``, ``_sync``) miss a partition that leaves and comes back before this worker sees
        a settled assignment without it (a second rebalance while the first settles)."""
        active = self.app.tables.recovery.active_tps  # type: ignore[attr-defined]  # TableManager's

        def held(topic: Any, tables: tuple[Any, ...]) -> frozenset[int]:
            changelogs = {table.changelog_topic.get_topic_name() for table in tables}
            name = topic.get_topic_name()
            return frozenset(tp.partition for tp in assigned if tp.topic == name) | frozenset(
                tp.partition for tp in active if tp.topic in changelogs
            )

        self._let_go_of_states(held(self.outcomes, (self.task_to_state,)))  # the learner's reader holds none
        owned = held(self.feedback, (self.request_to_pending, self.request_to_early_feedback))
        async with self._join_lock:  # not while a join batch's flush (a handoff's) may stage its writes again
            self._let_go_outside(owned)

    def _partition_of_task(self, key: str) -> int:
        """Where an outcome keyed by this state key lands (JSON key, like the state table's)."""
        return partition_for(orjson.dumps(key), self.settings.state_partitions)

    # -- agents and readers (the join's are in join_io.py) ----------------------------------------------
    async def _held_by_reader(self, stream: Any) -> None:
        """The agent of a topic a ``PartitionReader`` reads: it holds faust's assignment and receives nothing
        (faust never delivers the topic's records). Should a record come anyway, the reader reads it too: counted, left."""
        async for event in stream.events():
            self.counters["faust_held_delivered"] += 1
            log.warning("faust delivered a record of a held topic", extra={"topic": event.message.topic})

    async def _learn_records(self, batch: list[Any]) -> None:
        """One batch of the outcomes reader (committed by it once this returns)."""
        records: list[dict[str, Any]] = []
        partition_of: dict[str, int] = {}  # per task key of the batch, its state partition
        letters: list[DeadLetter] = []  # sent under the lease, with the batch's states (_send_learn_letters)
        for r in batch:
            try:
                record = orjson.loads(r.value)
            except (TypeError, orjson.JSONDecodeError):  # the join writes this topic: never fatal
                letters.append(self._bad_outcome(r, DeadLetterReason.MALFORMED_JSON, "not JSON"))
                continue
            problem = outcome_problem(record) or self._misrouted(
                record["task_key"], r.partition, partition_of
            )
            if problem is not None:  # re-read after every restart, it would stop all learning
                letters.append(self._bad_outcome(r, DeadLetterReason.VALIDATION_ERROR, problem))
                continue
            records.append(record)
        keys = {str(r["task_key"]) for r in records}
        await self._read_state_before_replacing(keys)
        await self._restore_evicted(keys)
        before = self._memory_of(keys)
        stats = self.learn.apply(records, time.time())
        if self.learn.undecodable:
            letters += [self._bad_state(bad) for bad in self.learn.undecodable]
            self.learn.undecodable.clear()
        # the new states are acknowledged (with their watermarks) before these outcomes are committed
        # on failure staged again: the reader restarts in this process, with this memory. Only the partitions
        # the reader holds: states staged again for partitions a rebalance moved are dropped, not written
        # (_let_go_of_states); every state this batch learnt is in them (_misrouted)
        held = self.learn_reader.partitions
        try:
            await self.lease.hold()
        except Fenced:
            self._forget_unwritten(before)
            raise
        self._drop_replaced()
        letters = self._with_held_letters(letters)
        acks: list[asyncio.Future[Any]] = []
        try:
            await self._send_learn_letters(letters, acks)
            await flush_acknowledged(
                (self.state_view,), self.learn_outbox.send_to, self.learn_outbox.drain, held
            )
        except BaseException:
            self._hold_learn_letters(letters, acks)
            raise
        for letter in letters:
            self.dead_letters.record(letter.reason)
        self.counters["learned"] += stats.learned
        self.counters["skipped_redelivered"] += stats.skipped_redelivered

    def _drop_replaced(self) -> None:
        """Let go of the states staged before faust's recovery read newer ones into the learner's table (a stalled
        worker given its partition back, without seeing it move, over what the interim owner learnt meanwhile):
        their outcomes were not committed, and are learnt again, if at all, from the recovered states."""
        replaced = self.state_view.drop_replaced()
        if replaced:
            self.counters["state_writes_replaced"] += len(replaced)
            log.warning(
                "%d states staged again after a failed flush dropped: faust's recovery read newer ones of them "
                "(e.g. %r) from the state topic",
                len(replaced),
                replaced[0],
            )

    def _memory_of(self, keys: set[str]) -> tuple[dict[str, bytes | None], dict[str, bytes | None]]:
        """What the learner holds of ``keys`` before a batch learns them, for :meth:`_forget_unwritten`: the state
        of each in its table (None: none), and the staged writes of those staged."""
        store, staged = self.task_to_state.data, self.state_view.staged
        return {key: store.get(key) for key in keys}, {key: staged[key] for key in keys if key in staged}

    def _forget_unwritten(self, before: tuple[dict[str, bytes | None], dict[str, bytes | None]]) -> None:
        """A batch learnt in memory may not be written (its partitions may have moved: ``Fenced``): the learner's
        table and staged writes go back to what they held before it (:meth:`_memory_of`), and the outcomes are
        read again from the committed offset. Not dropped: read again with no recovery of its partition in
        between (the membership confirmed again, the partitions kept), a state the table no longer held was
        learnt from the prior, its place in the topic unknown (the view's cleared by the batch's own learning).
        Should the partition move, the state goes with it (``_let_go_of_states``); should it come back without
        this worker seeing it move (stalled), a write staged before the batch goes if faust's recovery read a
        newer state of its key (``_drop_replaced``)."""
        store, staged = self.task_to_state.data, self.state_view.staged
        states, writes = before
        for key, raw in states.items():
            if raw is None:
                store.pop(key, None)
            else:
                store[key] = raw
            if key in writes:
                staged[key] = writes[key]
            else:
                staged.pop(key, None)
            self.learn.forget_key(key)

    def _misrouted(self, key: str, partition: int, known: dict[str, int]) -> str | None:
        """Why an outcome of state ``key`` read from outcomes ``partition`` must not be learnt here, or None.
        The join writes an outcome to its state's partition; one elsewhere (written by hand) would have its
        state written by whichever worker holds this partition, alongside the worker that holds the state's."""
        where = known.get(key)
        if where is None:
            where = known[key] = self._partition_of_task(key)
        if where == partition:
            return None
        return f"an outcome of {key!r} belongs in outcomes partition {where} (its state's), not {partition}"

    async def _send_learn_letters(self, letters: list[DeadLetter], acks: list[asyncio.Future[Any]]) -> None:
        """Send a learner batch's dead letters once its lease is held, right before its states (acknowledged by the
        same drain); their acknowledgements go to ``acks``. Until review20 each was sent as it was made, before the
        lease: a batch the lease refused sent them anyway, and its outcomes, read again (here or by the partition's
        new owner), sent them again; so did a batch that failed before its write (a state not read back in time)."""
        topic, send = self.deadletter.get_topic_name(), self.learn_outbox.send
        for letter in letters:
            acks.append(await send(topic, letter.source_topic.encode(), encode(letter)))

    def _with_held_letters(self, letters: list[DeadLetter]) -> list[DeadLetter]:
        """The dead letters of failed learner batches not acknowledged, then ``letters`` (one made again from its
        record read again goes once)."""
        held, self._learn_letters_held = self._learn_letters_held, {}
        if not held:
            return letters
        return [*held.values(), *(letter for letter in letters if letter_key(letter) not in held)]

    def _hold_learn_letters(self, letters: list[DeadLetter], acks: list[asyncio.Future[Any]]) -> None:
        """After a learner batch failed once its letters were made: those acknowledged are counted, the others held
        for the next batch. A state that does not decode is replaced in memory by the batch that finds it, so the
        outcomes read again make its letter no more (they are skipped by the watermarks in memory): until review21
        such a letter not acknowledged was lost. A letter of an outcome record is made again as well: it goes once."""
        for i, letter in enumerate(letters):
            if i < len(acks) and acknowledged(acks[i]):
                self.dead_letters.record(letter.reason)
            else:
                self._learn_letters_held.setdefault(letter_key(letter), letter)

    def _bad_outcome(self, record: Any, reason: DeadLetterReason, error: str) -> DeadLetter:
        """The dead letter of an outcomes record the learner cannot use (:meth:`_send_learn_letters`)."""
        self.counters["bad_outcomes"] += 1
        log.error(
            "outcome record not learnt: %s",
            error,
            extra={"partition": record.partition, "offset": record.offset},
        )
        letter = make_dead_letter(
            record.value or b"",
            record.topic,
            record.partition,
            record.offset,
            reason,
            f"outcome record not learnt: {error}",
            datetime.now(UTC),
        )
        return letter

    async def _read_state_before_replacing(self, keys: set[str]) -> None:
        """Before the learner replaces a state that does not decode with the key's last good one, let the state
        reader read the key's partition up to its end offset (at most ``STATE_READ_WAIT_S``): until then it may
        not know that one. Once it has (at once while it keeps up), learning goes on; if it has not within the
        wait, the batch fails (``StateReadFailed``) and is read again, rather than learn the key from the prior
        while a good state of it may be on the topic. A key whose good state the view evicted (idle) has it read
        back from the place the view remembered."""
        undecodable = [key for key in keys if not self.learn.decodes(key)]
        if not undecodable:
            return
        view, reader = self.view, self.reader
        for partition in sorted({self._partition_of_task(key) for key in undecodable}):
            try:
                async with asyncio.timeout(STATE_READ_WAIT_S):
                    await reader.read_through(partition)
            except TimeoutError:
                self.counters["state_read_timeouts"] += 1
                raise StateReadFailed(
                    f"the state reader has not read {self.state_topic.get_topic_name()}[{partition}] to its end "
                    f"within {STATE_READ_WAIT_S:.0f} s: the last good state of {sorted(undecodable)} is not known"
                ) from None
        for key in undecodable:
            where = view.evicted.get(key)
            if where is None or view.get(key) is not None:
                continue
            raw = await self._fetch_state(key)
            state = None if raw is None else reader.decode(key, raw)
            if state is not None and view.get(key) is None:  # else compaction left only the bad record
                view.offer(key, state, where)

    def _bad_state(self, bad: Undecodable) -> DeadLetter:
        """The dead letter of a state the learner could not decode (:meth:`_send_learn_letters`)."""
        self.counters["bad_states_replaced"] += 1
        where = self.reader.undecodable.get(bad.key)
        partition, offset = where or (self._partition_of_task(bad.key), 0)
        instead = "its last good state" if bad.last_good else "the prior (no good state of it was read)"
        error = f"state of {bad.key!r} does not decode ({bad.error}); learnt on from {instead}"
        if where is None:
            error += "; its offset is not known (source_offset 0)"
        log.error(error, extra={"partition": partition, "offset": offset})
        letter = make_dead_letter(
            bad.raw,
            self.state_topic.get_topic_name(),
            partition,
            offset,
            DeadLetterReason.UNDECODABLE_STATE,
            error,
            datetime.now(UTC),
        )
        return letter

    async def _restore_evicted(self, keys: set[str]) -> None:
        """Put evicted states back into the learner's table (from the state topic, without a changelog write)
        before outcomes are applied to them: a learner must never start an evicted key again from the prior.
        A key the topic holds no state of from its place on (``fetch`` says so) starts from the prior; one
        that could not be read back fails the batch (``StateReadFailed``): the outcomes reader reads it again
        from its committed offset, and nothing of it has been applied or written.

        The caller applies the outcomes right after this returns, with no ``await`` in between, so the idle
        sweep cannot evict them again first."""
        store = self.task_to_state.data
        view = self.view
        wanted = [k for k in keys if k not in store and (k in view.evicted or k in view.where)]
        fetched: dict[str, bytes] = {}
        for key in wanted:
            raw = await self._fetch_state(key)
            if raw is None:
                self.counters["state_restore_missed"] += 1
            else:
                fetched[key] = raw
        for key, raw in fetched.items():
            if key not in store:
                store[key] = raw
                self.counters["states_restored"] += 1

    async def _fetch_state(self, key: str) -> bytes | None:
        """``StateReader.fetch`` for the learner: a failure is counted and raised (the batch is read again)."""
        try:
            return await self.reader.fetch(key)
        except StateReadFailed:
            self.counters["state_restore_failed"] += 1
            raise

    def _drop_learnt(self, key: str) -> None:
        """Let go of everything this worker holds for a state key except its place in the topic."""
        store = self.task_to_state.data
        store.pop(key, None)  # the in-memory store only: no tombstone (the state stays in the topic)
        partitions = getattr(store, "_key_partition", None)
        if partitions is not None:
            partitions.pop(key, None)
        self.learn.forget_key(key)
        self.learned_at.pop(key, None)

    def _probe_sizes(self) -> dict[str, Any]:
        """What the memory probe reports besides RSS: the sizes of what grows with traffic."""
        return {
            **self.join.sizes(),
            "pending_table": len(self.request_to_pending.data),
            "early_table": len(self.request_to_early_feedback.data),
            "lane": len(self.decider.lane),
            "lane_bytes": self.decider.lane.bytes,
            "handoff_decisions": sum(len(h.decisions) for h in self._handoffs),
            "loop_ready": len(getattr(asyncio.get_running_loop(), "_ready", ())),
            "state_view": len(self.view.updated_at),
            "learned_at": len(self.learned_at),
        }

    async def _trim_memory(self) -> None:
        if memory.trim():
            self.counters["memory_trims"] += 1

    async def _evict_idle(self) -> None:
        """Evict states idle for ``limits.idle_evict_s``: no request here and no update for that long. They stay
        in the compacted topic and are read back when traffic returns (the decide loop decides with the prior
        until then; the learner reads them back before learning)."""
        try:
            idle_s = self.registry.snapshot.limits.idle_evict_s
            now = time.time()
            if idle_s is None or now < self._next_evict:
                return
            self._next_evict = now + min(EVICT_INTERVAL_S, idle_s / 4)
            self.foreign_keys.evict_idle(idle_s, now)
            cutoff = now - idle_s
            admission = self.decide_logic.admission
            evicted = 0
            for key, updated in list(self.view.updated_at.items()):
                if updated >= cutoff:
                    continue
                tenant, _, task_type = key.rpartition(TENANT_SEPARATOR)
                if admission.active(task_type, tenant or None, cutoff):
                    continue
                if self.view.evict(key):
                    self._drop_learnt(key)
                    evicted += 1
            for key in [k for k in self.task_to_state.data if k in self.view.evicted]:
                self._drop_learnt(key)  # recovered into the learner's table again after a rebalance
            self.counters["states_evicted"] += evicted
        except Exception as exc:  # retried at the next interval; never crash the worker for it
            log.warning("idle state eviction failed: %s", exc)

    def _on_learned(self, key: str, state: TaskState) -> None:
        self.view.offer(key, state)
        self.learned_at[key] = time.time()

    async def _check_catalog(self, stream: Any) -> None:
        """Dead-letter bad catalog events (once, here; every worker's StateReader skips them silently)."""
        async for event in stream.events():
            for msg in [*await self.gaps.missed(event.message), event.message]:
                if msg.value is None:
                    continue  # a tombstone (an empty payload is not one: it is dead-lettered)
                checked = decode_record(
                    ModelCatalogEvent,
                    msg.value,
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                    max_bytes=self.settings.max_payload_bytes,
                )
                if isinstance(checked, DeadLetter):
                    self.dead_letters.record(checked.reason)
                    await self.catalog_outbox.send(
                        self.deadletter.get_topic_name(), msg.topic.encode(), encode(checked)
                    )
            await self.catalog_outbox.drain()

    # -- timers -------------------------------------------------------------------------------------------
    def _settling(self) -> bool:
        """True while faust rebalances or recovers tables (the decision reader then follows its signals)."""
        app = self.app
        recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]  # TableManager's
        return bool(app.rebalancing or app.in_recovery or not recovered)

    async def _follow_assignment(self) -> None:
        """Once faust has settled (rebalance done, tables recovered, streams resumed), the outcomes reader takes
        the outcomes partitions assigned here, and the decide loop and the join's readers the partitions of the
        feedback partitions assigned here (``_sync``), again whenever the decide loop restarts.

        Polled rather than driven by ``on_rebalance_complete``: faust sends that signal before it checks
        that the rebalance is still current, so a stale one can arrive after the next revocation.
        """
        try:
            if self._settling():
                return
            if not self.ready:
                self._announce_ready()
            assignment = self.app.consumer.assignment()
            outcomes = self.outcomes.get_topic_name()
            learnt = frozenset(tp.partition for tp in assignment if tp.topic == outcomes)
            if self.learn_reader.partitions != learnt:
                releases = self._releases
                await self.learn_reader.assign(learnt, unless=self._settling)
                # no await from here until the reader's next batch: it learns only in ``learnt``
                if (
                    self.learn_reader.partitions == learnt
                    and not self._settling()
                    and self._releases == releases
                ):
                    self._let_go_of_states(learnt)
            feedback = self.feedback.get_topic_name()
            owned = frozenset(tp.partition for tp in assignment if tp.topic == feedback)
            synced = self._synced == (owned, self.decider.runs)
            if synced and self.decider.assigned == owned and self.feedback_reader.partitions == owned:
                return
            if self.decider.runs:  # else the decide loop is not up yet
                await self._sync(owned, self._settling)
        except Exception as exc:  # retried at the next interval; never crash the worker for it
            log.warning("decide and join assignment failed: %s", exc)

    def _let_go_of_states(self, learnt: frozenset[int]) -> None:
        """Drop what the learner's table holds of state partitions outside ``learnt`` (after a rebalance): states
        staged again after a failed flush, which would otherwise be written, at the learner's next batch, into a
        partition its new owner writes newer states to (the older one replacing the newer on the compacted
        topic), and the states in memory (faust's memory store kept those learnt here until a restart). The new
        owner reads their outcomes again from the committed offset, which never passed an unacknowledged state."""
        writes, entries = self.state_view.drop_outside(learnt)
        for key in entries:
            self.learn.forget_key(key)
            self.learned_at.pop(key, None)
        if writes:
            self.counters["state_writes_dropped_after_rebalance"] += writes
            log.warning(
                "%d states staged again after a failed flush dropped: their partitions moved (their new owner "
                "learns their outcomes again)",
                writes,
            )
        if entries:
            self.counters["state_entries_dropped_after_rebalance"] += len(entries)

    def _announce_ready(self) -> None:
        """Log one "worker ready" line once the decide loop has its partitions and the state is read."""
        decide = self.decider.assigned
        if decide is None or not self.reader.caught_up.is_set():
            return
        self.ready = True
        feedback = self.feedback.get_topic_name()
        joined = sorted(tp.partition for tp in self.app.consumer.assignment() if tp.topic == feedback)
        log.info(
            "worker ready: deciding for %s (requests partitions %s, feedback partitions %s, %d task states "
            "recovered)",
            self.settings.topic_prefix,
            sorted(decide),
            joined,
            len(self.view.keys()),
            extra={"event": "worker_ready", "worker_id": self.worker_id},
        )

    async def _tick(self) -> None:
        """Ticks drive the reward wait window (feedback partitions) and unknown-request detection (decisions)."""
        try:
            stamp = repr(time.time()).encode()
            for partition in range(self.settings.partitions):
                for topic in (self.feedback, self.decisions):
                    await topic.send(key=None, value=b"", partition=partition, headers={TICK_HEADER: stamp})
        except Exception as exc:  # a missed tick only delays expiry; never crash the worker for it
            log.warning("tick not sent: %s", exc)

    async def _reload_config(self) -> None:
        try:
            if self.registry.reload_if_changed():
                self._configure_top()
                log.info("configuration reloaded", extra={"registry_version": self.registry.version})
        except Exception as exc:
            log.error("configuration reload failed; keeping the previous one: %s", exc)

    # -- observation --------------------------------------------------------------------------------------
    def _configure_top(self) -> None:
        snapshot = self.registry.snapshot
        self.top.configure(
            snapshot.limits.metrics_task_types, {*snapshot.routes, *snapshot.limits.allowed_task_types}
        )

    def _on_decisions(self, batch: list[Decided]) -> None:
        """Count one polled batch's decisions by task type and model, and by cap; keep the newest."""
        # one count per (task type, model) of the batch, not per decision (py-spy: ~5 % of the event loop)
        # (the pairs, the caps and the texts taken by C-level iterators: no Python step per decision, but
        # one per pair, and a flood's decisions are a pair each)
        # the usual batch is of one task type: its models counted (a str key, a one-item getter) and paired with
        # it after, the same pairs in the same order as the pairs counted (callgrind: ~1,640 -> ~1,000 instructions
        # per decision for the whole count)
        task_type = batch[0][0] if batch else None
        pairs: Iterable[tuple[tuple[str, str | None], int]]
        if task_type is not None and countOf(map(_TYPE, batch), task_type) == len(batch):
            pairs = [((task_type, model), n) for model, n in Counter(map(_MODEL, batch)).items()]
        else:
            pairs = Counter(map(_TYPE_AND_MODEL, batch)).items()
        self.top.count_many(self.decisions_by_model, pairs, time.time())
        self.capped.update(filter(None, map(_CAP, batch)))
        recent = self.recent_decisions
        recent.extend(map(_TEXT, batch[-200:]))
        if len(recent) > 200:
            del recent[: len(recent) - 100]
