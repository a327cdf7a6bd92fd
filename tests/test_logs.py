"""The CLI's log filters for aiokafka: retried offset lookups and clients' deleted reply topics lowered to DEBUG,
repeated warnings and errors held back to one per interval."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    GroupCoordinatorNotAvailableError,
    KafkaConnectionError,
    NotLeaderForPartitionError,
    UnknownTopicOrPartitionError,
)

from banditroute.logs import (
    AIOKAFKA_LOGGERS,
    DeletedReplyTopics,
    RepeatLimit,
    RetriedCoordinatorLookups,
    RetriedKafkaErrors,
    limit_repeated_kafka_logs,
    quiet_kafka_logs,
    quiet_retried_kafka_errors,
)

FETCHER = "aiokafka.consumer.fetcher"
COORDINATOR = "aiokafka.consumer.group_coordinator"


def _installed(
    caplog: pytest.LogCaptureFixture, name: str, install: Callable[[], None], kinds: tuple[type, ...]
) -> Iterator[pytest.LogCaptureFixture]:
    """``caplog`` at INFO on the logger ``name`` with ``install``'s filters, each of ``kinds`` once (installed
    twice); the logger's filters as they were afterwards."""
    logger = logging.getLogger(name)
    before = list(logger.filters)
    install()
    install()  # installs once
    assert all(sum(isinstance(f, kind) for f in logger.filters) == 1 for kind in kinds)
    caplog.set_level(logging.INFO, logger=name)
    yield caplog
    logger.filters[:] = before


@pytest.fixture
def fetcher_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    yield from _installed(caplog, FETCHER, quiet_retried_kafka_errors, (RetriedKafkaErrors,))


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


