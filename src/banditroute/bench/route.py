"""``banditroute bench route``: latency, rate and CPU cost of ``RouterClient.route()`` from one process.

``--mode remote`` measures the round trip (client -> requests -> worker -> reply topic) against a running
worker. ``--mode local`` measures the in-process decision of a local-mode client, and the lag from ``route()``
returning to its decision being acknowledged on the ``decisions`` topic.

Calls are paced at ``rate`` route()/s (0: as fast as the process can); with ``concurrency`` callers sharing the
schedule. Latency is the duration of each ``route()`` call; CPU is the process's CPU time (every thread:
the client's publisher and readers included) divided by the calls answered (a call that fell back is counted
in ``failed`` and its reason in ``no_answer``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from banditroute.bench.common import percentile
from banditroute.settings import Settings

YIELD_EVERY = 50
"""A caller that is behind schedule still yields to the event loop every this many calls (the client's
background tasks, e.g. the local-mode publisher, run on the same loop)."""


def summary_ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "p999": percentile(values, 99.9),
        "max": values[-1] if values else float("nan"),
    }


async def drive(
    call: Callable[[], Awaitable[bool]], count: int, rate: float, concurrency: int
) -> tuple[list[float], float]:
    """Run ``call`` ``count`` times, paced at ``rate``/s overall (0: unpaced) by ``concurrency`` callers.
    Returns the latencies (ms) of the calls that returned True, and the wall time (s)."""
    latencies: list[float] = []
    next_index = 0
    start = time.perf_counter()

    async def caller() -> None:
        nonlocal next_index
        since_yield = 0
        while next_index < count:
            i = next_index
            next_index += 1
            if rate > 0:
                delay = start + i / rate - time.perf_counter()
                if delay > 0.001:  # ahead: sleep (the loop's timers have ~1 ms resolution)
                    await asyncio.sleep(delay)
                    since_yield = 0
            since_yield += 1
            if since_yield >= YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            t0 = time.perf_counter()
            if await call():
                latencies.append((time.perf_counter() - t0) * 1000.0)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, time.perf_counter() - start


async def run_route_bench(
    settings: Settings,
    *,
    requests: int,
    concurrency: int,
    task_type: str,
    timeout_s: float,
    warmup: int,
    mode: Literal["remote", "local"] = "remote",
    rate: float = 0.0,
    feedback: float = 0.0,
    learn_timeout_s: float = 120.0,
) -> dict[str, Any]:
    """``warmup`` unmeasured then ``requests`` measured ``route()`` calls (see the module docstring); then, with
    ``feedback`` > 0 (local mode), the outcome of that share of the measured decisions and the wait until they
    are learnt."""
    if feedback > 0 and mode != "local":
        raise ValueError("feedback is measured in local mode (the client reads back the learnt state)")
    from banditroute.client import RouterClient, RouteTimeout

    failed = 0
    models: dict[str, int] = {}
    no_answer: str | None = None
    local_options: dict[str, Any] = {"local_fallback": "default"} if mode == "local" else {}
    # a static default route (BANDITROUTE_DEFAULT_ROUTE) would answer for a missing worker: not measured
    async with RouterClient(
        settings,
        timeout_s=timeout_s,
        start_timeout_s=max(timeout_s, 10.0),
        mode=mode,
        task_types=(task_type,),
        max_pending=max(100_000, requests + warmup),
        **local_options,
    ) as client:
        client.default_route = None
        if client.degraded:
            raise RuntimeError(client.degraded)
        local = client.local
        if local is not None and local.unavailable() is not None:
            raise RuntimeError(f"local mode: the routing snapshot is {local.unavailable()}")
        measuring = False
        fell_back = ""  # the first fallback's reason (local mode)
        every = round(1.0 / feedback) if feedback > 0 else 0
        answered: list[tuple[str, str]] = []  # (request_id, model) of the measured decisions, with feedback
        picked: list[str | None] = []

        async def one() -> bool:
            nonlocal failed, fell_back
            try:
                decision = await client.route(task_type)
            except RouteTimeout as exc:  # RouterUnavailable too
                failed += measuring
                fell_back = fell_back or f"{type(exc).__name__}: {exc}"
                return False
            if measuring:
                chosen = decision.model
                picked.append(chosen)  # counted after the run: the bench's own cost per call stays small
                if every and chosen is not None:
                    answered.append((decision.request_id, chosen))
            return measuring

        await drive(one, warmup, rate, concurrency)
        learnt_before = learnt_count(client, task_type) if every else 0
        if local is not None:
            await local.flush()
            local.publisher.lags_ms.clear()
        measuring = True
        cpu = time.process_time()
        latencies, wall = await drive(one, requests, rate, concurrency)
        cpu = time.process_time() - cpu
        for name, count in Counter(map(str, picked)).items():
            models[name] = count
        lags: list[float] = []
        if local is not None:
            await local.flush()
            lags = list(local.publisher.lags_ms)
        if failed:
            no_answer = (
                await client.why_no_answer(timeout_s)
                if mode == "remote"
                else f"local mode fell back: {fell_back}"
            )
        learning = None
        if every:
            learning = await learn_back(client, task_type, answered[::every], learnt_before, learn_timeout_s)
    result: dict[str, Any] = {
        "mode": mode,
        "requests": requests,
        "concurrency": concurrency,
        "rate_target_per_s": rate or "unpaced",
        "answered": len(latencies),
        "failed": failed,
        "route_per_s": len(latencies) / wall if wall > 0 else 0.0,
        "cpu_us_per_route": cpu_per_answer(cpu, len(latencies)),
        "latency_ms": summary_ms(latencies),
    }
    if mode == "local":
        result["published"] = len(lags)
        result["publish_lag_ms"] = summary_ms(lags)
    result["models"] = models
    result["no_answer"] = no_answer
    if learning is not None:
        result["learning"] = learning
    return result


def run_sync_route_bench(
    settings: Settings, *, requests: int, concurrency: int, task_type: str, warmup: int, rate: float = 0.0
) -> dict[str, Any]:
    """Local mode through ``SyncRouterClient``: ``warmup`` unmeasured then ``requests`` measured ``route()``
    calls from ``concurrency`` threads (each its share of the ``rate`` schedule), decided in the calling
    threads. Same report as :func:`run_route_bench`."""
    import threading

    from banditroute.client import RouteTimeout, SyncRouterClient

    with SyncRouterClient(
        settings,
        mode="local",
        local_fallback="default",
        task_types=(task_type,),
        start_timeout_s=10.0,
        max_pending=max(100_000, requests + warmup),
    ) as sync:
        local = sync.client.local
        if sync.client.degraded:
            raise RuntimeError(sync.client.degraded)
        if local is None or local.unavailable() is not None:
            raise RuntimeError(f"local mode: the routing snapshot is {local and local.unavailable()}")
        sync.client.default_route = None  # a fallback raises instead of answering unmeasured
        for _ in range(warmup):
            sync.route(task_type)
        sync.flush()
        local.publisher.lags_ms.clear()
        latencies: list[list[float]] = [[] for _ in range(concurrency)]
        picked: list[list[str | None]] = [[] for _ in range(concurrency)]
        why: list[str] = []  # the first fallback's reason, and any error that ended a caller thread
        errors: list[BaseException] = []
        start = time.perf_counter()

        def caller(k: int) -> None:
            mine, chosen = latencies[k], picked[k]
            clock, route = time.perf_counter, sync.route
            try:
                for i in range(k, requests, concurrency):
                    if rate > 0:
                        delay = start + i / rate - clock()
                        if delay > 0.001:
                            time.sleep(delay)
                    t0 = clock()
                    try:
                        decision = route(task_type)
                    except RouteTimeout as exc:  # fell back (RouterUnavailable too): counted as failed
                        if not why:
                            why.append(f"{type(exc).__name__}: {exc}")
                        continue
                    mine.append((clock() - t0) * 1000.0)
                    chosen.append(decision.model)
            except BaseException as exc:  # reported after the run, not lost with the thread
                errors.append(exc)

        cpu = time.process_time()
        threads = [threading.Thread(target=caller, args=(k,)) for k in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
        if errors:
            raise RuntimeError(f"a caller thread failed: {errors[0]!r}") from errors[0]
        sync.flush()
        lags = list(local.publisher.lags_ms)
    answered = [ms for mine in latencies for ms in mine]
    models = Counter(str(m) for chosen in picked for m in chosen)
    return {
        "mode": "local",
        "client": "sync",
        "requests": requests,
        "concurrency": concurrency,
        "rate_target_per_s": rate or "unpaced",
        "answered": len(answered),
        "failed": requests - len(answered),
        "route_per_s": len(answered) / wall if wall > 0 else 0.0,
        "cpu_us_per_route": cpu_per_answer(cpu, len(answered)),
        "latency_ms": summary_ms(answered),
        "published": len(lags),
        "publish_lag_ms": summary_ms(lags),
        "models": dict(models),
        "no_answer": why[0] if why else None,
    }


def cpu_per_answer(cpu_s: float, answered: int) -> float:
    """CPU microseconds per answered ``route()`` (NaN when none was answered: calls that fell back are not what
    is measured)."""
    return cpu_s / answered * 1e6 if answered else float("nan")


def learnt_count(client: Any, task_type: str) -> int:
    """Outcomes learnt into ``task_type``'s state, as the client last read it from the state topic (local
    mode; -1 in remote mode, which holds no state)."""
    local = client.local
    if local is None:
        return -1
    state = local.view.get(local.registry.snapshot.state_key(None, task_type))
    return 0 if state is None else int(state.events)


async def learn_back(
    client: Any, task_type: str, fed: list[tuple[str, str]], before: int, timeout_s: float
) -> dict[str, Any]:
    """Send an outcome for each ``(request_id, model)``, then wait until the workers have learnt them all: the
    task type's state (read back from the state topic) counts that many more events, or ``timeout_s`` passed
    without progress. Needs a worker that nothing else feeds this task type meanwhile."""
    from banditroute.messages import build_feedback

    start = time.perf_counter()
    for request_id, model in fed:
        event = build_feedback(request_id=request_id, model=model, quality=0.8, cost_usd=0.001)
        await client.send_feedback(event, wait=False)
    await client.flush()
    sent_s = time.perf_counter() - start
    learnt = learnt_count(client, task_type) - before
    last_progress = time.perf_counter()
    while learnt < len(fed) and time.perf_counter() - last_progress < timeout_s:
        await asyncio.sleep(0.05)
        now = learnt_count(client, task_type) - before
        if now > learnt:
            learnt, last_progress = now, time.perf_counter()
    seconds = (last_progress if learnt else time.perf_counter()) - start
    return {
        "feedback_sent": len(fed),
        "feedback_sent_s": sent_s,
        "learnt": learnt,
        "learnt_s": seconds,
        "learnt_per_s": learnt / seconds if seconds > 0 else 0.0,
    }


__all__ = ["drive", "percentile", "run_route_bench", "run_sync_route_bench", "summary_ms"]
