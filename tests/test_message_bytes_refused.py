"""The ``max.message.bytes`` check waits for topics just created only while the broker says they are not there
yet; a topic it refuses to describe for another reason (not authorised) is not waited for, and is named in a warning."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import TopicAuthorizationFailedError, UnknownTopicOrPartitionError

from banditroute.kafka.admin import check_message_bytes


class Admin:
    """An admin client's two calls the check makes, answering every DescribeConfigs with ``code``."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.describes = 0

    async def list_topics(self) -> list[str]:
        return []

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        self.describes += 1
        return [SimpleNamespace(resources=[(self.code, "no", 2, r.name, []) for r in resources])]


async def test_a_topic_not_authorised_to_describe_is_not_waited_for(caplog: Any) -> None:
    admin = Admin(TopicAuthorizationFailedError.errno)
    with caplog.at_level(logging.WARNING, logger="banditroute.kafka"):
        await check_message_bytes(admin, ["t"], 524_288, ["t"], wait_s=30.0)
    assert admin.describes == 1
    assert "max.message.bytes of 't' not checked: the broker refused to describe" in caplog.text


async def test_a_topic_not_there_yet_is_asked_again() -> None:
    admin = Admin(UnknownTopicOrPartitionError.errno)
    await check_message_bytes(admin, ["t"], 524_288, ["t"], wait_s=0.5)
    assert admin.describes > 1
