"""The worker's long-running loops as ``mode`` services, and the faust app that closes the worker's own clients.

A :class:`LoopService` is registered on the faust app (``app.service``): it starts once the tables are
recovered, restarts its loop after a failure (with backoff, counted as ``<name>_restarts``) so the worker never
dies of it, and stops with the app.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import mode

from banditroute.settings import Settings

log = logging.getLogger("banditroute.worker")

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
EXPECTED_MAX_BACKOFF_S = 2.0
"""The longest wait before restarting a loop after an expected failure (``LoopService.expected``): short, since
the loop is needed as soon as the cause passes, yet not a restart (a new consumer) every half second while it
lasts."""
HEALTHY_S = 30.0
"""A loop that ran this long before it failed is restarted after the shortest backoff again: the backoff
grows only over failures that follow each other closely."""


class LoopService(mode.Service):
    """Run ``run()`` until the app stops; ``stop()`` asks the loop to end."""

    def __init__(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        stop: Callable[[], None],
        counters: Counter[str],
        expected: tuple[type[Exception], ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.loop_name = name
        self.expected = expected
        """Failures that are part of the worker's operation (``Fenced``: its partitions may have moved while it
        stalled): logged at warning with their reason, no traceback, and counted as ``<name>_<error>`` too."""
        self._run = run
        self._stop = stop
        self.counters = counters
        self.clock: Callable[[], float] = time.monotonic
        self.restart_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    @property
    def shortlabel(self) -> str:
        return self.loop_name

    async def on_start(self) -> None:
        self.add_future(self._supervise())

    async def on_stop(self) -> None:
        self._stop()

    async def _supervise(self) -> None:
        next_backoff = next_expected = FIRST_BACKOFF_S
        try:
            while True:
                started = self.clock()
                try:
                    await self._run()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if isinstance(exc, self.expected):
                        # not a fault of the loop (Fenced: its worker rejoins the group after a stall): a backoff
                        # of its own, at most EXPECTED_MAX_BACKOFF_S; the common one (up to MAX_BACKOFF_S) held the
                        # reader's restart, and the join's resync waiting for it (the decide loop without
                        # partitions), for up to 10 s after the group had taken the worker back
                        backoff = restart_backoff(next_expected, self.clock() - started)
                        next_expected = min(backoff * 2, EXPECTED_MAX_BACKOFF_S)
                        counter = f"{self.loop_name}_{type(exc).__name__.lower()}"
                        self.counters[counter] += 1
                        log.warning(
                            "%s loop failed (%s: %s; %s %d so far); restarting in %.1f s",
                            self.loop_name,
                            type(exc).__name__,
                            exc,
                            counter,
                            self.counters[counter],
                            backoff,
                        )
                    else:
                        backoff = restart_backoff(next_backoff, self.clock() - started)
                        next_backoff = min(backoff * 2, MAX_BACKOFF_S)
                        log.exception("%s loop failed; restarting in %.1f s", self.loop_name, backoff)
                    self.counters[f"{self.loop_name}_restarts"] += 1
                    await self.restart_sleep(backoff)
        finally:
            self._stop()


def restart_backoff(planned_s: float, ran_s: float, first_s: float = FIRST_BACKOFF_S) -> float:
    """How long to wait before restarting a loop that failed after running ``ran_s``: ``planned_s`` (doubled
    after each failure, up to ``MAX_BACKOFF_S``) unless it had run ``HEALTHY_S`` (then ``first_s`` again: one
    failure an hour must not cost every later failure the longest wait)."""
    return first_s if ran_s >= HEALTHY_S else planned_s


class WorkerApp(faust.App):
    """faust's app, closing the worker's own Kafka clients (outboxes, gap reader) after everything that uses
    them (agents, services, timers) has stopped, and naming the topics its consumer must not fetch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closers: list[Callable[[], Awaitable[None]]] = []
        self.held_topics: frozenset[str] = frozenset()
        """Topics faust subscribes to (its assignment of them counts) but never delivers (kafka/faust_hold.py)."""

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        for close in self.closers:
            try:
                await close()
            except Exception:  # one client failing to close must not keep the others open
                log.exception("closing a Kafka client failed")


def web_port(s: Settings) -> int:
    """``BANDITROUTE_WEB_PORT``, or for 0 a port that is free now on the web host: faust accepts 1-65535 only,
    so the worker picks one itself and logs it."""
    if s.web_port or not s.web_enabled:
        return s.web_port or 6066  # faust's default; unused with the web server off
    family = socket.getaddrinfo(s.web_host, 0, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((s.web_host, 0))
        port: int = sock.getsockname()[1]
    log.info("web server on %s port %d (BANDITROUTE_WEB_PORT=0: a free port)", s.web_host, port)
    return port


def make_app(s: Settings) -> WorkerApp:
    """The worker's faust app, configured from settings (credentials, tuning, raw bytes everywhere)."""
    credentials: Any = None
    password = s.kafka_sasl_password.get_secret_value() if s.kafka_sasl_password else None
    ssl_context = s.aiokafka_security().get("ssl_context")
    if s.kafka_security_protocol.startswith("SASL"):
        credentials = faust.SASLCredentials(
            username=s.kafka_sasl_username,
            password=password,
            mechanism=s.kafka_sasl_mechanism or "SCRAM-SHA-256",
            ssl_context=ssl_context,  # type: ignore[arg-type]  # an SSLContext or None, typed loosely upstream
        )
    elif s.kafka_security_protocol == "SSL":
        credentials = faust.SSLCredentials(ssl_context)  # type: ignore[arg-type]  # see above
    return WorkerApp(
        s.app_id,
        broker=s.broker_url,
        broker_credentials=credentials,
        store="memory://",
        datadir=str(s.data_dir),
        web_enabled=s.web_enabled,
        web_bind=s.web_host,
        web_port=web_port(s),
        web_host=s.web_host,
        topic_partitions=s.partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=True,  # on a rebalance, finish in-flight batches before partitions move
        broker_commit_interval=0.5,
        producer_linger_ms=1,
        table_standby_replicas=0,
        broker_session_timeout=s.session_timeout_s,
        broker_max_poll_records=5000,
        consumer_max_fetch_size=16 * 1024 * 1024,
        stream_buffer_maxsize=20_000,
        broker_heartbeat_interval=max(1.0, s.session_timeout_s / 4),
        autodiscover=False,
        key_serializer="json",
        value_serializer="raw",
    )


__all__ = ["LoopService", "WorkerApp", "make_app"]
