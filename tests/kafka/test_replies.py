"""Replies to the topics requests name (kafka/replies.py), on the real broker: made-up and deleted reply
topics are neither waited for nor kept in the producer's metadata set."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from banditroute.kafka.admin import (
    admin_client,
    delete_topics_with_prefix,
    ensure_topics,
    message_bytes_of,
    new_topic,
)
from banditroute.kafka.client_io import create_client_topics
from banditroute.kafka.decide_service import PRODUCER_TUNING
from banditroute.kafka.record_batch import MAX_BATCH_BYTES
from banditroute.kafka.replies import ReplySender, own_topics_refused
from banditroute.settings import Settings
from tests.kafka.helpers import consume, create_topics, producer, wait_for


async def test_made_up_reply_topics_are_skipped_without_being_tracked(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    real = f"{unique_prefix}.replies.real"
    await create_topics(kafka_bootstrap, [real])
    async with producer(kafka_bootstrap) as prod:
        replies = ReplySender(prod, min_refresh_s=0.05)
        tracked_before = replies.tracked
        for i in range(500):  # a sender naming a new reply topic in every request
            await replies.send(f"{unique_prefix}.replies.ghost-{i}", b"k", b"v")
        await replies.send(real, b"key-1", b"decision-1")
        assert await wait_for(lambda: replies.stats["sent"] == 1 and replies.stats["skipped"] == 500, 20)
        # one lookup for many names, none of them registered with the producer: only the real topic is
        assert replies.stats["lookups"] <= 5, replies.stats
        assert replies.tracked <= tracked_before + 1
        # a name seen missing is not looked up again within recheck_s
        lookups = replies.stats["lookups"]
        await replies.send(f"{unique_prefix}.replies.ghost-7", b"k", b"v")
        await asyncio.sleep(0.2)
        assert replies.stats["lookups"] == lookups and replies.stats["skipped"] == 501
        # known topics are sent to at once, in order
        for i in range(2, 5):
            await replies.send(real, f"key-{i}".encode(), f"decision-{i}".encode())
        await prod.flush()
        got = await consume(kafka_bootstrap, real, count=4, timeout_s=20)
        assert [r.value for r in got] == [f"decision-{i}".encode() for i in (1, 2, 3, 4)]
        await replies.close()


async def test_idle_reply_topics_leave_the_producers_metadata_set(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    names = [f"{unique_prefix}.replies.client-{i}" for i in range(5)]
    await create_topics(kafka_bootstrap, [*names, f"{unique_prefix}.decisions"])
    async with producer(kafka_bootstrap) as prod:
        await prod.partitions_for(f"{unique_prefix}.decisions")  # the worker's own topics stay tracked
        replies = ReplySender(prod, idle_s=0.5)
        base = replies.tracked
        for name in names:
            await replies.send(name, b"k", b"v")
        assert await wait_for(lambda: replies.stats["sent"] == 5, 20)
        assert replies.tracked == base + 5
        # the clients close and delete their topics; after idle_s the worker stops asking about them
        await delete_topics_with_prefix(kafka_bootstrap, None, f"{unique_prefix}.replies")
        await asyncio.sleep(0.6)
        assert replies.prune() == 5
        assert replies.tracked == base == 1
        # a reply to a deleted topic is skipped after one lookup, without a wait for the producer's timeout
        await replies.send(names[0], b"k", b"v")
        assert await wait_for(lambda: replies.stats["skipped"] == 1, 10)
        await replies.close()


async def test_a_known_reply_topic_deleted_later_is_skipped_without_the_producers_wait(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    own, reply = f"{unique_prefix}.decisions", f"{unique_prefix}.replies.gone"
    await create_topics(kafka_bootstrap, [own, reply])
    async with producer(
        kafka_bootstrap
    ) as prod:  # request timeout 40 s: the wait the decide loop must not pay
        await prod.partitions_for(own)
        replies = ReplySender(prod, idle_s=0.5)
        await replies.send(reply, b"k", b"v")
        assert await wait_for(lambda: replies.stats["sent"] == 1, 20)
        await delete_topics_with_prefix(kafka_bootstrap, None, f"{unique_prefix}.replies")
        await prod.client.force_metadata_update()  # any refresh (a new client's topic) drops the deleted one
        # the send returns at once (a hang guard far below the producer's 40 s) and the reply is counted skipped
        await asyncio.wait_for(replies.send(reply, b"k", b"v"), 10)
        assert await wait_for(lambda: replies.stats["skipped"] == 1, 10)
        assert replies.tracked == 1
        # a reply_to naming one of the worker's own topics never takes that topic out of the metadata set
        await replies.send(own, b"k", b"v")
        assert await wait_for(lambda: replies.stats["sent"] == 2, 20)
        await asyncio.sleep(0.6)
        replies.prune()
        assert replies.tracked == 1 and prod.client.cluster.partitions_for_topic(own)
        await replies.close()


async def test_a_reply_to_naming_the_routers_own_topics_is_refused(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    state, changelog, reply = (
        f"{unique_prefix}.state",
        f"{unique_prefix}-app-pending-changelog",
        f"{unique_prefix}.r",
    )
    await create_topics(kafka_bootstrap, [state, changelog, reply])
    async with producer(kafka_bootstrap) as prod:
        replies = ReplySender(prod, refused=own_topics_refused([state], f"{unique_prefix}-app-"))
        await replies.send(state, b"k", b"not a state")
        await replies.send(changelog, b"k", b"not a pending entry")
        await replies.send(reply, b"k", b"decision")
        assert await wait_for(lambda: replies.stats["sent"] == 1, 20)
        assert replies.stats["skipped"] == 2
        await replies.close()
    assert await consume(kafka_bootstrap, state, count=1, timeout_s=2) == []


LOW = 100_000  # max.message.bytes below the decide producer's 512 KiB batches


async def test_a_reply_topic_that_refuses_the_workers_batches_is_named_and_its_replies_skipped(
    kafka_bootstrap: str, unique_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Several replies to one client go out in one record batch of up to 512 KiB: a reply topic with a lower
    ``max.message.bytes`` refuses whole batches (before: replies lost silently, counted as skipped, and the topic
    looked up again after every refused batch). It is refused at its lookup instead, with the remedy in the log,
    as the worker's own topics are at start; other clients' replies go on."""
    small, fine = f"{unique_prefix}.replies.small", f"{unique_prefix}.replies.fine"
    await ensure_topics(
        kafka_bootstrap, None, [new_topic(small, 1, {"max.message.bytes": str(LOW)}), new_topic(fine, 1)]
    )
    async with producer(kafka_bootstrap, max_batch_size=PRODUCER_TUNING["max_batch_size"]) as prod:
        replies = ReplySender(prod, min_refresh_s=0.05, batch_bytes=PRODUCER_TUNING["max_batch_size"])
        with caplog.at_level(logging.WARNING, logger="banditroute.decide"):
            for i in range(1000):  # 300 KB of replies at once: a batch above LOW, were they sent
                await replies.send(small, f"k{i}".encode(), b"x" * 300)
                await replies.send(fine, f"k{i}".encode(), b"y" * 300)
            assert await wait_for(lambda: replies.stats["sent"] + replies.stats["skipped"] == 2000, 30)
        assert replies.stats["skipped"] == 1000 and replies.stats["too_small_topics"] == 1, replies.stats
        warned = [r.getMessage() for r in caplog.records if small in r.getMessage()]
        assert len(warned) == 1 and f"({LOW})" in warned[0] and "max.message.bytes=524288" in warned[0]
        # remembered as refused: no lookup for its next replies within recheck_s
        lookups = replies.stats["lookups"]
        await replies.send(small, b"k", b"x")
        assert replies.stats["lookups"] == lookups and replies.stats["skipped"] == 1001
        await replies.close()
    assert len(await consume(kafka_bootstrap, fine, count=1000, timeout_s=20)) == 1000
    assert await consume(kafka_bootstrap, small, count=1, timeout_s=2) == []


