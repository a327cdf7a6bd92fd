"""Shared fixtures: one real Kafka broker per test run, and a fresh topic prefix per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from banditroute.kafka.local import LocalKafka, free_port


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real Apache Kafka broker.

    Uses ``KAFKA_BOOTSTRAP_SERVERS`` when set; otherwise starts a single-node KRaft broker on a free port
    with a throw-away data folder, and stops it at the end of the run even when tests fail.
    """
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = LocalKafka(free_port(), data_dir=Path(tmp_path_factory.mktemp("kafka")))
    broker.up(timeout_s=120)
    try:
        yield broker.bootstrap
    finally:
        broker.kill()  # its data is thrown away: no controlled shutdown to wait for (seconds)
        broker.down(purge=True)


@pytest.fixture
def unique_prefix() -> str:
    """A topic prefix (and faust app id) that no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"
