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
