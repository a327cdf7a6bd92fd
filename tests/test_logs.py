"""The CLI's log filter for aiokafka's retried offset lookups: lowered to DEBUG, every other record untouched."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import KafkaConnectionError, NotLeaderForPartitionError, UnknownTopicOrPartitionError

from banditroute.logs import RetriedKafkaErrors, quiet_retried_kafka_errors

FETCHER = "aiokafka.consumer.fetcher"


@pytest.fixture
def fetcher_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    logger = logging.getLogger(FETCHER)
    before = list(logger.filters)
    quiet_retried_kafka_errors()
    quiet_retried_kafka_errors()  # installs once
    assert sum(isinstance(f, RetriedKafkaErrors) for f in logger.filters) == 1
    caplog.set_level(logging.INFO, logger=FETCHER)
    yield caplog
    logger.filters[:] = before


def test_retried_offset_lookups_are_not_errors(fetcher_log: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger(FETCHER)
    log.error("Failed fetch offsets from %s: %s", 1, NotLeaderForPartitionError())
    log.error("Failed fetch offsets from %s: %s", 1, UnknownTopicOrPartitionError())
    assert fetcher_log.records == []  # DEBUG, and the logger is at INFO


def test_they_show_at_debug(fetcher_log: pytest.LogCaptureFixture) -> None:
    fetcher_log.set_level(logging.DEBUG, logger=FETCHER)
    logging.getLogger(FETCHER).error("Failed fetch offsets from %s: %s", 1, NotLeaderForPartitionError())
    assert [r.levelname for r in fetcher_log.records] == ["DEBUG"]


def test_other_errors_pass(fetcher_log: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger(FETCHER)
    log.error("Failed fetch offsets from %s: %s", 1, KafkaConnectionError())
    log.error("Unexpected error in fetcher routine")
    assert [(r.levelname, r.getMessage()[:20]) for r in fetcher_log.records] == [
        ("ERROR", "Failed fetch offsets"),
        ("ERROR", "Unexpected error in "),
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_lasting_one_is_logged_once_with_its_partition(caplog: pytest.LogCaptureFixture) -> None:
    """The same error for the same partition, retried for ``lasting_s`` without a pause as long: one WARNING
    naming the partition, then DEBUG again; after it stops and comes back, the count starts again."""
    clock, logger = Clock(), logging.getLogger("tests.fetcher")
    quiet = RetriedKafkaErrors(lasting_s=60.0, clock=clock)
    logger.addFilter(quiet)
    caplog.set_level(logging.INFO, logger="tests.fetcher")
    unknown = UnknownTopicOrPartitionError("TopicPartition(topic='nosuch', partition=0)")
    other = UnknownTopicOrPartitionError("TopicPartition(topic='other', partition=3)")
    try:
        for _ in range(2):  # two runs of it, 200 s apart
            for _ in range(130):  # every 0.5 s for 65 s
                logger.error("Failed fetch offsets from %s: %s", 1, unknown)
                logger.error("Failed fetch offsets from %s: %s", 1, other)
                clock.now += 0.5
            clock.now += 200.0
    finally:
        logger.removeFilter(quiet)
    assert [(r.levelname, "nosuch" in r.getMessage(), "other" in r.getMessage()) for r in caplog.records] == [
        ("WARNING", True, False),
        ("WARNING", False, True),
    ] * 2
    assert "still fail after 60 s" in caplog.records[0].getMessage()


def test_a_retried_lookup_with_pauses_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock, logger = Clock(), logging.getLogger("tests.fetcher")
    quiet = RetriedKafkaErrors(lasting_s=60.0, clock=clock)
    logger.addFilter(quiet)
    caplog.set_level(logging.INFO, logger="tests.fetcher")
    try:
        for _ in range(10):  # a few seconds of it every 2 minutes (a topic made now and then)
            for _ in range(10):
                logger.error("Failed fetch offsets from %s: %s", 1, NotLeaderForPartitionError())
                clock.now += 0.5
            clock.now += 120.0
    finally:
        logger.removeFilter(quiet)
    assert caplog.records == []


@pytest.mark.kafka
async def test_a_topic_that_never_exists_is_not_hidden(
    kafka_bootstrap: str, fetcher_log: pytest.LogCaptureFixture
) -> None:
    """On the real broker, reading a topic that does not exist never reaches the lowered offset lookup (there is
    no leader to ask): aiokafka's metadata logs it at ERROR, naming the topic, and the filter leaves that be."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    fetcher_log.set_level(logging.INFO)
    fetcher_log.set_level(logging.DEBUG, logger=FETCHER)  # a lowered offset lookup would show
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition("nosuch-topic-r12", 0)])
        for _ in range(4):
            await consumer.getmany(timeout_ms=500)
    finally:
        await consumer.stop()
    named = [r for r in fetcher_log.records if "nosuch-topic-r12" in r.getMessage()]
    assert named and {r.levelname for r in named} >= {"ERROR"}
    assert not [r for r in fetcher_log.records if r.getMessage().startswith("Failed fetch offsets")]
