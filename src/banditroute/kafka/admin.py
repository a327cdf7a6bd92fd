"""The one admin helper: open an admin client, create topics honestly, close it.

Kafka's CreateTopics answers with an error code per topic instead of raising. :func:`create_topics` reads
them: a topic that already exists (created meanwhile by another worker or client) is fine; any other error
(authorisation, invalid config, policy violation, ...) raises :class:`TopicCreationError` with the broker's
message, so start-up stops with it instead of going on without its topics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code
from aiokafka.protocol.admin import DescribeConfigsRequest

log = logging.getLogger("banditroute.kafka")


class TopicError(RuntimeError):
    """The worker's topics cannot be set up; the message says why and what to do."""


class TopicCreationError(TopicError):
    """The broker refused to create a topic for a reason other than that it exists already."""


class TopicLayoutError(TopicError):
    """An existing topic's partition count does not match the configuration, or it refuses the worker's
    record batches (``max.message.bytes``)."""


@asynccontextmanager
async def admin_client(
    bootstrap: str, security: Mapping[str, Any] | None = None, **kwargs: Any
) -> AsyncIterator[Any]:
    """A started ``AIOKafkaAdminClient``, closed on exit (also when starting it failed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **dict(security or {}), **kwargs)
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


def new_topic(name: str, partitions: int, configs: Mapping[str, str] | None = None) -> NewTopic:
    """A topic to create with replication factor 1 (the single-node broker of development and tests)."""
    return NewTopic(name, partitions, 1, topic_configs=dict(configs or {}))


async def create_topics(admin: Any, topics: Iterable[NewTopic]) -> list[str]:
    """Create ``topics`` that do not exist yet; returns the names created here. Raises TopicCreationError."""
    existing = set(await admin.list_topics())
    missing = [t for t in topics if t.name not in existing]
    if not missing:
        return []
    response = await admin.create_topics(missing)
    created, errors = [], []
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        if code == 0:
            created.append(name)
        elif code == TopicAlreadyExistsError.errno:
            log.debug("topic %s was created concurrently", name)
        else:
            errors.append(f"{name}: {for_code(code).__name__}" + (f" ({message})" if message else ""))
    if errors:
        raise TopicCreationError("could not create topics: " + "; ".join(errors))
    return created


async def check_partitions(admin: Any, topics: Iterable[NewTopic], why: str) -> None:
    """Raise TopicLayoutError if one of ``topics`` exists with another partition count than asked for."""
    present = [t for t in topics if t.name in set(await admin.list_topics())]
    if not present:
        return
    described = await admin.describe_topics([t.name for t in present])
    counts = {d["topic"]: len(d.get("partitions") or ()) for d in described}
    for topic in present:
        have = counts.get(topic.name)
        if have and have != topic.num_partitions:
            raise TopicLayoutError(
                f"topic {topic.name!r} has {have} partitions but this worker needs {topic.num_partitions} "
                f"({why}). Set BANDITROUTE_PARTITIONS / BANDITROUTE_STATE_PARTITIONS to match, or recreate the topic."
            )


async def check_message_bytes(
    admin: Any, names: Iterable[str], needed: int, created: Collection[str] = (), wait_s: float = 10.0
) -> None:
    """Raise TopicLayoutError if one of the existing topics ``names`` refuses record batches of ``needed``
    bytes: its ``max.message.bytes`` (set on the topic, or the broker's default) is lower. The worker writes
    record batches of up to that size; a smaller limit would fail its sends at the first full batch instead.

    ``created``: topics this process has just created. A broker may not list or describe a new topic for a
    moment after it is made; those are waited for (up to ``wait_s``, then named in a warning), not skipped as
    missing. A topic the broker refuses to describe for another reason (not authorised) is not waited for."""
    fresh = set(created)
    existing = set(await admin.list_topics()) | fresh
    wanted = [name for name in names if name in existing]
    if not wanted:
        return
    deadline = time.monotonic() + wait_s
    while True:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in wanted]
        )
        limits = {name: limit for response in responses for name, limit in _message_bytes(response).items()}
        refused = {  # described with another error than "not there yet" (e.g. not authorised): no waiting
            name
            for response in responses
            for code, _message, _type, name, *_ in response.resources
            if code not in (0, UnknownTopicOrPartitionError.errno)
        }
        unseen = [name for name in wanted if name in fresh and name not in limits and name not in refused]
        if not unseen:
            break
        if time.monotonic() > deadline:
            log.warning(
                "max.message.bytes of %s not checked: the broker did not describe the topics within %g s of "
                "their creation (a limit below %d bytes fails the first full batch sent there)",
                ", ".join(map(repr, unseen)),
                wait_s,
                needed,
            )
            break
        await asyncio.sleep(0.2)
    if refused:
        log.warning(
            "max.message.bytes of %s not checked: the broker refused to describe the topics (e.g. not "
            "authorised; a limit below %d bytes fails the first full batch sent there)",
            ", ".join(map(repr, sorted(refused))),
            needed,
        )
    too_small = {name: limit for name, limit in limits.items() if limit < needed}
    if too_small:
        raise TopicLayoutError(message_bytes_advice(too_small, needed))


async def message_bytes_of(client: Any, names: Iterable[str]) -> dict[str, int]:
    """``max.message.bytes`` of the topics ``names`` (those the broker described), asked through a started
    client's connection (a producer's ``client``: no admin client of its own)."""
    resources = [(ConfigResourceType.TOPIC.value, name, ["max.message.bytes"]) for name in names]
    if not resources:
        return {}
    return _message_bytes(await client.send(client.get_random_node(), DescribeConfigsRequest(resources)))


def _message_bytes(response: Any) -> dict[str, int]:
    """Topic -> ``max.message.bytes`` in a DescribeConfigs response; a topic the broker did not describe
    (deleted meanwhile, or not authorised to describe: the sends will tell) is left out."""
    found = {}
    for error_code, _message, _type, name, entries, *_ in response.resources:
        for entry in () if error_code else entries:
            if entry[0] == "max.message.bytes" and entry[1] is not None:
                found[name] = int(entry[1])
    return found


def message_bytes_advice(too_small: Mapping[str, int], needed: int) -> str:
    """What to say of topics whose ``max.message.bytes`` (``too_small``: topic -> limit) is below ``needed``."""
    named = ", ".join(f"{name!r} ({limit})" for name, limit in too_small.items())
    return (
        f"max.message.bytes below the {needed} bytes of the worker's record batches on topic {named}. Raise it, "
        f"e.g. `kafka-configs.sh --bootstrap-server HOST --alter --entity-type topics --entity-name TOPIC "
        f"--add-config max.message.bytes={needed}`."
    )


async def ensure_topics(
    bootstrap: str, security: Mapping[str, Any] | None, topics: Iterable[NewTopic], **kwargs: Any
) -> list[str]:
    """Open an admin client, create the missing ``topics`` and close it."""
    async with admin_client(bootstrap, security, **kwargs) as admin:
        return await create_topics(admin, topics)


async def wait_for_topics(
    bootstrap: str,
    security: Mapping[str, Any] | None,
    names: Iterable[str],
    timeout_s: float,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """Wait until every topic of ``names`` exists (another process creates them). Raises ``TimeoutError``
    after ``timeout_s`` and ``ChildProcessError`` as soon as ``alive()`` turns false."""
    wanted = set(names)
    async with admin_client(bootstrap, security) as admin:
        deadline = time.monotonic() + timeout_s
        while not wanted <= set(await admin.list_topics()):
            if not alive():
                raise ChildProcessError("the process that creates the topics exited")
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not created within {timeout_s:g} s: {sorted(wanted)}")
            await asyncio.sleep(0.2)


async def delete_topics_with_prefix(
    bootstrap: str, security: Mapping[str, Any] | None, prefix: str
) -> list[str]:
    """Delete the topics named ``<prefix>.*`` or ``<prefix>-*``; returns their names. Raises ``KafkaError``
    or ``OSError`` when the broker refuses or cannot be reached."""
    async with admin_client(bootstrap, security) as admin:
        names = [t for t in await admin.list_topics() if t.startswith((prefix + ".", prefix + "-"))]
        if names:
            await admin.delete_topics(names)
    return names


__all__ = [
    "TopicCreationError",
    "TopicError",
    "TopicLayoutError",
    "admin_client",
    "check_message_bytes",
    "check_partitions",
    "create_topics",
    "delete_topics_with_prefix",
    "ensure_topics",
    "message_bytes_advice",
    "message_bytes_of",
    "new_topic",
    "wait_for_topics",
]
