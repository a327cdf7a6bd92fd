"""Structured JSON logs, one object per line, with secrets redacted."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_SECRET_KEYS = re.compile(r"pass(word)?|secret|token|sasl_plain|credential|jaas", re.IGNORECASE)
_SECRET_VALUES = re.compile(r"(password\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)", re.IGNORECASE)


def redact(text: str) -> str:
    """Mask ``password=...`` style values in free text."""
    return _SECRET_VALUES.sub(r"\1***", text)


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line: time, level, logger, message, then any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_"):
                continue
            entry[key] = "***" if _SECRET_KEYS.search(key) else value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


RETRIED_OFFSET_ERRORS = frozenset(
    {"NotLeaderForPartitionError", "UnknownTopicOrPartitionError", "LeaderNotAvailableError"}
)
"""Errors aiokafka's fetcher logs at ERROR when it looks up a partition's offsets, then retries by itself: a topic
created a moment ago (the demo, a fresh worker) has no leader ready yet."""
RETRIED_COORDINATOR_ERRORS = frozenset(
    {"GroupCoordinatorNotAvailableError", "NotCoordinatorForGroupError", "GroupLoadInProgressError"}
)
"""Errors aiokafka's group coordinator logs at ERROR when it looks up a group's coordinator, then retries by
itself: on a broker started a moment ago the first group waits for ``__consumer_offsets`` to be made."""


@dataclass(frozen=True)
class RetriedLog:
    """An aiokafka ERROR record for an error aiokafka then retries by itself: its format string, the index of
    the error in its arguments, the errors retried, and the WARNING's format (the seconds, then its
    arguments) once one has lasted."""

    msg: str
    arity: int
    error_at: int
    errors: frozenset[str]
    lasting: str


OFFSET_LOOKUPS = RetriedLog(
    "Failed fetch offsets from %s: %s",
    2,
    1,
    RETRIED_OFFSET_ERRORS,
    "offset lookups still fail after %.0f s of retries (node %s): %s",
)
COORDINATOR_LOOKUPS = RetriedLog(
    "Group Coordinator Request failed: %s",
    1,
    0,
    RETRIED_COORDINATOR_ERRORS,
    "the group coordinator lookup still fails after %.0f s of retries: %s",
)

LASTING_S = 60.0
"""A retried error that keeps coming for this long is no longer a topic being made: it is logged."""
LASTING_KEPT = 1000
"""Distinct errors (each names its partition) whose first occurrence :class:`RetriedKafkaErrors` remembers."""


class RetriedKafkaErrors(logging.Filter):
    """Log aiokafka's retried offset lookups (``RETRIED_OFFSET_ERRORS``; with ``kind``, another
    :class:`RetriedLog`) at DEBUG instead of ERROR: the first run of ``banditroute demo`` printed two such lines
    that meant nothing to fix. One that lasts (the same error text, for the same partition, again and again for
    ``lasting_s``, no gap as long) is logged once at WARNING, then again at DEBUG until it stops. Any other error
    passes."""

    def __init__(
        self,
        lasting_s: float = LASTING_S,
        clock: Callable[[], float] = time.monotonic,
        kind: RetriedLog = OFFSET_LOOKUPS,
    ) -> None:
        super().__init__()
        self.lasting_s = lasting_s
        self.clock = clock
        self.kind = kind
        self._seen: dict[str, tuple[float, float, bool]] = {}
        """Error text -> (first, last occurrence of this run of it, logged at WARNING)."""
        self._lock = threading.Lock()
        """aiokafka logs from every thread with a client (the decide loop has its own): filters run there."""

    def filter(self, record: logging.LogRecord) -> bool:
        args, kind = record.args, self.kind
        if not (
            record.msg == kind.msg
            and isinstance(args, tuple)
            and len(args) == kind.arity
            and type(args[kind.error_at]).__name__ in kind.errors
        ):
            return True
        text, now = str(args[kind.error_at]), self.clock()
        with self._lock:
            first, last, told = self._seen.pop(text, (now, now, False))
            if now - last > self.lasting_s:  # it had stopped: a new run
                first, told = now, False
            tell = not told and now - first >= self.lasting_s
            self._seen[text] = (
                first,
                now,
                told or tell,
            )  # the newest last: the oldest go first past the bound
            if len(self._seen) > LASTING_KEPT:
                del self._seen[next(iter(self._seen))]
        if tell:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = kind.lasting
            record.args = (now - first, *args)
            return True
        return _as_debug(record)


class RetriedCoordinatorLookups(RetriedKafkaErrors):
    """:class:`RetriedKafkaErrors` for aiokafka's retried group coordinator lookups (:data:`COORDINATOR_LOOKUPS`):
    a worker started right after its broker logged one such ERROR line, which meant nothing to fix."""

    def __init__(self, lasting_s: float = LASTING_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(lasting_s, clock, COORDINATOR_LOOKUPS)


def _as_debug(record: logging.LogRecord) -> bool:
    """A filter's answer for a record it lowers to DEBUG: passed only where its logger shows DEBUG."""
    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _install_once(name: str, kind: type[logging.Filter]) -> None:
    """Add a ``kind()`` filter to the logger ``name`` unless it has one."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, kind) for f in logger.filters):
        logger.addFilter(kind())


def quiet_retried_kafka_errors() -> None:
    """Install ``RetriedKafkaErrors`` on aiokafka's fetcher logger and ``RetriedCoordinatorLookups`` on its group
    coordinator's (once each)."""
    _install_once("aiokafka.consumer.fetcher", RetriedKafkaErrors)
    _install_once("aiokafka.consumer.group_coordinator", RetriedCoordinatorLookups)


