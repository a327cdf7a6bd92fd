"""The metadata back-off: failed refreshes wait longer each time (capped), a success resets the wait."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.client import AIOKafkaClient

from banditroute.kafka import backoff


async def test_failed_refreshes_back_off_and_a_success_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = iter([False] * 8 + [True, False])
    waits: list[float] = []

    async def refresh(_self: Any, _cluster: Any, _topics: Any) -> bool:
        return next(outcomes)

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(backoff, "_ORIGINAL", refresh)
    monkeypatch.setattr(backoff.asyncio, "sleep", sleep)
    client = SimpleNamespace(_retry_backoff=0.1)
    results = [await backoff._metadata_update_with_backoff(client, None, None) for _ in range(10)]

    assert results == [False] * 8 + [True, False]  # the refresh's own answer is passed through
    assert waits[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])
    assert max(waits) == backoff.MAX_BACKOFF_S
    assert len(waits) == 9 and waits[-1] == pytest.approx(0.1)  # no wait after the success; reset after it


def test_install_patches_the_client_class_once() -> None:
    backoff.install()
    patched = AIOKafkaClient._metadata_update
    backoff.install()
    assert backoff.installed()
    assert patched is backoff._metadata_update_with_backoff
    assert AIOKafkaClient._metadata_update is patched
