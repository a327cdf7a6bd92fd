"""faust's per-record delivery without tasks (kafka/faust_fetch.py) behaves as mode's ``wait_first`` did: the
callback's result, its errors, and an interruption by ``suspend_flow`` while it blocks (pure asyncio, no broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from mode import Service

from banditroute.kafka import faust_fetch


class Fetching(Service):
    """A mode service with a consumer's ``suspend_flow`` and the patched ``wait_first``."""

    wait_first = faust_fetch.wait_first  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = asyncio.Event()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_callback_that_does_not_block_runs_inline_without_tasks() -> None:
    async def main() -> None:
        svc = Fetching()
        delivered: list[int] = []

        async def callback(n: int) -> int:
            delivered.append(n)
            return n * 2

        before = len(asyncio.all_tasks())
        suspended = svc.suspend_flow.wait()
        results = await svc.wait_first(callback(21), suspended)
        assert results.results == [42] and not results.stopped
        assert delivered == [21]
        assert suspended.cr_frame is None  # closed, not left unawaited
        assert len(asyncio.all_tasks()) == before

    run(main())


def test_a_callback_that_blocks_is_finished_in_a_task_in_order() -> None:
    async def main() -> None:
        svc = Fetching()
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        steps: list[str] = []

        async def callback() -> str:
            steps.append("before")
            value = await gate
            steps.append(value)
            await asyncio.sleep(0)
            steps.append("after")
            return "done"

        asyncio.get_running_loop().call_later(0.01, gate.set_result, "released")
        results = await svc.wait_first(callback(), svc.suspend_flow.wait())
        assert results.results == ["done"]
        assert steps == ["before", "released", "after"]

    run(main())


def test_a_blocked_callback_is_cancelled_when_the_flow_is_suspended() -> None:
    async def main() -> None:
        svc = Fetching()
        forever: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        seen: list[str] = []

        async def callback() -> None:
            try:
                await forever
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        asyncio.get_running_loop().call_later(0.01, svc.suspend_flow.set)
        results = await svc.wait_first(callback(), svc.suspend_flow.wait())
        assert results.results == [True]  # the suspend_flow wait won, as with mode's wait_first
        await asyncio.sleep(0)
        assert seen == ["cancelled"]

    run(main())


def test_errors_of_the_callback_propagate_inline_and_after_blocking() -> None:
    async def main() -> None:
        svc = Fetching()

        async def fails_at_once() -> None:
            raise ValueError("bad record")

        suspended = svc.suspend_flow.wait()
        with pytest.raises(ValueError, match="bad record"):
            await svc.wait_first(fails_at_once(), suspended)
        assert suspended.cr_frame is None

        async def fails_later() -> None:
            await asyncio.sleep(0.001)
            raise KeyError("later")

        with pytest.raises(KeyError, match="later"):
            await svc.wait_first(fails_later(), svc.suspend_flow.wait())

    run(main())


def test_other_calls_and_a_suspended_flow_take_mode_s_path() -> None:
    async def main() -> None:
        svc = Fetching()
        ran: list[str] = []

        async def callback() -> str:
            ran.append("callback")
            return "x"

        svc.suspend_flow.set()  # a rebalance is on: no inline run
        coro = callback()
        results = await svc.wait_first(coro, svc.suspend_flow.wait())
        assert len(results.done) == 2 and coro in results.done  # mode's tasks ran both (inline: one)
        assert ran == ["callback"]
        other = asyncio.Event()
        other.set()
        results = await svc.wait_first(other.wait())
        assert results.results == [True]

    run(main())


def test_install_puts_it_on_faust_s_consumer() -> None:
    faust_fetch.install()
    assert Consumer.wait_first is faust_fetch.wait_first
