"""The Python client: ask the router for a model, send feedback, read topics.

``RouterClient`` is asyncio-native; ``SyncRouterClient`` runs one in a background thread for synchronous code.

Request-reply: each client owns a private reply topic, ``<prefix>.replies.<client-uuid>`` by default, created
with one partition when the client starts and deleted when it closes (pass ``reply_topic=`` to use an existing
topic instead; the client then neither creates nor deletes it). Every request names it in ``reply_to``; one
background task reads it and resolves the waiting ``route()`` call by ``request_id``, so any number of
concurrent ``route()`` calls share ONE producer and ONE consumer.

Nothing here hangs on a broken broker: start-up is bounded by ``start_timeout_s`` (the client then runs
"degraded"), and every ``route()`` is bounded by ``timeout_s``. On timeout or trouble ``route()`` returns the
static default route, a :class:`RoutingDecision` with ``is_default_route=True``, ``propensity=1.0`` and
``reasons.rules`` holding ``"default_route"`` and ``"default_route:<why>"``; without a default route it raises
:class:`RouteTimeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from banditroute.codec import decode, encode
from banditroute.events import (
    Constraints,
    DecisionReasons,
    Feedback,
    FeedbackError,
    Objective,
    PolicyRef,
    RoutingDecision,
    RoutingRequest,
)
from banditroute.kafka.admin import admin_client, create_topics, new_topic
from banditroute.kafka.admin import ensure_topics as admin_ensure_topics
from banditroute.kafka.groups import diagnose_no_answer
from banditroute.kafka.topics import KafkaUnavailable, partitions_of, read_topic
from banditroute.settings import Settings
from banditroute.topics import layout

log = logging.getLogger("banditroute.client")

T = TypeVar("T")

DEFAULT_ROUTE_ENV = "BANDITROUTE_DEFAULT_ROUTE"
"""Environment variable with the static default route: ``model[,fallback,...]``."""
DEFAULT_ROUTE_RULE = "default_route"
REPLY_RETENTION_MS = 60 * 60 * 1000
_WHY_CLEAN = re.compile(r"[^A-Za-z0-9._:/@+=-]+")


class RouteTimeout(TimeoutError):
    """No decision arrived in time (or the router is unreachable) and no default route is configured."""


class RouterUnavailable(RouteTimeout, KafkaUnavailable):
    """The broker could not be reached (start-up failed, or a send failed)."""


# --------------------------------------------------------------------------------------------------------------
# Pure helpers (no I/O): request, feedback and default-route construction


@dataclass(frozen=True, slots=True)
class DefaultRoute:
    """The static route used when the router does not answer: a model and the fallbacks after it."""

    model: str
    fallbacks: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: DefaultRoute | str | Sequence[str] | None) -> DefaultRoute | None:
        """Accept a DefaultRoute, ``"model,fallback1,fallback2"`` or a list of names; empty means none."""
        if value is None or isinstance(value, DefaultRoute):
            return value
        names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value)]
        names = [n for n in names if n]
        if not names:
            return None
        return cls(names[0], tuple(names[1:]))

    @classmethod
    def from_settings(cls, settings: Settings) -> DefaultRoute | None:
        """``settings.default_route`` if the settings have it, else ``$BANDITROUTE_DEFAULT_ROUTE``."""
        configured = getattr(settings, "default_route", None)
        if configured is None:
            configured = os.environ.get(DEFAULT_ROUTE_ENV)
        return cls.parse(configured)


def new_request_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def build_request(
    task_type: str,
    *,
    tenant: str | None = None,
    candidates: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    max_cost_usd: float | None = None,
    max_latency_ms: float | None = None,
    capabilities: Iterable[str] = (),
    objective: Objective | Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    reply_to: str | None = None,
    created_at: datetime | None = None,
) -> RoutingRequest:
    """A validated :class:`RoutingRequest` (raises ``pydantic.ValidationError`` on bad input)."""
    return RoutingRequest(
        request_id=request_id or new_request_id(),
        task_type=task_type,
        tenant=tenant,
        candidates=tuple(candidates) if candidates is not None else None,
        exclude=tuple(exclude) if exclude is not None else None,
        constraints=Constraints(
            max_cost_usd=max_cost_usd, max_latency_ms=max_latency_ms, capabilities=tuple(capabilities)
        ),
        objective=Objective.model_validate(objective) if isinstance(objective, Mapping) else objective,
        metadata=dict(metadata or {}),
        created_at=created_at or utcnow(),
        reply_to=reply_to,
    )


def idempotency_key_for(request_id: str, model: str) -> str:
    """``<request_id>:<model>``, or its SHA-256 when that would exceed the 128-character id limit."""
    key = f"{request_id}:{model}"
    return key if len(key) <= 128 else hashlib.sha256(key.encode()).hexdigest()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a delivery future's exception as retrieved (asyncio logs unretrieved ones at exit)."""
    if not future.cancelled():
        future.exception()


