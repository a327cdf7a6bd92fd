"""``bench route --client sync``'s accounting without a broker: a client double whose ``route()`` falls back
(``RouterUnavailable``) or fails. What a real local-mode client does is measured by the smoke tests on the
broker (tests/bench/test_bench_smoke.py); here only how the bench counts what the client did."""

from __future__ import annotations

import collections
import itertools
from types import SimpleNamespace
from typing import Any

import pytest

import banditroute.client
from banditroute.bench.route import cpu_per_answer, run_sync_route_bench
from banditroute.router_client import RouterUnavailable
from banditroute.settings import Settings


class _Client:
    """What the sync bench reads of ``SyncRouterClient``; ``route()`` raises ``failure`` on every third call."""

    failure: type[BaseException] = RouterUnavailable

    def __init__(self, _settings: Any, **_options: Any) -> None:
        local = SimpleNamespace(
            publisher=SimpleNamespace(lags_ms=collections.deque()), unavailable=lambda: None
        )
        self.client = SimpleNamespace(local=local, degraded=None, default_route=None)
        self.calls = itertools.count()

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        pass

    def route(self, task_type: str) -> Any:
        if next(self.calls) % 3 == 2:
            raise self.failure("outbox full")
        return SimpleNamespace(model="m")

    def flush(self) -> None:
        pass


def test_fallbacks_are_counted_with_their_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(banditroute.client, "SyncRouterClient", _Client)
    result = run_sync_route_bench(
        Settings.model_validate({}), requests=90, concurrency=3, task_type="t", warmup=0
    )
    assert result["answered"] == 60 and result["failed"] == 30
    assert result["no_answer"] == "RouterUnavailable: outbox full"
    assert result["models"] == {"m": 60}


def test_a_caller_thread_that_fails_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a shorter run reported as complete: the error of the thread that died is raised."""

    class Failing(_Client):
        failure = KeyError

    monkeypatch.setattr(banditroute.client, "SyncRouterClient", Failing)
    with pytest.raises(RuntimeError, match="caller thread failed: KeyError"):
        run_sync_route_bench(Settings.model_validate({}), requests=30, concurrency=2, task_type="t", warmup=0)


def test_cpu_is_per_answered_call() -> None:
    assert cpu_per_answer(0.5, 25_000) == pytest.approx(20.0)
    assert cpu_per_answer(0.5, 0) != cpu_per_answer(0.5, 0)  # NaN: nothing answered, nothing measured
