"""A lease on faust's group membership: the join and the learner write as owners of their partitions only while
the group coordinator has lately answered this worker's heartbeat in the generation it holds.

The join's and the learner's readers read with manual assignment in groups of their own (``partition_reader``),
so nothing on the broker stops a worker that lost its partitions without noticing (stalled past the session
timeout, then continued) from joining, learning and committing as their owner until faust's consumer sees the
revocation. The coordinator removes a member only once it has heard nothing from it for the session timeout
(while the group rebalances, members that keep heartbeating stay until the rebalance timeout), and faust's
(eager) rebalance gives a member's partitions to another only once it is removed or has rejoined. So a
heartbeat sent at ``t`` and answered without error (or with ``REBALANCE_IN_PROGRESS``: still a member) in
generation ``g`` means: while generation ``g`` is this worker's, its partitions are its own until at least
``t + session timeout``. :meth:`Lease.hold` waits, before a write, until such a heartbeat is younger than
``LEASE_FRACTION`` of that, and fails with :class:`Fenced` once the generation has moved on.

This narrows the window but does not close it: a worker stalled for longer than the rest of its lease between
``hold`` and its write reaching the broker still writes as the owner. Only the broker can refuse that (a
transactional producer per input partition); see docs/guarantees.md.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiokafka
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.protocol.group import HeartbeatRequest, SyncGroupRequest

from banditroute.kafka.aiokafka_release import checked

LEASE_FRACTION = 0.5
"""How much of the session timeout after an answered heartbeat was sent the worker writes as owner (faust
heartbeats every quarter of it: two heartbeats may be lost before the lease runs out)."""
HOLD_POLL_S = 0.02
ANSWERED = "_banditroute_answered"
"""The coordinator's attribute where the patched ``_send_req`` keeps (generation, member id, monotonic send time)
of the last heartbeat answered without error or with ``REBALANCE_IN_PROGRESS``, or group sync answered without
error (the first word of a new generation: no write waits for its first heartbeat)."""
STILL_MEMBER = (0, 27)  # NoError, RebalanceInProgress: a heartbeat's answers that confirm the member
SYNCED = (0,)  # a group sync's: one refused (27) gave this member no assignment in its generation


class Fenced(RuntimeError):
    """This worker's group membership is gone or not confirmed: it must not write as its partitions' owner."""


def install(version: str = aiokafka.__version__) -> bool:
    """Record answered heartbeats on every aiokafka group coordinator of the process (see :data:`ANSWERED`);
    False (nothing patched) under a release the patch was not checked against."""
    if getattr(GroupCoordinator, ANSWERED, False):
        return True
    if not checked("kafka/fence.py (the heartbeat lease)", version):
        return False
    send = GroupCoordinator._send_req

    async def send_req(self: Any, request: Any) -> Any:
        if not isinstance(request, HeartbeatRequest | SyncGroupRequest):
            return await send(self, request)
        sent, generation, member = time.monotonic(), request._generation_id, request._member_id
        response = await send(self, request)
        confirming = STILL_MEMBER if isinstance(request, HeartbeatRequest) else SYNCED
        if getattr(response, "error_code", None) in confirming:
            setattr(self, ANSWERED, (generation, member, sent))
        return response

    GroupCoordinator._send_req = send_req
    setattr(GroupCoordinator, ANSWERED, True)
    return True


class Lease:
    """The lease of the group member ``coordinator()`` returns (None: no group, e.g. before faust's consumer
    starts, or an aiokafka release the patch was not checked against: then every write goes ahead, as before)."""

    def __init__(
        self,
        coordinator: Callable[[], Any | None],
        session_timeout_s: float,
        counters: Counter[str],
        giving_up: Callable[[], bool] = lambda: False,
    ) -> None:
        self.coordinator = coordinator
        self.giving_up = giving_up
        """True while faust revokes partitions: an unconfirmed write fails at once rather than hold that up."""
        self.lease_s = session_timeout_s * LEASE_FRACTION
        self.installed = install()
        self.counters = counters
        """``lease_waits``: writes that waited for a heartbeat (a stall, a rebalance); ``lease_fenced``: those
        refused."""

    def valid(self, coordinator: Any) -> bool:
        answered = coordinator.__dict__.get(ANSWERED)
        if answered is None:
            return False
        generation, member, sent = answered
        return bool(
            generation == coordinator.generation
            and member == coordinator.member_id
            and time.monotonic() - sent < self.lease_s
        )

    async def hold(self) -> None:
        """Return once this worker's membership is confirmed (at once in steady state); raise :class:`Fenced`
        if it is no member, its generation changes meanwhile, faust starts revoking (``giving_up``) or nothing
        confirms it within the session timeout."""
        coordinator = self.coordinator() if self.installed else None
        if coordinator is None or self.valid(coordinator):
            return
        self.counters["lease_waits"] += 1
        generation, member = coordinator.generation, coordinator.member_id
        deadline = time.monotonic() + 2 * self.lease_s
        while not self.valid(coordinator):
            if (
                generation < 0  # no member (rejoining): waiting would hold up faust's revocation
                or self.giving_up()
                or coordinator.generation != generation
                or coordinator.member_id != member
                or time.monotonic() > deadline
            ):
                self.counters["lease_fenced"] += 1
                raise Fenced(
                    f"group membership not confirmed (generation {generation}, now {coordinator.generation}): "
                    "this worker's partitions may have moved; nothing of this batch is written"
                )
            await asyncio.sleep(HOLD_POLL_S)