def request_id_of_decision(decision_id: str) -> str | None:
    """The request id inside a worker decision id ``d:<request_id>``, else None."""
    return decision_id[2:] if decision_id.startswith("d:") and len(decision_id) > 2 else None


def build_feedback(
    *,
    request_id: str | None,
    model: str,
    quality: float | None = None,
    latency_ms: float | None = None,
    cost_usd: float | None = None,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
    error: FeedbackError | str | None = None,
    decision_id: str | None = None,
    idempotency_key: str | None = None,
    observed_at: datetime | None = None,
) -> Feedback:
    """A validated :class:`Feedback`; ``request_id`` may be derived from a ``d:<request_id>`` decision id."""
    if request_id is None and decision_id is not None:
        request_id = request_id_of_decision(decision_id)
    if request_id is None:
        raise ValueError("give request_id (the feedback topic is keyed by it)")
    return Feedback(
        request_id=request_id,
        decision_id=decision_id,
        model=model,
        quality=quality,
        latency_ms=latency_ms,
        cost_usd=cost_usd,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        error=FeedbackError(error) if error is not None else None,
        observed_at=observed_at or utcnow(),
        idempotency_key=idempotency_key or idempotency_key_for(request_id, model),
    )


def default_decision(request: RoutingRequest, route: DefaultRoute, why: str) -> RoutingDecision:
    """The decision returned when the router did not answer: the static route, flagged, propensity 1.

    ``why`` is a short code (``timeout``, ``unavailable``, ...); it lands in ``reasons.rules`` as
    ``default_route:<why>`` (``reasons.no_eligible`` must stay null when a model is set).
    """
    code = _WHY_CLEAN.sub("_", why).strip("_")[:100] or "unknown"
    return RoutingDecision(
        decision_id=f"default:{request.request_id}"[:128],
        request_id=request.request_id,
        task_type=request.task_type,
        tenant=request.tenant,
        model=route.model,
        fallbacks=route.fallbacks,
        propensity=1.0,
        policy=PolicyRef(name=DEFAULT_ROUTE_RULE, version="static"),
        state_version=0,
        reasons=DecisionReasons(rules=(DEFAULT_ROUTE_RULE, f"{DEFAULT_ROUTE_RULE}:{code}")),
        decided_at=utcnow(),
        decision_ms=0.0,
        is_default_route=True,
    )


def default_route_reason(decision: RoutingDecision) -> str | None:
    """Why a decision is a default route (``timeout``, ``unavailable``, ...), or None for a real decision."""
    if not decision.is_default_route:
        return None
    for rule in decision.reasons.rules:
        if rule.startswith(f"{DEFAULT_ROUTE_RULE}:"):
            return rule.split(":", 1)[1]
    return "unknown"


# --------------------------------------------------------------------------------------------------------------
# Topic layout (the same one the worker creates), so producers never auto-create a topic with 1 partition


