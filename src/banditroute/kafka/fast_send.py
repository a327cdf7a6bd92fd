"""Write a Kafka request to the socket without first copying it whole twice (aiokafka's ``AIOKafkaConnection.send``).

aiokafka 0.14 sends a request as ``size + (header.encode() + request.encode())``: two concatenations, each a new
``bytes`` as long as the request. A produce request of the decide loop carries every record batch of a step
(hundreds of KB), so each of those copies is a fresh block above the worker's mmap threshold (``memory.py``):
mapped, zero-filled page by page on first touch, copied into and unmapped again (a TLB shootdown on the other
core). With :mod:`~banditroute.kafka.fast_produce`'s join that was three whole copies per produce request;
``perf record -e cpu-clock --call-graph dwarf`` of a worker drain (e2e19) put ``bytes_concat`` at 6 % of the
decide thread's CPU, most of it page faults, and page faults at ~10 % in all.

:func:`install` replaces ``AIOKafkaConnection.send`` with the same steps (the same checks, correlation id, header,
error handling, log line, response future) that write the same bytes in order: the size, the header and the
request's small parts joined into one ``bytes``, and each large part (a record batch of ``LARGE`` bytes or
more, :func:`~banditroute.kafka.fast_produce.produce_parts`) handed to the transport as a ``memoryview`` of the
batch itself: sent from there, and only what the socket does not take at once is copied (into the transport's
buffer, as before). Other requests are written as one ``bytes`` (one copy instead of two). The response is
awaited with one timer on the connection's loop (:func:`response`) instead of aiokafka's ``async_timeout``. Only under the
aiokafka release it was checked against (:mod:`~banditroute.kafka.aiokafka_release`), and only on Python 3.11:
its selector transport copies what a send does not take at once, while from 3.12 on it keeps the view until
written, which holds the batch's buffer exported meanwhile (safe while nothing touches a built batch, but not
checked there).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import sys
from collections.abc import Iterable
from typing import Any

import aiokafka
import aiokafka.errors as errors
from aiokafka import conn

from banditroute.kafka.aiokafka_release import checked
from banditroute.kafka.fast_produce import encode_produce, produce_parts

log = logging.getLogger("banditroute.kafka")

CHECKED_PYTHON = (3, 11)
"""The Python (major, minor) whose asyncio transport the views were checked against."""
LARGE = 16 * 1024
"""A request part at least this long is written as itself (a view), not joined with its neighbours."""
_SIZE = struct.Struct(">i").pack
_THEIRS = conn.AIOKafkaConnection.send


def chunks(head: bytes, parts: Iterable[Any]) -> list[Any]:
    """What to write for a request whose encoding is ``head`` then ``parts`` in order: the 4-byte size, then runs
    of small parts joined into one ``bytes`` each, and every part of ``LARGE`` bytes or more as a ``memoryview``
    of itself. Their concatenation is aiokafka's ``size + head + b"".join(parts)``."""
    parts = list(parts)
    total = len(head) + sum(map(len, parts))
    out: list[Any] = []
    run: list[Any] = [_SIZE(total), head]
    for part in parts:
        if len(part) >= LARGE:
            out.append(b"".join(run))
            out.append(memoryview(part))
            run = []
        else:
            run.append(part)
    if run:
        out.append(b"".join(run))
    return out


def _send(self: Any, request: Any, expect_response: bool = True) -> Any:
    """``AIOKafkaConnection.send`` writing :func:`chunks` (aiokafka 0.14's steps otherwise)."""
    if self._writer is None:
        raise errors.KafkaConnectionError(f"No connection to broker at {self._host}:{self._port}")

    request_struct = request.prepare(self._versions)

    correlation_id = self._next_correlation_id()
    header = request_struct.build_request_header(correlation_id=correlation_id, client_id=self._client_id)
    if type(request_struct).encode is encode_produce:
        parts = produce_parts(request_struct)
    else:
        parts = [request_struct.encode()]
    try:
        write = self._writer.write
        for chunk in chunks(header.encode(), parts):
            write(chunk)
    except OSError as err:
        self.close(reason=conn.CloseReason.CONNECTION_BROKEN)
        raise errors.KafkaConnectionError(f"Connection at {self._host}:{self._port} broken: {err}") from err

    conn.log.debug(
        "Request to %s:%d %d: %s",
        self._host,
        self._port,
        correlation_id,
        request_struct,
    )

    if not expect_response:
        return self._writer.drain()
    fut = self._loop.create_future()
    self._requests.append(
        (correlation_id, request_struct, fut),
    )
    return response(self._loop, fut, self._request_timeout)


async def response(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], timeout_s: float | None) -> Any:
    """aiokafka's ``wait_for(fut, timeout)`` for a request's response future: its result, or
    ``asyncio.TimeoutError`` once ``timeout_s`` seconds pass first (``fut`` is then cancelled, as the task awaiting
    it was under aiokafka's ``async_timeout``); a cancellation of the caller propagates as before.

    aiokafka's ``async_timeout`` looks up the running loop three times per request (``current_task``, ``timeout``,
    ``reschedule``), and on Python 3.11 each look calls ``getpid()``, a system call (asyncio checks for a fork):
    py-spy ``--native`` of the decide thread at 2,000 requests/s put 45 of 719 samples there (commit21). The
    connection's own loop is at hand, so this arms one timer on it (and looks the task up on it: no system call).

    A cancellation of the caller in the same turn as the timer (the future cancelled, the task not resumed yet)
    wins over the timeout, as under ``asyncio.Timeout``: the task's count of cancellations tells them apart
    (review22; a timeout instead swallowed it, and ``AIOKafkaClient.send`` makes a timeout a retriable error)."""
    if timeout_s is None:
        return await fut
    task = asyncio.current_task(loop)
    cancelling = task.cancelling() if task is not None else 0
    expired = False

    def expire() -> None:
        nonlocal expired
        if not fut.done():
            expired = True
            fut.cancel()

    timer = loop.call_later(timeout_s, expire)
    try:
        return await fut
    except asyncio.CancelledError:
        if expired and (task is None or task.cancelling() == cancelling):
            raise TimeoutError from None  # asyncio.TimeoutError on 3.11
        raise
    finally:
        timer.cancel()


def install(
    aiokafka_version: str = aiokafka.__version__, python: tuple[int, int] = sys.version_info[:2]
) -> bool:
    """Send every connection's requests with :func:`_send` (idempotent); False, leaving aiokafka's own, under a
    release other than the checked one or another Python than :data:`CHECKED_PYTHON`."""
    if not checked("kafka/fast_send.py (requests written without whole copies)", aiokafka_version):
        return False
    if tuple(python) != CHECKED_PYTHON:
        log.warning(
            "Python %d.%d, not %d.%d: kafka/fast_send.py keeps aiokafka's own send (its transport's handling of"
            " views is checked on %d.%d only)",
            *python,
            *CHECKED_PYTHON,
            *CHECKED_PYTHON,
        )
        return False
    conn.AIOKafkaConnection.send = _send
    return True


def installed() -> bool:
    return conn.AIOKafkaConnection.send is _send


__all__ = ["CHECKED_PYTHON", "LARGE", "chunks", "install", "installed", "response"]
