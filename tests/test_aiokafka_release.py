"""The patches of aiokafka's private code apply only to the release they were checked against."""

from __future__ import annotations

import logging

import aiokafka
import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.consumer import fetcher

from banditroute.kafka import aiokafka_release, backoff, fence, fetch_cycles, raw_fetch

OTHER = "0.14.1"


def test_the_installed_release_is_the_checked_one() -> None:
    # an upgrade fails here until raw_fetch, fetch_cycles and backoff are checked against it again
    assert aiokafka_release.CHECKED == aiokafka.__version__ == raw_fetch.AIOKAFKA_VERSION


def test_another_release_is_refused_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert aiokafka_release.checked("some patch")
    with caplog.at_level(logging.WARNING, logger="banditroute.kafka"):
        assert not aiokafka_release.checked("some patch", OTHER)
    assert (
        f"aiokafka {OTHER}, not {aiokafka_release.CHECKED}: some patch keeps aiokafka's own code"
        in caplog.text
    )


def test_fetch_cycles_leaves_another_release_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetcher, "PartitionRecords", fetch_cycles._BASE)  # as before any install
    monkeypatch.setattr(fetch_cycles, "_installed", False)
    assert not fetch_cycles.install(OTHER)
    assert fetcher.PartitionRecords is fetch_cycles._BASE and not fetch_cycles.installed()
    assert fetch_cycles.install()
    assert fetcher.PartitionRecords is fetch_cycles._PartitionRecords and fetch_cycles.installed()


def test_backoff_leaves_another_release_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    original = backoff._ORIGINAL or AIOKafkaClient._metadata_update
    monkeypatch.setattr(AIOKafkaClient, "_metadata_update", original)  # as before any install
    monkeypatch.setattr(backoff, "_ORIGINAL", None)
    assert not backoff.install(OTHER)
    assert AIOKafkaClient._metadata_update is original and not backoff.installed()
    assert backoff.install()
    assert AIOKafkaClient._metadata_update is backoff._metadata_update_with_backoff and backoff.installed()


def test_the_heartbeat_lease_leaves_another_release_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    patched = GroupCoordinator._send_req
    monkeypatch.delattr(GroupCoordinator, fence.ANSWERED, raising=False)  # as before any install
    assert not fence.install(OTHER)
    assert GroupCoordinator._send_req is patched and not hasattr(GroupCoordinator, fence.ANSWERED)
    monkeypatch.setattr(GroupCoordinator, fence.ANSWERED, True, raising=False)  # installed: kept
    assert fence.install(OTHER)
