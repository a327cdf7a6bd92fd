"""A long-running asyncio loop on a thread and event loop of its own, started and stopped from the caller's loop.

Used by the decide loop (:class:`~banditroute.kafka.decide_service.DecideService`): a decision never waits
behind the faust agents' long coroutine steps in the worker's main loop; Python's GIL switch interval bounds the
wait instead. What the rest of the worker must see is handed back with :meth:`OwnThreadLoop.call_home`.

Handing back costs a wake-up of the caller's loop: ``call_soon_threadsafe`` writes to the loop's self-pipe every
time, and the write wakes the caller's thread, which then takes the GIL from this one. So ``call_home`` keeps a
mailbox: a callback posted while an earlier one still waits for the caller's loop joins it, and the loop runs
them in one go, in order, without another write or wake-up; and :meth:`OwnThreadLoop.call_home_later` posts one
without a wake-up at all, to run with the next one handed back or at :meth:`OwnThreadLoop.post_home`. The decide
loop hands back each step's decisions (for the dashboard) that way, and the steps' handoffs to the join with one
``call_home`` per commit (since commit21: before, twice per step).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Any


class OwnThreadLoop:
    """Subclasses implement :meth:`_run_loop` (it returns once ``self._stopping`` is set)."""

    thread_name = "banditroute-loop"

    def __init__(self, own_thread: bool = True) -> None:
        self.own_thread = own_thread
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop :meth:`_run_loop` runs on
        self._home: asyncio.AbstractEventLoop | None = None  # the caller's loop (callbacks run there)
        self._stop_requested = False
        self._mail: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        """Callbacks for the caller's loop not run yet (:meth:`call_home`), oldest first."""
        self._mail_posted = False
        """Whether a :meth:`_read_mail` is scheduled on the caller's loop that has not started reading yet."""
        self.home_posts = 0
        """Wake-ups of the caller's loop so far (``call_soon_threadsafe`` calls of :meth:`call_home`)."""

    async def _run_loop(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop_requested = True
        loop = self._loop
        if loop is not None and loop is not self._running_loop():
            with contextlib.suppress(RuntimeError):  # that loop is already closed
                loop.call_soon_threadsafe(self._stopping.set)
        else:
            self._stopping.set()

    @staticmethod
    def _running_loop() -> asyncio.AbstractEventLoop | None:
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            return None

    def call_home(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` on the caller's loop (at once when that is this loop), after every callback
        handed back before it. Only this object's own thread hands back (one writer of the mailbox)."""
        home = self._home
        if home is None or home is self._loop:
            callback(*args)
            return
        self._mail.append((callback, args))  # before the flag is read: see _read_mail
        self._post(home)

    def call_home_later(self, callback: Callable[..., Any], *args: Any) -> None:
        """Like :meth:`call_home`, without waking the caller's loop: the callback runs with the next one handed
        back, or at the next :meth:`post_home` (the caller must make one of them come)."""
        home = self._home
        if home is None or home is self._loop:
            callback(*args)
            return
        self._mail.append((callback, args))

    def post_home(self) -> None:
        """Wake the caller's loop for the callbacks handed back with :meth:`call_home_later`, if any wait."""
        home = self._home
        if self._mail and home is not None and home is not self._loop:
            self._post(home)

    def _post(self, home: asyncio.AbstractEventLoop) -> None:
        """Schedule a read of the mailbox on ``home``, unless one scheduled has not started yet (it takes what
        the mailbox holds now too)."""
        if self._mail_posted:
            return
        self._mail_posted = True
        self.home_posts += 1
        try:
            home.call_soon_threadsafe(self._read_mail, home)
        except RuntimeError:  # the caller's loop is closing: nobody left to run them
            self._mail_posted = False
            self._mail.clear()

    def _read_mail(self, home: asyncio.AbstractEventLoop) -> None:
        """On the caller's loop: run every callback in the mailbox, oldest first. The flag is cleared before
        the first is taken, so a callback appended after that schedules a read of its own, and one appended
        before it is taken here; one that raises is reported as the loop reports a failing callback, and the
        others still run."""
        self._mail_posted = False
        mail = self._mail
        while mail:
            callback, args = mail.popleft()
            try:
                callback(*args)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                home.call_exception_handler(
                    {"message": f"Exception in callback {callback!r}", "exception": exc}
                )

    async def run(self) -> None:
        """Run the loop until :meth:`stop`; on its own thread when ``own_thread`` (the default)."""
        home_now = asyncio.get_running_loop()
        if self._home is not None and self._home is not home_now:
            # a read scheduled on an earlier caller's loop runs only there (never, once it is closed): callbacks
            # for it are dropped, as call_soon_threadsafe dropped them, and the mailbox starts afresh
            self._mail.clear()
            self._mail_posted = False
        self._home = home_now
        self._stop_requested = False
        if not self.own_thread:
            self._loop = self._home
            self._stopping = asyncio.Event()
            await self._run_loop()
            return
        home = self._home
        done: asyncio.Future[None] = home.create_future()

        def finish(exc: BaseException | None) -> None:
            if not done.done():
                if exc is None:
                    done.set_result(None)
                else:
                    done.set_exception(exc)

        def target() -> None:
            async def main() -> None:
                self._loop = asyncio.get_running_loop()
                self._stopping = asyncio.Event()
                if self._stop_requested:
                    return
                await self._run_loop()

            error: BaseException | None = None
            try:
                asyncio.run(main())
            except BaseException as exc:  # handed to the caller's loop, which re-raises it
                error = exc
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone: nobody to tell
                home.call_soon_threadsafe(finish, error)

        thread = threading.Thread(target=target, name=self.thread_name, daemon=True)
        thread.start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            self.stop()
            await home.run_in_executor(None, thread.join, 30.0)
            raise
