"""Who consumes a topic: consumer group members and lag, to explain why nothing answered.

A client whose request timed out cannot tell a stopped worker from a slow one; the broker can. The decide
loop commits its ``<prefix>.requests`` offsets in the group ``<app_id>.decide`` (on the partitions faust assigns
the worker, without membership of its own); the workers are the members of the faust group ``<app_id>``: no
members means no worker is running for that prefix, members with lag mean workers that are behind.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from banditroute.kafka.topics import partitions_of

if TYPE_CHECKING:
    from banditroute.settings import Settings


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """A consumer group as the broker sees it: its members and its committed lag on one topic."""

    group: str
    topic: str
    members: int
    lag: int | None
    """Sum over the topic's partitions of end offset - committed offset (or the log start when nothing is
    committed); ``None`` when the topic does not exist."""
    member_group: str | None = None
    """The group whose members were counted, when not ``group`` itself (the workers' faust group)."""


def decide_group(settings: Settings) -> str:
    """The consumer group of the workers' decide loops."""
    return f"{settings.app_id}.decide"


async def group_status(
    settings: Settings, group: str, topic: str, *, timeout_s: float = 5.0, members_of: str | None = None
) -> GroupStatus:
    """Ask the broker about ``group`` on ``topic`` (its members, or those of ``members_of``); raises
    ``TimeoutError`` or a Kafka error on trouble."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import GroupCoordinatorNotAvailableError

    security = settings.aiokafka_security()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **security)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, **security)

    async def ask() -> GroupStatus:
        await admin.start()
        await consumer.start()
        deadline = time.monotonic() + timeout_s
        while True:  # a new broker creates its offsets topic on the first coordinator lookup
            try:
                described = await admin.describe_consumer_groups([members_of or group])
                break
            except GroupCoordinatorNotAvailableError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        members = sum(
            len(g[5]) for response in described for g in response.groups if g[1] == (members_of or group)
        )
        ids = await partitions_of(consumer, topic)
        if not ids:
            return GroupStatus(group, topic, members, None, members_of)
        tps = [TopicPartition(topic, p) for p in sorted(ids)]
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        lag = 0
        for tp in tps:
            meta = committed.get(tp)
            position = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
            lag += max(0, ends[tp] - position)
        return GroupStatus(group, topic, members, lag, members_of)

    try:
        return await asyncio.wait_for(ask(), timeout_s)
    finally:
        await asyncio.gather(admin.close(), consumer.stop(), return_exceptions=True)


def explain_no_answer(settings: Settings, status: GroupStatus | None, waited_s: float) -> str:
    """One sentence on why no decision arrived within ``waited_s``, from the decide group's status."""
    if status is None:
        return f"could not ask the broker at {settings.kafka_bootstrap} who consumes {settings.topic('requests')}"
    if status.lag is None:
        return (
            f"no worker is running for {settings.topic_prefix} (topic {status.topic} does not exist; "
            "start one with 'banditroute worker')"
        )
    if status.members == 0:
        return (
            f"no worker is running for {settings.topic_prefix} (group {status.member_group or status.group} "
            "has no members; "
            "start one with 'banditroute worker')"
        )
    return f"workers are running but did not answer within {waited_s:g} s (lag {status.lag})"


async def diagnose_no_answer(settings: Settings, waited_s: float, *, timeout_s: float = 5.0) -> str:
    """:func:`explain_no_answer` for the decide group, asking the broker (never raises)."""
    try:
        status = await group_status(
            settings,
            decide_group(settings),
            settings.topic("requests"),
            timeout_s=timeout_s,
            members_of=settings.app_id,
        )
    except Exception:
        status = None
    return explain_no_answer(settings, status, waited_s)


__all__ = ["GroupStatus", "decide_group", "diagnose_no_answer", "explain_no_answer", "group_status"]
