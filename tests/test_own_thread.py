"""kafka/own_thread.py's ``call_home``: callbacks handed back from the loop's own thread run on the caller's loop in
the order they were handed, one that raises is reported and does not stop the others, and callbacks handed back
while an earlier one still waits for the caller's loop share its wake-up (no ``call_soon_threadsafe`` each)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from banditroute.kafka.own_thread import OwnThreadLoop


class _Handing(OwnThreadLoop):
    """Hands back what ``plan`` says from its own thread, then stops."""

    def __init__(self, plan: Callable[[OwnThreadLoop], None]) -> None:
        super().__init__(own_thread=True)
        self.plan = plan
        self.thread_ids: set[int] = set()

    async def _run_loop(self) -> None:
        self.thread_ids.add(threading.get_ident())
        self.plan(self)


def _run_home(service: _Handing) -> tuple[int, list[dict[str, Any]], int]:
    """Run ``service`` from a caller's loop whose ``call_soon_threadsafe`` is counted; returns the count, the
    contexts the loop's exception handler got and the caller's thread id."""
    posts = 0
    reported: list[dict[str, Any]] = []

    async def main() -> None:
        nonlocal posts
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        plain = loop.call_soon_threadsafe

        def counted(callback: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal posts
            posts += 1
            return plain(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        await service.run()
        for _ in range(20):  # callbacks handed back just before the loop stopped
            await asyncio.sleep(0.01)

    caller = threading.get_ident()
    asyncio.run(main())
    return posts, reported, caller


def test_in_order_on_the_callers_loop_and_one_wake_up_while_the_caller_is_busy() -> None:
    ran: list[tuple[int, int]] = []
    released = threading.Event()

    def blocking() -> None:  # the caller's loop is busy until every later callback is handed back
        assert released.wait(10.0)

    def plan(loop: OwnThreadLoop) -> None:
        loop.call_home(blocking)
        for i in range(100):
            loop.call_home(lambda i=i: ran.append((i, threading.get_ident())))
        released.set()

    service = _Handing(plan)
    posts, reported, caller = _run_home(service)
    assert [i for i, _ in ran] == list(range(100))
    assert {tid for _, tid in ran} == {caller}
    assert caller not in service.thread_ids
    assert not reported
    # the blocking callback's wake-up, one for the first callback after it (its read had started), then the
    # finishing call of run(): not one per callback (101 before)
    assert posts <= 4


def test_a_failing_callback_is_reported_and_the_others_run() -> None:
    ran: list[int] = []
    released = threading.Event()

    def blocking() -> None:
        assert released.wait(10.0)

    def fail() -> None:
        raise ValueError("boom")

    def plan(loop: OwnThreadLoop) -> None:
        loop.call_home(blocking)
        loop.call_home(ran.append, 1)
        loop.call_home(fail)
        loop.call_home(ran.append, 2)
        released.set()

    _posts, reported, _caller = _run_home(_Handing(plan))
    assert ran == [1, 2]
    assert len(reported) == 1
    assert isinstance(reported[0]["exception"], ValueError)


def test_handed_back_after_a_read_started_gets_a_read_of_its_own() -> None:
    ran: list[str] = []
    inside = threading.Event()
    go_on = threading.Event()

    def first() -> None:  # runs on the caller's loop while the own thread hands back the second
        ran.append("first")
        inside.set()
        assert go_on.wait(10.0)

    def plan(loop: OwnThreadLoop) -> None:
        loop.call_home(first)
        assert inside.wait(10.0)
        loop.call_home(ran.append, "second")  # the first read has started: this one must not be lost
        go_on.set()

    _run_home(_Handing(plan))
    assert ran == ["first", "second"]


def test_a_new_callers_loop_gets_its_own_reads() -> None:
    ran: list[int] = []
    service = _Handing(lambda loop: loop.call_home(ran.append, 1))
    # as if the earlier caller's loop had closed with a read scheduled: that read never runs
    service._home = asyncio.new_event_loop()
    service._home.close()
    service._mail_posted = True
    service._mail.append((ran.append, 0))
    _run_home(service)
    assert ran == [1]


def test_handed_back_later_waits_for_the_next_wake_up_and_keeps_its_order() -> None:
    ran: list[int] = []
    counts: dict[str, int] = {}

    def plan(loop: OwnThreadLoop) -> None:
        for i in range(50):
            loop.call_home_later(ran.append, i)
        counts["after_later"] = loop.home_posts
        loop.call_home(ran.append, 50)  # takes the 50 handed back before it, in order
        counts["after_call"] = loop.home_posts

    posts, reported, _caller = _run_home(_Handing(plan))
    assert ran == list(range(51))
    assert counts == {"after_later": 0, "after_call": 1}
    assert not reported
    assert posts <= 2  # the one read, then run()'s finishing call (50 before: one each)


def test_post_home_delivers_what_was_handed_back_later() -> None:
    ran: list[int] = []
    counts: dict[str, int] = {}

    def plan(loop: OwnThreadLoop) -> None:
        loop.post_home()  # nothing waits: no wake-up
        counts["empty"] = loop.home_posts
        loop.call_home_later(ran.append, 1)
        loop.call_home_later(ran.append, 2)
        loop.post_home()
        loop.post_home()  # the read scheduled has not started: no second one
        counts["posted"] = loop.home_posts

    _run_home(_Handing(plan))
    assert ran == [1, 2]
    assert counts == {"empty": 0, "posted": 1}


def test_handed_back_later_on_the_callers_own_loop_runs_at_once() -> None:
    ran: list[int] = []

    class _Here(_Handing):
        async def _run_loop(self) -> None:
            self.call_home_later(ran.append, 1)
            ran.append(2)

    service = _Here(lambda _loop: None)
    service.own_thread = False
    asyncio.run(service.run())
    assert ran == [1, 2]