CLIENT_REPLY_TOPIC = re.compile(r".+\.replies\.[0-9a-f]{32}")
"""A remote client's own reply topic, ``<prefix>.replies.<client-uuid>`` (:class:`~banditroute.RouterClient`)."""


class DeletedReplyTopics(logging.Filter):
    """Log aiokafka's "Topic %s not found in cluster metadata" at DEBUG instead of ERROR for a remote client's own
    reply topic (:data:`CLIENT_REPLY_TOPIC`). A client deletes it when it closes, and the worker's producer asks
    for it at each metadata refresh until it drops the name (``kafka/replies.py``: after ``IDLE_S`` without a
    reply), so every ``banditroute route`` used to leave error lines in the worker's log for two minutes that
    meant nothing to fix. Any other topic passes, a reply topic the user named too."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not (
            record.msg == "Topic %s not found in cluster metadata"
            and isinstance(args, tuple)
            and len(args) == 1
            and CLIENT_REPLY_TOPIC.fullmatch(str(args[0]))
        ):
            return True
        return _as_debug(record)


def quiet_deleted_reply_topics() -> None:
    """Install :class:`DeletedReplyTopics` on aiokafka's cluster metadata logger (once)."""
    _install_once("aiokafka.cluster", DeletedReplyTopics)


REPEAT_EVERY_S = 10.0
"""At most one record of the same text per logger passes in this long (:class:`RepeatLimit`)."""
REPEAT_KEPT = 1000
"""Distinct texts :class:`RepeatLimit` remembers (the oldest forgotten first)."""
AIOKAFKA_LOGGERS = (
    "aiokafka",
    "aiokafka.admin.client",
    "aiokafka.client",
    "aiokafka.cluster",
    "aiokafka.conn",
    "aiokafka.consumer.consumer",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.consumer.subscription_state",
    "aiokafka.producer.producer",
    "aiokafka.producer.sender",
)
"""The loggers of aiokafka's modules that log warnings and errors in a loop (e.g. "Topic %s not found in cluster
metadata", about a thousand times a second while a consumer waits for a topic that does not exist)."""


class RepeatLimit(logging.Filter):
    """Let the same warning or error (same logger, same text) through at most once per ``every_s``; the next one
    that passes says how many were held back since the last. Records below WARNING pass untouched. Memory is
    bounded: ``kept`` texts at most, the oldest forgotten first."""

    def __init__(
        self,
        every_s: float = REPEAT_EVERY_S,
        kept: int = REPEAT_KEPT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.every_s = every_s
        self.kept = kept
        self.clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}
        """(logger, text) -> (when one last passed, how many were held back since)."""
        self._lock = threading.Lock()
        """aiokafka logs from every thread with a client (the decide loop has its own): filters run there."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key, now = (record.name, record.getMessage()), self.clock()
        with self._lock:
            passed, held = self._seen.pop(key, (now - self.every_s, 0))
            if now - passed < self.every_s:
                self._seen[key] = (passed, held + 1)
                return False
            self._seen[key] = (now, 0)  # the newest last: the oldest go first past the bound
            if len(self._seen) > self.kept:
                del self._seen[next(iter(self._seen))]
        if held:
            record.msg = "%s (and %d more like it in the last %.0f s)"
            record.args = (key[1], held, now - passed)
        return True


def limit_repeated_kafka_logs() -> None:
    """Install :class:`RepeatLimit` on aiokafka's loggers (once each)."""
    for name in AIOKAFKA_LOGGERS:
        _install_once(name, RepeatLimit)


def json_handler(level: int = logging.INFO) -> logging.Handler:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler.setLevel(level)
    return handler


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` that sends every logger to stderr as JSON lines."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level, "handlers": ["stderr"]},
    }


def quiet_kafka_logs() -> None:
    """The ``banditroute`` command's filters on aiokafka's loggers: retried offset lookups and clients' deleted
    reply topics at DEBUG, repeated warnings and errors held back (each installed once)."""
    quiet_retried_kafka_errors()
    quiet_deleted_reply_topics()
    limit_repeated_kafka_logs()
