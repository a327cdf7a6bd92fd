"""The asyncio client: :class:`RouterClient` (see :mod:`banditroute.client` for the request-reply design)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from banditroute.codec import decode, encode
from banditroute.events import Feedback, FeedbackError, Objective, RoutingDecision, RoutingRequest
from banditroute.kafka.client_io import (
    REPLY_RETENTION_MS,
    create_client_topics,
    delete_topic,
    ensure_topics,
    topic_layout,
)
from banditroute.kafka.groups import diagnose_no_answer
from banditroute.kafka.topics import KafkaUnavailable
from banditroute.messages import (
    DEFAULT_ROUTE_ENV,
    DefaultRoute,
    PlainRequest,
    build_feedback,
    build_request,
    default_decision,
    plain_call,
)
from banditroute.settings import Settings

if TYPE_CHECKING:
    from banditroute.local_router import LocalRouter

log = logging.getLogger("banditroute.client")


class RouteTimeout(TimeoutError):
    """No decision arrived in time (or the router is unreachable) and no default route is configured."""


class RouterUnavailable(RouteTimeout, KafkaUnavailable):
    """The broker could not be reached (start-up failed, or a send failed)."""


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a delivery future's exception as retrieved (asyncio logs unretrieved ones at exit)."""
    if not future.cancelled():
        future.exception()


_ROUTE_ARGUMENTS = frozenset(
    {"tenant", "candidates", "exclude", "max_cost_usd", "max_latency_ms", "capabilities", "objective"}
    | {"metadata", "request_id", "timeout_s"}
)
_LIMITS = ("candidates", "exclude", "max_cost_usd", "max_latency_ms", "objective")


def _noted(decision: RoutingDecision, rule: str) -> RoutingDecision:
    """``decision`` with ``rule`` added to ``reasons.rules`` (why a local-mode client asked a worker)."""
    reasons = decision.reasons.model_copy(update={"rules": (*decision.reasons.rules, rule)})
    return decision.model_copy(update={"reasons": reasons})