def topic_layout(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """Full topic name -> (partitions, topic configs) for the default topics (``topics.DEFAULT_TOPICS``)."""
    return layout(settings.topic, settings.partitions, settings.state_partitions)


async def ensure_topics(settings: Settings, suffixes: Iterable[str], *, timeout_s: float = 10.0) -> None:
    """Create the named default topics if missing, with the worker's layout (bounded by ``timeout_s``).

    A topic created concurrently by a worker or another client is fine; any other refusal raises
    :class:`~banditroute.kafka.admin.TopicCreationError` with the broker's message."""
    wanted = topic_layout(settings)
    names = [settings.topic(s) for s in suffixes]
    topics = [new_topic(n, *wanted[n]) for n in names]
    await asyncio.wait_for(
        admin_ensure_topics(settings.kafka_bootstrap, settings.aiokafka_security(), topics), timeout_s
    )


# --------------------------------------------------------------------------------------------------------------
# The async client


class RouterClient:
    """Async client of a banditroute deployment. Use as ``async with RouterClient() as client:``.

    Arguments: ``settings`` (default ``Settings()``, i.e. ``BANDITROUTE_*`` environment variables, including
    SASL/TLS), ``bootstrap`` and ``topic_prefix`` overriding the settings, ``reply_topic`` (an existing topic
    to read decisions from instead of a private one), ``timeout_s`` (default per ``route()``),
    ``default_route`` (``"model,fallback,..."``, a list, or a :class:`DefaultRoute`; default from
    ``settings.default_route`` / ``$BANDITROUTE_DEFAULT_ROUTE``), ``start_timeout_s`` (bound on connecting;
    past it the client is degraded: ``route()`` returns the default route, ``feedback()`` raises),
    ``ensure_topics`` (create missing request/feedback topics with the worker's layout at start), ``replies``
    (False: a producer only, for ``feedback()`` and ``send_request()``; no reply topic is made).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        bootstrap: str | None = None,
        topic_prefix: str | None = None,
        reply_topic: str | None = None,
        timeout_s: float = 2.0,
        default_route: DefaultRoute | str | Sequence[str] | None = None,
        start_timeout_s: float = 5.0,
        ensure_topics: bool = True,
        replies: bool = True,
        client_id: str | None = None,
    ) -> None:
        settings = settings or Settings.model_validate({})
        updates: dict[str, Any] = {}
        if bootstrap:
            updates["kafka_bootstrap"] = bootstrap
        if topic_prefix:
            updates["topic_prefix"] = topic_prefix
        self.settings = settings.model_copy(update=updates) if updates else settings
        self.client_uuid = uuid.uuid4().hex
        self.client_id = client_id or f"banditroute-client-{self.client_uuid[:8]}"
        self.reply_topic = reply_topic or self.settings.topic(f"replies.{self.client_uuid}")
        self._replies = replies
        self._owns_reply_topic = reply_topic is None and replies
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.default_route = DefaultRoute.parse(default_route) or DefaultRoute.from_settings(self.settings)
        self._ensure_topics = ensure_topics
        self._producer: Any = None
        self._consumer: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[RoutingDecision]] = {}
        self._created_reply_topic = False
        self._started = False
        self.degraded: str | None = None
        """Why the client could not connect at start (None when connected)."""
        self._diagnosis: tuple[float, asyncio.Future[str]] | None = None
        self.stats = {"replies": 0, "unmatched_replies": 0, "bad_replies": 0, "default_routes": 0}

    # -- lifecycle --------------------------------------------------------------------------------------
    async def __aenter__(self) -> RouterClient:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @property
    def requests_topic(self) -> str:
        return self.settings.topic("requests")

    @property
    def feedback_topic(self) -> str:
        return self.settings.topic("feedback")

    async def start(self) -> None:
        """Connect (bounded by ``start_timeout_s``); on failure, run degraded instead of raising."""
        if self._started:
            return
        self._started = True
        try:
            await asyncio.wait_for(self._connect(), self.start_timeout_s)
        except Exception as exc:  # includes TimeoutError and aiokafka's KafkaConnectionError
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.degraded = f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {why}"
            log.warning("banditroute client degraded: %s", self.degraded)
            await self._teardown()

    async def _connect(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        from banditroute.kafka import backoff

        backoff.install()  # no busy metadata loop while the broker is down (see kafka/backoff.py)
        s = self.settings
        security = s.aiokafka_security()
        if self._owns_reply_topic or self._ensure_topics:
            await self._admin_setup(security)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap,
            client_id=self.client_id,
            linger_ms=1,
            request_timeout_ms=max(1000, int(self.timeout_s * 1000)),
            **security,
        )
        await self._producer.start()
        if not self._replies:
            return
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            client_id=self.client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=20,
            **security,
        )
        await self._consumer.start()
        parts = await partitions_of(self._consumer, self.reply_topic, require_leader=True)
        while not parts:  # a just-created topic takes a moment to appear in metadata and elect a leader
            await asyncio.sleep(0.05)
            parts = await partitions_of(self._consumer, self.reply_topic, require_leader=True)
        tps = [TopicPartition(self.reply_topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the position now: every reply produced after start() is read
            await self._consumer.position(tp)
        self._reader = asyncio.create_task(self._read_replies(), name="banditroute-client-replies")

    async def _admin_setup(self, security: dict[str, object]) -> None:
        s = self.settings
        async with admin_client(s.kafka_bootstrap, security, client_id=self.client_id) as admin:
            wanted = []
            if self._owns_reply_topic:
                wanted.append(new_topic(self.reply_topic, 1, {"retention.ms": str(REPLY_RETENTION_MS)}))
            if self._ensure_topics:
                topics = topic_layout(s)
                wanted += [new_topic(n, *topics[n]) for n in (self.requests_topic, self.feedback_topic)]
            await create_topics(admin, wanted)
            self._created_reply_topic = self._owns_reply_topic

    async def close(self) -> None:
        """Stop reading, fail waiting calls, delete the private reply topic (best effort, bounded)."""
        await self._teardown()
        if self._created_reply_topic:
            self._created_reply_topic = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._delete_reply_topic(), self.start_timeout_s)

    async def _teardown(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
            self._reader = None
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.stop(), self.start_timeout_s)
        self._consumer = self._producer = None

    async def _delete_reply_topic(self) -> None:
        s = self.settings
        async with admin_client(s.kafka_bootstrap, s.aiokafka_security()) as admin:
            await admin.delete_topics([self.reply_topic])

    # -- replies ----------------------------------------------------------------------------------------
    async def _read_replies(self) -> None:
        consumer = self._consumer
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep reading through transient broker errors
                log.warning("reading replies failed: %s", exc)
                await asyncio.sleep(0.2)
                continue
            for records in batch.values():
                for record in records:
                    self._on_reply(record.value)

    def _on_reply(self, value: bytes | None) -> None:
        if value is None:
            return
        decision = decode(RoutingDecision, value)
        if not isinstance(decision, RoutingDecision):
            self.stats["bad_replies"] += 1
            log.warning("undecodable reply on %s: %s", self.reply_topic, decision.error)
            return
        if decision.shadow:
            return
        fut = self._pending.get(decision.request_id)
        if fut is None or fut.done():
            self.stats["unmatched_replies"] += 1
            return
        self.stats["replies"] += 1
        fut.set_result(decision)

    # -- routing ----------------------------------------------------------------------------------------
    async def route(
        self,
        task_type: str,
        *,
        tenant: str | None = None,
        candidates: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        max_cost_usd: float | None = None,
        max_latency_ms: float | None = None,
        capabilities: Iterable[str] = (),
        objective: Objective | Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> RoutingDecision:
        """Ask for a model; returns the router's decision, or the flagged default route on timeout/trouble."""
        request = build_request(
            task_type,
            tenant=tenant,
            candidates=candidates,
            exclude=exclude,
            max_cost_usd=max_cost_usd,
            max_latency_ms=max_latency_ms,
            capabilities=capabilities,
            objective=objective,
            metadata=metadata,
            request_id=request_id,
        )
        return await self.route_request(request, timeout_s=timeout_s)

    async def route_request(
        self, request: RoutingRequest, *, timeout_s: float | None = None
    ) -> RoutingDecision:
        """Send a prepared request (its ``reply_to`` is set to this client's topic) and await the decision."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        if not self._started:
            await self.start()
        if self.degraded is not None or self._producer is None:
            return self._fallback(request, "unavailable", self.degraded or "client is closed")
        if not self._replies:
            raise RuntimeError("this client was made with replies=False; use send_request()")
        request = request.model_copy(update={"reply_to": self.reply_topic})
        rid = request.request_id
        if rid in self._pending:
            raise ValueError(f"request_id {rid!r} is already waiting for a decision")
        fut: asyncio.Future[RoutingDecision] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                sent = await self._producer.send(self.requests_topic, value=encode(request), key=rid.encode())
                sent.add_done_callback(_retrieve)  # a delivery failure shows as a timeout, not as log noise
                return await asyncio.shield(fut)
        except TimeoutError:
            why = f"no decision within {timeout:g}s"
            if self.default_route is None:  # the error should say why; a default route answers at once
                why = f"{why}: {await self.why_no_answer(timeout)}"
            return self._fallback(request, "timeout", why)
        except asyncio.CancelledError:
            if fut.cancelled() and time.monotonic() - started < timeout:  # closed while waiting
                return self._fallback(request, "closed", "client closed while waiting")
            raise
        except Exception as exc:  # KafkaError from send: broker trouble
            return self._fallback(request, "send_failed", f"{type(exc).__name__}: {exc}")
        finally:
            self._pending.pop(rid, None)

    async def why_no_answer(self, waited_s: float) -> str:
        """Why no decision came: no worker in the decide group, or workers behind (asks the broker; shared
        by the timeouts of a few seconds, so a burst of them costs one question)."""
        now = time.monotonic()
        if self._diagnosis is None or now - self._diagnosis[0] > 2.0:
            task = asyncio.ensure_future(diagnose_no_answer(self.settings, waited_s, timeout_s=3.0))
            self._diagnosis = (now, task)
        return await asyncio.shield(self._diagnosis[1])

    def _fallback(self, request: RoutingRequest, code: str, why: str) -> RoutingDecision:
        if self.default_route is None:
            cls = RouteTimeout if code == "timeout" else RouterUnavailable
            raise cls(
                f"no routing decision for request {request.request_id} ({why}) and no default route is "
                f"configured (pass default_route= or set {DEFAULT_ROUTE_ENV})"
            )
        self.stats["default_routes"] += 1
        log.info("default route for %s: %s", request.request_id, why)
        return default_decision(request, self.default_route, code)

    async def send_request(self, request: RoutingRequest, *, wait: bool = True) -> None:
        """Produce a request as is (no reply awaited). With ``wait`` the call returns once it is stored."""
        producer = self._require_producer()
        if wait:
            await asyncio.wait_for(
                producer.send_and_wait(
                    self.requests_topic, value=encode(request), key=request.request_id.encode()
                ),
                max(self.timeout_s, 5.0),
            )
        else:
            await producer.send(self.requests_topic, value=encode(request), key=request.request_id.encode())

    # -- feedback ---------------------------------------------------------------------------------------
    async def feedback(
        self,
        *,
        request_id: str | None = None,
        model: str,
        quality: float | None = None,
        latency_ms: float | None = None,
        cost_usd: float | None = None,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        error: FeedbackError | str | None = None,
        decision_id: str | None = None,
        idempotency_key: str | None = None,
        observed_at: datetime | None = None,
    ) -> Feedback:
        """Produce the outcome of a call (keyed by request_id); returns the event once the broker has it."""
        event = build_feedback(
            request_id=request_id,
            model=model,
            quality=quality,
            latency_ms=latency_ms,
            cost_usd=cost_usd,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            error=error,
            decision_id=decision_id,
            idempotency_key=idempotency_key,
            observed_at=observed_at,
        )
        await self.send_feedback(event)
        return event

    async def send_feedback(self, event: Feedback, *, wait: bool = True) -> None:
        """Produce a prepared Feedback keyed by its request_id (raises RouterUnavailable on broker trouble)."""
        if event.request_id is None:
            raise ValueError("feedback needs request_id: the feedback topic is keyed by it")
        producer = self._require_producer()
        key = event.request_id.encode()
        try:
            if wait:
                await asyncio.wait_for(
                    producer.send_and_wait(self.feedback_topic, value=encode(event), key=key),
                    max(self.timeout_s, 5.0),
                )
            else:
                await producer.send(self.feedback_topic, value=encode(event), key=key)
        except Exception as exc:  # TimeoutError, KafkaError, connection errors
            raise RouterUnavailable(f"feedback for {event.request_id} not stored: {exc!r}") from exc

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()

    def _require_producer(self) -> Any:
        if self.degraded is not None:
            raise RouterUnavailable(self.degraded)
        if self._producer is None:
            raise RouterUnavailable("the client is not started (use 'async with RouterClient() as client')")
        return self._producer


# --------------------------------------------------------------------------------------------------------------
# The synchronous wrapper


class SyncRouterClient:
    """``RouterClient`` for synchronous code: an event loop in a daemon thread runs the async client.

    ``with SyncRouterClient(default_route="small-fast") as client: client.route("chat")``. Thread-safe: calls
    from many threads share the one client.
    """

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: RouterClient | None = None

    @property
    def client(self) -> RouterClient:
        if self._client is None:
            raise RuntimeError("SyncRouterClient is not started")
        return self._client

    def start(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="banditroute-client", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop

        async def make() -> RouterClient:
            client = RouterClient(self._settings, **self._kwargs)
            await client.start()
            return client

        self._client = self._call(make())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("SyncRouterClient is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def route(self, task_type: str, **kwargs: Any) -> RoutingDecision:
        """Same arguments as :meth:`RouterClient.route`."""
        return self._call(self.client.route(task_type, **kwargs))

    def feedback(self, **kwargs: Any) -> Feedback:
        """Same arguments as :meth:`RouterClient.feedback`."""
        return self._call(self.client.feedback(**kwargs))

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        try:
            if self._client is not None:
                self._call(self._client.close())
        finally:
            self._client = None
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(timeout=10)
            loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> SyncRouterClient:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


async def produce_events(
    settings: Settings,
    suffix: str,
    events: Iterable[tuple[str, BaseModel]],
    *,
    timeout_s: float = 10.0,
) -> int:
    """Produce ``(key, event)`` pairs to the default topic ``suffix`` (created with the worker's layout when
    missing) and wait until the broker has them all. Returns the count; RouterUnavailable on trouble."""
    from aiokafka import AIOKafkaProducer

    items = list(events)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, linger_ms=5, **settings.aiokafka_security()
    )

    async def run() -> None:
        await ensure_topics(settings, [suffix], timeout_s=timeout_s)
        await producer.start()
        topic = settings.topic(suffix)
        futures = [await producer.send(topic, value=encode(ev), key=key.encode()) for key, ev in items]
        await asyncio.gather(*futures)

    try:
        await asyncio.wait_for(run(), timeout_s)
    except Exception as exc:
        raise RouterUnavailable(f"could not produce to {settings.topic(suffix)}: {exc!r}") from exc
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
    return len(items)


__all__ = [
    "DEFAULT_ROUTE_ENV",
    "DefaultRoute",
    "RouteTimeout",
    "RouterClient",
    "RouterUnavailable",
    "SyncRouterClient",
    "build_feedback",
    "build_request",
    "default_decision",
    "default_route_reason",
    "ensure_topics",
    "produce_events",
    "idempotency_key_for",
    "partitions_of",
    "read_topic",
    "topic_layout",
]