def test_retried_coordinator_lookups_are_not_errors_until_they_last(caplog: pytest.LogCaptureFixture) -> None:
    """A worker started right after its broker: aiokafka's group coordinator logs "Group Coordinator Request
    failed" at ERROR while ``__consumer_offsets`` is made, and retries. At DEBUG; one that lasts a minute is one
    WARNING; another error of the same message (not retried by aiokafka) still passes as an ERROR."""
    for _ in _installed(caplog, COORDINATOR, quiet_retried_kafka_errors, (RetriedCoordinatorLookups,)):
        log = logging.getLogger(COORDINATOR)
        log.error("Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
        assert caplog.records == []
        log.error("Group Coordinator Request failed: %s", GroupAuthorizationFailedError())
        assert [r.levelname for r in caplog.records] == ["ERROR"]
    clock, logger = Clock(), logging.getLogger("tests.coordinator")
    quiet = RetriedCoordinatorLookups(lasting_s=60.0, clock=clock)
    logger.addFilter(quiet)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="tests.coordinator")
    try:
        for _ in range(130):  # every 0.5 s for 65 s
            logger.error("Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
            clock.now += 0.5
    finally:
        logger.removeFilter(quiet)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "group coordinator lookup still fails after 60 s" in caplog.records[0].getMessage()


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


def test_a_repeated_error_passes_once_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    """A consumer waiting for a topic that does not exist: aiokafka logs the same ERROR ~1,000 times a second.
    One per ``every_s`` passes, the next says how many were held back; another text, another logger and records
    below WARNING are not held back by it."""
    clock, logger, other_logger = (
        Clock(),
        logging.getLogger("tests.cluster"),
        logging.getLogger("tests.other"),
    )
    limit = RepeatLimit(every_s=10.0, clock=clock)
    logger.addFilter(limit)
    other_logger.addFilter(limit)
    caplog.set_level(logging.DEBUG, logger="tests")
    try:
        for i in range(25_000):  # every millisecond for 25 s
            clock.now = 1000.0 + i / 1000
            logger.error("Topic %s not found in cluster metadata", "nosuch")
        logger.error("Topic %s not found in cluster metadata", "another")
        other_logger.error("Topic %s not found in cluster metadata", "nosuch")
        logger.info("Topic %s not found in cluster metadata", "nosuch")
    finally:
        logger.removeFilter(limit)
        other_logger.removeFilter(limit)
    messages = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert messages[0] == ("tests.cluster", "ERROR", "Topic nosuch not found in cluster metadata")
    assert messages[1] == (
        "tests.cluster",
        "ERROR",
        "Topic nosuch not found in cluster metadata (and 9999 more like it in the last 10 s)",
    )
    assert messages[2] == messages[1]
    assert messages[3:] == [
        ("tests.cluster", "ERROR", "Topic another not found in cluster metadata"),
        ("tests.other", "ERROR", "Topic nosuch not found in cluster metadata"),
        ("tests.cluster", "INFO", "Topic nosuch not found in cluster metadata"),
    ]


def test_the_repeat_limit_remembers_a_bounded_number_of_texts() -> None:
    clock = Clock()
    limit = RepeatLimit(every_s=10.0, kept=100, clock=clock)
    records = [
        logging.LogRecord("tests.cluster", logging.ERROR, __file__, 1, "Topic %s not found", (str(i),), None)
        for i in range(1_000)
    ]
    assert all(limit.filter(record) for record in records)  # each text once: all pass
    assert len(limit._seen) == 100
    assert limit.filter(records[-1]) is False  # the newest are remembered
    assert limit.filter(records[0]) is True  # the oldest were forgotten


def test_the_cli_installs_the_repeat_limit_on_aiokafkas_loggers() -> None:
    loggers = [logging.getLogger(name) for name in AIOKAFKA_LOGGERS]
    before = [list(logger.filters) for logger in loggers]
    try:
        limit_repeated_kafka_logs()
        limit_repeated_kafka_logs()  # installs once
        assert all(sum(isinstance(f, RepeatLimit) for f in logger.filters) == 1 for logger in loggers)
    finally:
        for logger, filters in zip(loggers, before, strict=True):
            logger.filters[:] = filters


def test_the_filters_can_be_shared_by_threads() -> None:
    """aiokafka logs from every thread with a client (the worker's loop and the decide loop's own thread), and a
    logger's filters run in the thread that logs: an exception there is raised at aiokafka's log call. Four
    threads past the filters' memory bound (switching threads as often as the interpreter can): none raises."""
    import sys
    import threading

    repeat, retried = RepeatLimit(kept=1), RetriedKafkaErrors()
    failures: list[BaseException] = []

    def log_many(thread: int) -> None:
        for i in range(5000):
            records = (
                logging.LogRecord("aiokafka.conn", logging.WARNING, __file__, 1, f"{thread} {i}", None, None),
                logging.LogRecord(
                    FETCHER,
                    logging.ERROR,
                    __file__,
                    1,
                    "Failed fetch offsets from %s: %s",
                    (1, NotLeaderForPartitionError(f"TopicPartition(topic='t{thread}', partition={i})")),
                    None,
                ),
            )
            try:
                repeat.filter(records[0])
                retried.filter(records[1])
            except Exception as exc:
                failures.append(exc)
                return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=log_many, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []


CLUSTER = "aiokafka.cluster"
MISSING = "Topic %s not found in cluster metadata"


@pytest.fixture
def cluster_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    yield from _installed(caplog, CLUSTER, quiet_kafka_logs, (DeletedReplyTopics, RepeatLimit))


def test_a_client_s_deleted_reply_topic_is_not_an_error(cluster_log: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger(CLUSTER)
    log.error(MISSING, "banditroute.replies.c28ae4c7abe6402eb82185eab489db88")  # as the worker logged it
    log.error(MISSING, "acme.prod.replies.0123456789abcdef0123456789abcdef")
    assert cluster_log.records == []  # DEBUG, and the logger is at INFO
    cluster_log.set_level(logging.DEBUG, logger=CLUSTER)
    log.error(MISSING, "banditroute.replies.aef5b5bbf352416d933bf50c18f08437")
    assert [r.levelname for r in cluster_log.records] == ["DEBUG"]


def test_any_other_missing_topic_is_still_an_error(cluster_log: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger(CLUSTER)
    log.error(MISSING, "banditroute.requests")
    log.error(MISSING, "my-service-replies")  # a reply topic the user named: theirs to look at
    log.error(MISSING, "banditroute.replies.not-a-client-uuid")
    log.error("Unexpected error: %s", "banditroute.replies.aef5b5bbf352416d933bf50c18f08437")
    assert [(r.levelname, r.args) for r in cluster_log.records] == [
        ("ERROR", ("banditroute.requests",)),
        ("ERROR", ("my-service-replies",)),
        ("ERROR", ("banditroute.replies.not-a-client-uuid",)),
        ("ERROR", ("banditroute.replies.aef5b5bbf352416d933bf50c18f08437",)),
    ]
