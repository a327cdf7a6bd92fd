"""Hand each record faust fetches to its streams without four new tasks per record.

faust 0.15's fetcher delivers every record with ``await self.wait_first(callback(message),
self.suspend_flow.wait())`` (``Consumer._drain_messages``), so that a rebalance (``suspend_flow``), a stop or a
crash can interrupt a delivery that blocks. mode's ``wait_first`` wraps the callback and three event waits in
tasks and runs ``asyncio.wait`` over them, for every record: py-spy put 18 % of the worker's event-loop thread
there while it joined feedback and learnt outcomes.

The callback (faust's conductor: decode the record, put the event on its streams' queues) almost never blocks.
:func:`install` gives faust's consumer a ``wait_first`` that, for exactly that call and while none of the three
events is set, first runs the callback inline up to its first suspension. If it finishes there, the result is
what ``wait_first`` would have returned: the callback's task would have run first and finished in its first
step, before any of the waits could see an event that was not set (and the callback sets none of them). If it
suspends (a full stream queue, a full producer buffer, flow control), the rest of it is handed to the original
``wait_first`` in a task, so a rebalance, a stop or a crash interrupts it exactly as before. Every other call
goes to the original.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport.consumer import Consumer
from mode import Service
from mode.services import WaitResults

_ORIGINAL = Service.wait_first


class _Rest:
    """Awaitable: the rest of a coroutine that was run up to its first suspension (on ``blocked_on``)."""

    __slots__ = ("blocked_on", "coro")

    def __init__(self, coro: Coroutine[Any, Any, Any], blocked_on: Any) -> None:
        self.coro = coro
        self.blocked_on = blocked_on

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.blocked_on
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation or an error thrown in by the task: pass it on
                try:
                    pending = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as done:
                    return done.value


async def _finish(rest: _Rest) -> Any:
    return await rest


def _waits_on(coro: object, event: object) -> bool:
    """True if ``coro`` is an unstarted ``event.wait()``."""
    frame = getattr(coro, "cr_frame", None)
    code = getattr(coro, "cr_code", None)
    return (
        frame is not None
        and code is not None
        and code.co_name == "wait"
        and frame.f_locals.get("self") is event
    )


async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> WaitResults:  # noqa: ASYNC109 - mode's signature
    """mode's ``Service.wait_first``, with the inline path described in the module docstring."""
    if (
        len(coros) == 2
        and timeout is None
        and isinstance(coros[0], Coroutine)
        and getattr(coros[0], "cr_frame", None) is not None
        and not (self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set())
        and _waits_on(coros[1], self.suspend_flow)
    ):
        callback, suspended = coros
        try:
            blocked_on = callback.send(None)
        except StopIteration as done:
            suspended.close()
            return WaitResults([callback], [done.value], False)
        except BaseException:
            suspended.close()
            raise
        return await _ORIGINAL(self, _finish(_Rest(callback, blocked_on)), suspended)
    return await _ORIGINAL(self, *coros, timeout=timeout)


def install() -> None:
    """Give faust's consumer (every transport's) the inline path; idempotent."""
    Consumer.wait_first = wait_first  # type: ignore[method-assign]