async def test_a_reply_topic_lowered_after_its_lookup_is_named_once_the_broker_refuses_a_batch(
    kafka_bootstrap: str, unique_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"{unique_prefix}.replies.lowered"
    await create_topics(kafka_bootstrap, [topic])
    async with producer(kafka_bootstrap, max_batch_size=PRODUCER_TUNING["max_batch_size"]) as prod:
        replies = ReplySender(prod, batch_bytes=PRODUCER_TUNING["max_batch_size"])
        await replies.send(topic, b"k", b"first")
        assert await wait_for(lambda: replies.stats["sent"] == 1, 20)
        async with admin_client(kafka_bootstrap) as admin:
            resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": "2000"})
            await admin.alter_configs([resource])
        assert await wait_for_async(lambda: message_bytes_of(prod.client, [topic]), {topic: 2000}, 20)
        with caplog.at_level(logging.WARNING, logger="banditroute.decide"):
            for i in range(300):  # 90 KB at once: the batches after the first take many replies each
                await replies.send(topic, f"k{i}".encode(), b"x" * 300)
            assert await wait_for(lambda: replies.stats["sent"] + replies.stats["skipped"] == 301, 30)
        assert replies.stats["too_small_topics"] == 1, replies.stats
        warned = [r.getMessage() for r in caplog.records if topic in r.getMessage()]
        assert len(warned) == 1 and "MessageSizeTooLargeError" in warned[0], warned
        skipped = replies.stats["skipped"]
        await replies.send(topic, b"k", b"x")  # remembered as refused for recheck_s
        assert replies.stats["skipped"] == skipped + 1
        await replies.close()


async def test_a_clients_own_reply_topic_takes_the_workers_batches(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    """Made with the worker's batch size, not the broker's default (which may be lower)."""
    settings = Settings().model_copy(
        update={"kafka_bootstrap": kafka_bootstrap, "topic_prefix": unique_prefix}
    )
    reply = f"{unique_prefix}.replies.own"
    await create_client_topics(settings, "test", [], reply)
    async with producer(kafka_bootstrap) as prod:
        assert await message_bytes_of(prod.client, [reply]) == {reply: MAX_BATCH_BYTES}


async def wait_for_async(ask: Callable[[], Awaitable[object]], wanted: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while await ask() != wanted:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def test_replies_in_a_lookup_when_the_sender_closes_are_counted_as_skipped(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    """``close`` cancels the lookup; the replies it had taken from the queue (here while it asks the broker for
    the topic's ``max.message.bytes``) are neither sent nor lost from ``replies_skipped``."""
    topic = f"{unique_prefix}.replies.closing"
    await create_topics(kafka_bootstrap, [topic])
    async with producer(kafka_bootstrap, max_batch_size=PRODUCER_TUNING["max_batch_size"]) as prod:
        replies = ReplySender(prod, min_refresh_s=0.0, batch_bytes=PRODUCER_TUNING["max_batch_size"])
        for i in range(50):
            await replies.send(topic, f"k{i}".encode(), b"x")
        # the lookup has the topic list and now awaits the broker again: seen at the first step of the loop after
        # it (an event set there would need a hook in the sender; a timed poll could come after the sends)
        while replies.stats["lookups"] == 0:  # noqa: ASYNC110
            await asyncio.sleep(0)
        await replies.close()
        await prod.flush()
        assert replies.stats["sent"] + replies.stats["skipped"] == 50, replies.stats
        assert replies.stats["skipped"] == 50, replies.stats  # every one was in the lookup when it closed
