"""Fixtures of the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from banditroute.kafka.local import LocalKafka, free_port


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker of the test's own (on a free port, its data under ``tmp_path``), for tests that stop or break it:
    the session broker is left alone."""
    broker = LocalKafka(free_port(), data_dir=tmp_path / "broker")
    broker.up(timeout_s=120)
    try:
        yield broker
    finally:
        broker.kill()  # its data is thrown away: no controlled shutdown to wait for (seconds)
        broker.down(purge=True)