def error_text(exc: BaseException) -> str:
    """An error as ``Type: message``, the type named once: aiokafka's errors start their message with it already
    (until review21 a client that could not connect said ``KafkaConnectionError: KafkaConnectionError: ...``)."""
    name, text = type(exc).__name__, str(exc)
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


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

    Local mode (``mode="local"``, see :mod:`banditroute.local_router`): ``route()`` decides in this process from
    the replicated routing snapshot and publishes the decision to the ``decisions`` topic in the background.
    ``task_types`` names task types whose state to hold from the start (others are read when first routed);
    ``staleness_s`` is how old the snapshot may get (the topics not read for that long) before ``route()``
    falls back; ``local_fallback`` says to what: ``"remote"`` (a worker decides, as in remote mode) or
    ``"default"`` (the static default route, no reply topic is made); the fallback decision names the reason
    (``local_fallback:<why>`` or ``default_route:local_<why>`` in ``reasons.rules``); ``seed`` seeds the
    local sampler; ``max_pending`` bounds the decisions awaiting publication (past it ``route()`` falls back
    with ``outbox_full``).
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
        mode: Literal["remote", "local"] = "remote",
        task_types: Iterable[str] = (),
        staleness_s: float = 30.0,
        local_fallback: Literal["remote", "default"] = "remote",
        seed: int | None = None,
        max_pending: int = 100_000,
    ) -> None:
        if mode not in ("remote", "local") or local_fallback not in ("remote", "default"):
            raise ValueError("mode must be 'remote' or 'local', local_fallback 'remote' or 'default'")
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
        self.mode = mode
        self._local_options: dict[str, Any] = {
            "task_types": tuple(task_types),
            "staleness_s": staleness_s,
            "seed": seed,
            "max_pending": max_pending,
        }
        self._local: LocalRouter | None = None
        replies = replies and not (mode == "local" and local_fallback == "default")
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
    def local(self) -> LocalRouter | None:
        """The in-process decider in local mode once started (None in remote mode)."""
        return self._local

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
            why = error_text(exc)
            self.degraded = f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {why}"
            log.warning("banditroute client degraded: %s", self.degraded)
            await self._teardown()
            return
        if self._local is not None and not await self._local.wait_loaded(self.start_timeout_s):
            log.warning("local mode: the routing snapshot is not loaded yet; route() falls back until it is")

    async def _connect(self) -> None:
        from banditroute.kafka.client_io import ReplyReader, start_producer

        if self._owns_reply_topic or self._ensure_topics:
            await self._admin_setup()
        self._producer = await start_producer(self.settings, self.client_id, self.timeout_s)
        if self.mode == "local":
            await self._start_local()
        if not self._replies:
            return
        self._consumer = ReplyReader(self.settings, self.client_id, self.reply_topic)
        await self._consumer.start()
        self._reader = asyncio.create_task(
            self._consumer.run(self._on_reply), name="banditroute-client-replies"
        )

    async def _start_local(self) -> None:
        from banditroute.local_router import LocalRouter

        local = self._local_options
        self._local = LocalRouter(
            self.settings,
            self._producer,
            client_id=self.client_id,
            task_types=local["task_types"],
            staleness_s=local["staleness_s"],
            seed=local["seed"],
            max_pending=local["max_pending"],
        )
        await self._local.start()

    async def _admin_setup(self) -> None:
        suffixes = []
        if self._ensure_topics:
            suffixes = ["requests", "feedback"]
            if self.mode == "local":
                suffixes += ["decisions", "shadow-decisions", "state", "catalog", "config"]
        reply = self.reply_topic if self._owns_reply_topic else None
        await create_client_topics(self.settings, self.client_id, suffixes, reply)
        self._created_reply_topic = self._owns_reply_topic

    async def close(self) -> None:
        """Stop reading, fail waiting calls, delete the private reply topic (best effort, bounded)."""
        await self._teardown()
        if self._created_reply_topic:
            self._created_reply_topic = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(delete_topic(self.settings, self.reply_topic), self.start_timeout_s)

    async def _teardown(self) -> None:
        if self._local is not None:
            with contextlib.suppress(Exception):
                await self._local.stop(self.start_timeout_s)
            self._local = None
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

    # -- replies ----------------------------------------------------------------------------------------
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
        local = self._local
        if (
            local is not None  # started and connected: the common call is decided without awaiting
            and candidates is None
            and exclude is None
            and max_cost_usd is None
            and max_latency_ms is None
            and not capabilities
            and objective is None
        ):
            plain = plain_call(task_type, tenant, metadata, request_id)
            if plain is not None:
                decided = local.decide_now(plain)
                if decided is not None and not isinstance(decided, str):
                    return decided
                return await self.route_request(plain.full(), timeout_s=timeout_s)
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

    def local_call(self, task_type: str, arguments: Mapping[str, Any]) -> PlainRequest | None:
        """In local mode, the request of ``route(task_type, **arguments)`` when it is the common call that
        :meth:`LocalRouter.decide_now <banditroute.local_router.LocalRouter.decide_now>` decides without
        awaiting (a task type, maybe a tenant, request id and plain metadata), else None."""
        if not arguments and self._local is not None:  # route("task"): the most common call
            return plain_call(task_type, None, None, None)
        if (
            self._local is None
            or not _ROUTE_ARGUMENTS.issuperset(arguments)
            or any(arguments.get(name) is not None for name in _LIMITS)
            or arguments.get("capabilities")
        ):
            return None
        return plain_call(
            task_type, arguments.get("tenant"), arguments.get("metadata"), arguments.get("request_id")
        )

    async def route_request(
        self, request: RoutingRequest, *, timeout_s: float | None = None
    ) -> RoutingDecision:
        """Send a prepared request (its ``reply_to`` is set to this client's topic) and await the decision."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        if not self._started:
            await self.start()
        if self.degraded is not None or self._producer is None:
            return self._fallback(request, "unavailable", self.degraded or "client is closed")
        if self._local is not None:
            decided = await self._local.route(request)
            if not isinstance(decided, str):
                return decided
            if not self._replies:
                return self._fallback(request, f"local_{decided}", f"local mode: {decided}")
            remote = await self._route_remote(request, timeout)
            return remote if remote.is_default_route else _noted(remote, f"local_fallback:{decided}")
        return await self._route_remote(request, timeout)

    async def _route_remote(self, request: RoutingRequest, wait_s: float) -> RoutingDecision:
        timeout = wait_s
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
            return self._fallback(request, "send_failed", error_text(exc))
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
        """Wait until everything sent so far (feedback, requests, local-mode decisions) is on the broker."""
        if self._local is not None:
            await self._local.flush()
        if self._producer is not None:
            await self._producer.flush()

    def _require_producer(self) -> Any:
        if self.degraded is not None:
            raise RouterUnavailable(self.degraded)
        if self._producer is None:
            raise RouterUnavailable("the client is not started (use 'async with RouterClient() as client')")
        return self._producer


__all__ = [
    "REPLY_RETENTION_MS",
    "RouteTimeout",
    "RouterClient",
    "RouterUnavailable",
    "ensure_topics",
    "topic_layout",
]
