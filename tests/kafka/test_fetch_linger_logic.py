"""When the decide loop's fetch linger starts and ends (pure: :class:`FetchLinger` over a stand-in fetcher that
holds the two settings aiokafka reads for each fetch request)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from banditroute.kafka.fetch_linger import LINGER_MIN_BYTES, FetchLinger

PLAIN = (1, 100)


def _linger(linger_ms: float, plain: tuple[int, int] = PLAIN) -> tuple[FetchLinger, SimpleNamespace]:
    fetcher = SimpleNamespace(_fetch_min_bytes=plain[0], _fetch_max_wait_ms=plain[1])
    return FetchLinger(SimpleNamespace(_fetcher=fetcher), linger_ms), fetcher


def _settings(fetcher: SimpleNamespace) -> tuple[int, int]:
    return fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms


def test_two_polls_with_requests_within_the_linger_start_it() -> None:
    linger, fetcher = _linger(5)
    linger.polled(True, 10.000)
    assert not linger.lingering and _settings(fetcher) == PLAIN  # one request alone is fetched as before
    linger.polled(True, 10.004)
    assert linger.lingering and _settings(fetcher) == (LINGER_MIN_BYTES, 5)
    assert linger.poll_timeout_ms(200) == 10  # an empty poll of twice the linger ends it


def test_a_sparse_stream_never_lingers() -> None:
    linger, fetcher = _linger(5)
    for i in range(100):
        linger.polled(True, 10 + i * 0.006)  # one poll with requests every 6 ms: slower than one per linger
    assert not linger.lingering and linger.switches == 0 and _settings(fetcher) == PLAIN
    assert linger.poll_timeout_ms(200) == 200


def test_an_empty_poll_ends_the_linger_and_restores_the_consumer_s_own_settings() -> None:
    linger, fetcher = _linger(3, plain=(1, 250))  # whatever the consumer was built with
    linger.polled(True, 1.000)
    linger.polled(True, 1.002)
    linger.polled(True, 1.0045)  # requests keep coming: it stays on
    assert linger.lingering and linger.switches == 1
    linger.polled(False, 1.012)
    assert not linger.lingering and linger.switches == 2 and _settings(fetcher) == (1, 250)
    linger.polled(True, 1.100)  # the stream's first request after the pause: no linger yet
    assert not linger.lingering


def test_no_linger_at_zero() -> None:
    linger, fetcher = _linger(0)
    for i in range(10):
        linger.polled(True, 5 + i * 1e-6)
    assert not linger.lingering and _settings(fetcher) == PLAIN and linger.poll_timeout_ms(200) == 200


def test_a_fractional_linger_waits_at_least_a_millisecond_at_the_broker() -> None:
    linger, fetcher = _linger(0.4)
    linger.polled(True, 1.0)
    linger.polled(True, 1.0002)
    assert linger.lingering and fetcher._fetch_max_wait_ms == 1 and linger.poll_timeout_ms(200) == 1


def test_a_consumer_without_aiokafka_0_14_s_fetch_settings_decides_without_lingering(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="banditroute.decide"):
        linger = FetchLinger(SimpleNamespace(_fetcher=SimpleNamespace()), 5)
    assert "fetch linger is off" in caplog.text
    for i in range(10):
        linger.polled(True, 1 + i * 0.001)
    assert not linger.lingering and linger.switches == 0 and linger.poll_timeout_ms(200) == 200
