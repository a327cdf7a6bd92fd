"""``banditroute bench route``: round-trip latency of ``RouterClient.route()`` against a running worker."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from banditroute.settings import Settings


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in [0, 100])."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


async def run_route_bench(
    settings: Settings,
    *,
    requests: int,
    concurrency: int,
    task_type: str,
    timeout_s: float,
    warmup: int,
) -> dict[str, Any]:
    """Send ``warmup`` unmeasured then ``requests`` measured routes with ``concurrency`` in flight."""
    from banditroute.client import RouterClient, RouteTimeout

    latencies: list[float] = []
    timeouts = 0
    models: dict[str, int] = {}
    no_answer: str | None = None
    # a static default route (BANDITROUTE_DEFAULT_ROUTE) would answer for a missing worker: not measured
    async with RouterClient(settings, timeout_s=timeout_s, start_timeout_s=max(timeout_s, 10.0)) as client:
        client.default_route = None
        if client.degraded:
            raise RuntimeError(client.degraded)
        sem = asyncio.Semaphore(concurrency)

        async def one(measure: bool) -> None:
            nonlocal timeouts
            async with sem:
                started = time.perf_counter()
                try:
                    decision = await client.route(task_type)
                except RouteTimeout:
                    timeouts += measure
                    return
                if measure:
                    latencies.append((time.perf_counter() - started) * 1000.0)
                    models[str(decision.model)] = models.get(str(decision.model), 0) + 1

        await asyncio.gather(*(one(False) for _ in range(warmup)))
        wall = time.perf_counter()
        await asyncio.gather(*(one(True) for _ in range(requests)))
        wall = time.perf_counter() - wall
        if timeouts:
            no_answer = await client.why_no_answer(timeout_s)
    latencies.sort()
    return {
        "requests": requests,
        "concurrency": concurrency,
        "answered": len(latencies),
        "timeouts": timeouts,
        "throughput_per_s": len(latencies) / wall if wall > 0 else 0.0,
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "max": latencies[-1] if latencies else float("nan"),
        },
        "models": models,
        "no_answer": no_answer,
    }


__all__ = ["percentile", "run_route_bench"]
