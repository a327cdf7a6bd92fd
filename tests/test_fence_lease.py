"""The heartbeat lease (``kafka/fence.py``) as pure code: a group member's generation, member id and last
answered heartbeat are three fields, set here by hand (the real broker's heartbeats: tests/kafka/test_fence.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.protocol.group import HeartbeatRequest, SyncGroupRequest
from faust.exceptions import ConsumerNotStarted

from banditroute.app import Router
from banditroute.kafka.fence import ANSWERED, Fenced, Lease, install


class Member:
    """What the lease reads of aiokafka's GroupCoordinator."""

    def __init__(self, generation: int = 3, member_id: str = "m-1") -> None:
        self.generation, self.member_id = generation, member_id

    def answered(self, ago_s: float = 0.0) -> None:
        setattr(self, ANSWERED, (self.generation, self.member_id, time.monotonic() - ago_s))


def lease(member: Any, *, giving_up: bool = False) -> Lease:
    return Lease(lambda: member, 6.0, Counter(), lambda: giving_up)


async def test_a_recent_heartbeat_of_this_generation_lets_a_write_go_at_once() -> None:
    member = Member()
    member.answered(ago_s=2.9)
    held = lease(member)
    await asyncio.wait_for(held.hold(), 0.01)
    assert held.counters == Counter()


async def test_no_group_member_at_all_writes_as_before() -> None:
    await asyncio.wait_for(lease(None).hold(), 0.01)


async def test_a_stale_lease_waits_for_the_next_answered_heartbeat() -> None:
    member = Member()
    member.answered(ago_s=3.1)  # older than half the 6 s session
    held = lease(member)
    task = asyncio.ensure_future(held.hold())
    await asyncio.sleep(0.1)
    assert not task.done()
    member.answered()
    await asyncio.wait_for(task, 1)
    assert held.counters == Counter(lease_waits=1)


async def test_a_stale_lease_fails_once_the_generation_moves_on() -> None:
    member = Member()
    member.answered(ago_s=30)  # stalled past the session
    held = lease(member)
    task = asyncio.ensure_future(held.hold())
    await asyncio.sleep(0.1)
    member.generation, member.member_id = -1, ""  # the coordinator did not know the member: reset
    with pytest.raises(Fenced):
        await asyncio.wait_for(task, 1)
    assert held.counters == Counter(lease_waits=1, lease_fenced=1)


async def test_an_answer_of_an_earlier_generation_confirms_nothing() -> None:
    member = Member(generation=4)
    setattr(member, ANSWERED, (3, member.member_id, time.monotonic()))
    assert not lease(member).valid(member)


@pytest.mark.parametrize(("generation", "giving_up"), [(-1, False), (5, True)])
async def test_an_unconfirmed_write_fails_at_once_when_no_member_or_while_faust_revokes(
    generation: int, giving_up: bool
) -> None:
    member = Member(generation=generation)
    with pytest.raises(Fenced):
        await asyncio.wait_for(lease(member, giving_up=giving_up).hold(), 0.5)


class Coordinator(Member):
    """What the patched ``GroupCoordinator._send_req`` reads: the coordinator's node and a client that answers
    every request with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(generation=5)
        self.coordinator_id = 1

        async def send(_node: int, _request: Any, group: Any = None) -> Any:
            return SimpleNamespace(error_code=code)

        self._client = SimpleNamespace(send=send)


async def test_a_group_sync_answered_with_a_rebalance_confirms_nothing() -> None:
    """A sync answered REBALANCE_IN_PROGRESS (27) gave the member no assignment in its generation (aiokafka
    rejoins); a heartbeat answered so still confirms the member (it stays until the rebalance timeout)."""
    assert install()
    member = Coordinator(27)
    await GroupCoordinator._send_req(member, SyncGroupRequest("g", 5, "m-1", "", []))
    assert ANSWERED not in member.__dict__
    await GroupCoordinator._send_req(member, HeartbeatRequest("g", 5, "m-1"))
    assert member.__dict__[ANSWERED][:2] == (5, "m-1")
    synced = Coordinator(0)
    await GroupCoordinator._send_req(synced, SyncGroupRequest("g", 5, "m-1", "", []))
    assert synced.__dict__[ANSWERED][:2] == (5, "m-1")


async def test_no_answer_within_the_session_timeout_fences_a_write() -> None:
    """The member keeps its generation and id, but no heartbeat is answered (the coordinator unreachable, or this
    worker's heartbeats held up): a write waits at most the session timeout (twice the lease), then fails."""
    member = Member()
    member.answered(ago_s=30)
    held = Lease(
        lambda: member, 0.2, Counter()
    )  # a 0.2 s session: the lease is 0.1 s, the wait at most 0.2 s
    started = time.monotonic()
    with pytest.raises(Fenced):
        await asyncio.wait_for(held.hold(), 5)
    assert time.monotonic() - started >= 0.2
    assert held.counters == Counter(lease_waits=1, lease_fenced=1)


class _NotStarted:
    def _ensure_consumer(self) -> Any:
        raise ConsumerNotStarted("Consumer thread not yet started")


class _Started:
    def __init__(self, coordinator: Any) -> None:
        self.coordinator = coordinator

    def _ensure_consumer(self) -> Any:
        return SimpleNamespace(_coordinator=self.coordinator)


def _faust_coordinator(consumer: Any, counters: Counter[str]) -> Any:
    """``Router._faust_coordinator`` of an app whose faust consumer is ``consumer``."""
    return Router._faust_coordinator(
        SimpleNamespace(app=SimpleNamespace(_consumer=consumer), counters=counters)
    )  # type: ignore[arg-type]


def _coordinator_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the worker logged about faust's coordinator (not another test's thread still ending meanwhile)."""
    return [r for r in caplog.records if "coordinator" in r.getMessage()]


def test_the_lease_finds_fausts_coordinator_and_says_so_when_it_cannot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No consumer made or its thread not started: no lease yet, quietly. A consumer not laid out as checked (a
    faust upgrade): the lease holds nothing, said once as an error and counted. Before, every exception gave
    None without a word."""
    counters: Counter[str] = Counter()
    member = Member()
    assert _faust_coordinator(SimpleNamespace(_thread=_Started(member)), counters) is member
    with caplog.at_level(logging.INFO, logger="banditroute"):
        assert _faust_coordinator(None, counters) is None
        assert _faust_coordinator(SimpleNamespace(_thread=_NotStarted()), counters) is None
        assert counters == Counter() and not _coordinator_lines(caplog)
        for _ in range(2):
            assert _faust_coordinator(SimpleNamespace(_thread=object()), counters) is None
    assert counters == Counter(lease_unavailable=2)
    assert [(r.levelno, "holds nothing" in r.getMessage()) for r in _coordinator_lines(caplog)] == [
        (logging.ERROR, True)
    ]
