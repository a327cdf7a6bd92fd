"""``banditroute bench e2e``: one router worker on the real broker, against a raw relay ceiling, same run.

Method (each side in turn, each in a subprocess on 4-partition requests and decisions topics under a fresh
prefix): the full ``banditroute worker`` (decide plus the join and learn agents; ``router_*`` keys), the raw
relay (the ceiling), the worker's decide loop alone (``DecideService`` without the faust app: validation,
routing, the decision event; ``decide_only_*`` keys), then, with ``workers``, 1, 2, 4... worker processes on
``worker_partitions`` partitions (``workers`` {n: decisions/s}). ``driver_procs`` > 1 produces the pre-filled
requests from that many processes (the consuming side of the driver stays one process):

1. **Sustained rate.** The requests topic is pre-filled with ``requests`` requests (the relay gets
   ``RELAY_FACTOR`` times as many, it drains faster), then the process is started. A consumer of the decisions
   topic timestamps every fetched batch; the rate is counted between the 20 % and the 90 % marks of the
   drain, so group join, the first fetch and the tail are not timed. Then the bench waits until the process is
   idle (under 15 % of a core over 0.5 s): the router's join agent reads every published decision and lags
   the decide loop during a drain. ``decide_per_s`` is the decide loop's rate alone (decisions published);
   ``processed_per_s`` is requests / (first decision .. idle), i.e. decide *and* join of the whole backlog.
   The sustained rate (``router_per_s``, ``relay_per_s``) is the smaller of the two: what the process keeps
   up with indefinitely.
2. **Latency under load.** With the process warm and idle, an open-loop paced producer sends requests at the
   same absolute rates to both sides (1,000/s, 5,000/s and half the router's sustained rate; ``latency_at_ms``,
   ``relay_latency_at_ms``), and at shares of the side's own sustained rate (``loads``, 50 % by default;
   ``latency_ms``), ``seconds`` per level. ``added_ms`` is the router's p50/p99 minus the relay's at each
   absolute rate. Every millisecond the requests due are handed to one
   :class:`~banditroute.kafka.paced_send.PacedSender` (a produce request per answer from the broker, never
   waited for). The latency of a request is the time from when it was due (the level's start + its index /
   rate) to the arrival of its decision (matched by key) at the bench's consumer: the driver's own lateness,
   the wait in the sender, broker, worker, broker and the consumer's fetch all count. The first ``WARMUP_S`` of each level
   is not measured. Requests whose decision does not arrive within ``DRAIN_TIMEOUT_S`` are counted as lost.

The bench driver, the worker and the broker share the machine; the driver's CPU use is part of what it costs.
On a shared machine wall-clock rates move with the other load, so the CPU time the process spent per request
(``cpu_us_per_request``, from ``/proc/<pid>/stat``, from the first decision until the process is idle, less
the process's resting CPU (``rest_cores``, measured over ``REST_WINDOW_S`` after it) over the idle window that
ended the drain: ``processed_per_s``'s busy time leaves that window out too, while any work still done in it
stays counted; ``cpu_us_per_request_to_idle`` is the figure without that correction, ``idle_window_cpu_ms`` what
the window held) is reported too; ``cpu_ratio`` is
relay CPU per request / router CPU per request, the machine-independent form of ``ratio``, and ``cpu_ratio_at``
is the same at each paced rate of ``added_ms`` (each process's CPU over the level).

The drain is ``DRAIN_REQUESTS`` long by default: a shorter one weighs the worker's start-up (the work it still does
after its first decision) into its CPU per request (see the constant). One run's figures still move a lot on a
small shared machine:
:func:`run_e2e_repeated` (``bench e2e --repeat N``) runs the comparison N times in a row and reports medians,
ranges and in how many runs each target held (:func:`summarise_runs`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from banditroute.bench.common import (
    PARTITIONS,
    BenchWorker,
    TopicTail,
    cpu_seconds,
    create_topics,
    delete_topics,
    machine,
    machine_busy_seconds,
    new_prefix,
    percentiles,
    sleep_until,
    wait_idle,
)
from banditroute.kafka.load_producer import load_producer
from banditroute.kafka.paced_send import PacedSender

LOADS = (25, 50, 90)
RELAY_FACTOR = 3
WARMUP_S = 1.0
DRAIN_TIMEOUT_S = 10.0
START_TIMEOUT_S = 90.0
IDLE_WINDOW_S = 0.5
REST_WINDOW_S = 1.0
"""After a drain, how long the idle process's resting CPU (timers, heartbeats) is measured, to take it out of
the idle window that ended the drain."""
DRAIN_REQUESTS = 150_000
"""The pre-filled drain by default (``bench e2e -n``). At 30,000 requests (until lead39) the router's drain lasted
~0.3 s and held ~0.2 s of its CPU: the work its start-up still does after the first decision weighed on its CPU
per request (in 150,000-request drains its first 30,000 requests cost 5-20 % more than the rest), and the 10 ms
ticks of ``/proc/<pid>/stat`` added ±5 % of noise at each end. Nine alternated runs each, 2026-12-05: router
7.84 against 7.10 µs a request (medians), relay 5.17 against 5.08; ``cpu_ratio`` 0.476-0.915 against 0.614-0.850
(docs/benchmarks.md, lead39). With ``--workers n`` each worker count drains n times as many."""
ROUTER_ARGS = ("banditroute", "worker")
""":func:`measure_side`'s module arguments for the full worker (``python -m banditroute worker``)."""
RELAY_ARGS = ("banditroute.bench.relay", "{relay}")
"""The same for the raw relay (``{relay}``: its bootstrap and topic prefix, filled in by :func:`measure_side`)."""
DECIDE_ARGS = ("banditroute.bench.relay", "decide", "{relay}")
"""The same for the worker's decide loop alone."""
TRACE_ENV = "BANDITROUTE_BENCH_TRACE"
"""Debugging aid (issue #16's tail): a folder; each latency level then writes ``<side>-<level>.json`` there, with
the level's start (``start_unix_s``) and one row per measured request (``rows``): [sent, decided, arrived] in
seconds since that start. ``decided`` is the decision's record timestamp (set when the worker appended it), so
the wait before the decision and the way back can be told apart, and stalls show as runs in time."""


class Collector(TopicTail):
    """Reads the decisions topic in the background: counts arrivals and matches them to send times."""

    max_records = 20_000

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic)
        self.count = 0
        self.marks: list[tuple[float, int]] = []  # (arrival time, cumulative count) per fetched batch
        self.sent: dict[bytes, float] = {}  # key -> send time, for requests whose latency is measured
        self.latencies: list[float] = []
        self.stamps: list[int] | None = None
        """Broker timestamps (ms) of the decisions, when kept (``measure_workers``)."""
        self.trace: list[tuple[float, float, float]] | None = None
        """(send, record timestamp, arrival) of each measured request, when kept (:data:`TRACE_ENV`)."""

    def on_batch(self, batch: dict[Any, list[Any]], now: float) -> None:
        sent, latencies = self.sent, self.latencies
        n = 0
        for records in batch.values():
            for rec in records:
                if not rec.value:  # the worker's tick records
                    continue
                n += 1
                if self.stamps is not None:
                    self.stamps.append(rec.timestamp)
                t = sent.pop(rec.key, None)
                if t is not None:
                    latencies.append((now - t) * 1000.0)
                    if self.trace is not None:
                        self.trace.append((t, rec.timestamp / 1000.0, now))
        if n:
            self.count += n
            self.marks.append((now, self.count))

    async def wait_count(self, n: int, timeout_s: float, alive: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.count} of {n} decisions arrived in {timeout_s:.0f} s")
            if not alive():
                raise RuntimeError("the benchmarked process exited")
            await asyncio.sleep(0.05)

    def rate_between(self, lo: int, hi: int) -> float:
        t_lo = next((t, c) for t, c in self.marks if c >= lo)
        t_hi = next((t, c) for t, c in self.marks if c >= hi)
        return (t_hi[1] - t_lo[1]) / max(t_hi[0] - t_lo[0], 1e-3)  # tiny smoke drains: bounded


def _request(request_id: str, created_at: str) -> bytes:
    return orjson.dumps(
        {"schema_version": 1, "request_id": request_id, "task_type": "bench", "created_at": created_at}
    )


def _request_parts(created_at: str) -> tuple[bytes, bytes]:
    """The bytes of :func:`_request` before and after its request id (ids of the driver need no escaping)."""
    marker = "\x00"
    text = _request(marker, created_at)
    head, tail = text.split(b"\\u0000")
    return head, tail


async def prefill(producer: Any, topic: str, n: int, tag: str) -> None:
    created = datetime.now(UTC).isoformat()
    futures = []
    for i in range(n):
        rid = f"{tag}-{i}"
        futures.append(await producer.send(topic, key=rid.encode(), value=_request(rid, created)))
        if len(futures) >= 5000:
            await asyncio.gather(*futures)
            futures.clear()
    await asyncio.gather(*futures)


async def prefill_from(bootstrap: str, topic: str, n: int, tag: str, procs: int) -> None:
    """Produce ``n`` requests from ``procs`` processes at once (``--driver-procs``), so that one Python
    producer is not what limits a drain on a larger machine; in-process when ``procs`` is 1."""
    if procs <= 1:
        producer = load_producer(bootstrap)
        await producer.start()
        try:
            await prefill(producer, topic, n, tag)
        finally:
            await producer.stop()
        return
    shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "banditroute.bench.e2e", "prefill", bootstrap, topic, str(k), f"{tag}{i}"
        )
        for i, k in enumerate(shares)
    ]
    codes = [await child.wait() for child in children]
    if any(codes):
        raise RuntimeError(f"a prefill process failed: exit codes {codes}")


def _write_trace(folder: str, collector: Collector, tag: str, start_unix_s: float, start: float) -> None:
    """The level's rows for :data:`TRACE_ENV` (times in seconds since the level's start)."""
    trace, collector.trace = collector.trace or [], None
    rows = [(s - start, d - start_unix_s, a - start) for s, d, a in trace]
    side = collector.reader.topic.split(".")[0]
    with open(os.path.join(folder, f"{side}-{tag}.json"), "wb") as out:
        out.write(orjson.dumps({"start_unix_s": start_unix_s, "rows": rows}))


async def paced(
    producer: Any, collector: Collector, topic: str, rate: float, seconds: float, tag: str
) -> dict[str, Any]:
    """Open-loop load: send at ``rate``/s for ``seconds``; measure requests sent after the warm-up.

    Every millisecond the requests due since the last tick go to one
    :class:`~banditroute.kafka.paced_send.PacedSender` together, each stamped with the time it was due (the
    level's start + its index / ``rate``), so a late tick, a slow collector or the wait in the sender count in
    its latency instead of hiding (coordinated omission). One aiokafka ``send()`` per request cost the driver
    ~0.9 of a core at 55k/s, so the driver, not the process under test, was what fell behind.
    (``create_batch``/``send_batch`` per tick was tried before: ``send_batch`` waits while the partition's
    previous batch is queued, which would hold the loop.)"""
    sender = PacedSender(producer, topic)
    await sender.start()
    collector.latencies.clear()
    trace_dir = os.environ.get(TRACE_ENV)
    collector.trace = [] if trace_dir else None
    driver_before, busy_before = time.process_time(), machine_busy_seconds()
    start = time.perf_counter()
    wall_minus_perf = time.time() - start
    end = start + seconds
    measure_from = start + min(WARMUP_S, seconds / 4)
    sent = 0
    measured = 0
    tick = 0.001
    next_tick = start
    stamps = collector.sent
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        owed = int((now - start) * rate) - sent
        if owed > 0:
            head, tail = _request_parts(datetime.now(UTC).isoformat())
            keys = [f"{tag}-{i}".encode() for i in range(sent, sent + owed)]
            values = [head + key + tail for key in keys]
            if now >= measure_from:  # each stamped with when it was due: a late tick counts in its latency
                stamps.update(
                    zip(keys, [start + (j + 1) / rate for j in range(sent, sent + owed)], strict=True)
                )
                measured += owed
            sender.send_many(keys, values)
            sent += owed
        next_tick += tick
        await sleep_until(next_tick)
    await sender.flush()
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while collector.sent and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a dict the collector fills
        await asyncio.sleep(0.05)
    lost = len(collector.sent)
    collector.sent.clear()
    wall = time.perf_counter() - start
    driver_s, busy_after = time.process_time() - driver_before, machine_busy_seconds()
    if trace_dir and collector.trace is not None:
        _write_trace(trace_dir, collector, tag, wall_minus_perf + start, start)
    result: dict[str, Any] = percentiles(collector.latencies)
    result.update(
        {
            "target_per_s": rate,
            "achieved_send_per_s": sent / seconds,
            "measured": measured,
            "lost": lost,
            # the level's CPU budget (sending and the wait for the last decisions, in cores): this driver
            # process and the whole machine (less the driver and the process under test, ``process_cores``: the
            # broker and anything else)
            "wall_s": wall,
            "driver_cores": driver_s / wall,
            "machine_busy_cores": (
                None if busy_before is None or busy_after is None else (busy_after - busy_before) / wall
            ),
        }
    )
    return result


def _level_cpu(level: dict[str, Any], cpu_s: float, seconds: float) -> None:
    """The measured process's CPU over a paced level (``cpu_s``): per request sent, and in cores over the level's
    wall time (``wall_s``: sending and the wait for the last decisions, as ``driver_cores``)."""
    level["cpu_us_per_request"] = cpu_s / max(level["achieved_send_per_s"] * seconds, 1) * 1e6
    level["process_cores"] = cpu_s / level["wall_s"]


async def measure_side(
    bootstrap: str,
    kind: str,
    module_args: tuple[str, ...],
    *,
    requests: int,
    seconds: float,
    loads: tuple[int, ...] = LOADS,
    rates: tuple[float, ...] | Callable[[float], tuple[float, ...]] = (),
    on_started: Callable[[BenchWorker], Any] | None = None,
    driver_procs: int = 1,
) -> dict[str, Any]:
    """Sustained rate, then latency at each load level (a share of its own sustained rate) and at each
    absolute rate (``rates``, or a function of the sustained rate), for one process (router worker or relay)."""
    prefix = new_prefix(kind)
    requests_topic, decisions_topic = f"{prefix}.requests", f"{prefix}.decisions"
    await create_topics(bootstrap, [requests_topic, decisions_topic])
    if module_args[-1] == "{relay}":
        module_args = (*module_args[:-1], bootstrap, prefix)
    proc = BenchWorker(bootstrap, prefix, module_args=module_args)
    collector = Collector(bootstrap, decisions_topic)
    producer = load_producer(bootstrap)
    await producer.start()
    try:
        await collector.start()
        await prefill_from(bootstrap, requests_topic, requests, "fill", driver_procs)
        started = time.perf_counter()
        proc.start()
        if on_started is not None:
            on_started(proc)
        assert proc.pid is not None
        await collector.wait_count(1, START_TIMEOUT_S, proc.alive)
        cpu0, count0 = cpu_seconds(proc.pid), collector.count
        await collector.wait_count(requests, START_TIMEOUT_S, proc.alive)
        drained = time.perf_counter() - started
        rate = collector.rate_between(int(requests * 0.2), int(requests * 0.9))
        first = collector.marks[0][0] - started
        settle, idle_from = await wait_idle(proc.pid, window_s=IDLE_WINDOW_S)
        at_idle = cpu_seconds(proc.pid)
        cpu_to_idle = at_idle - cpu0
        await asyncio.sleep(REST_WINDOW_S)  # the process at rest: its timers and heartbeats alone
        rest_cores = (cpu_seconds(proc.pid) - at_idle) / REST_WINDOW_S
        # as ``busy``: without the idle window's resting CPU (its timers), but with any work still in it
        cpu_drain = cpu_to_idle - (rest_cores * IDLE_WINDOW_S if idle_from is not None else 0.0)
        busy = drained + settle - first - IDLE_WINDOW_S
        processed = requests / busy if busy > 0 else rate
        sustained = min(rate, processed)
        out: dict[str, Any] = {
            "per_s": sustained,
            "decide_per_s": rate,
            "prefilled": requests,
            "first_decision_s": first,
            "drain_wall_s": drained,
            "settle_after_drain_s": settle,
            "processed_per_s": processed,
            "cpu_us_per_request": cpu_drain / max(requests - count0, 1) * 1e6,
            "cpu_us_per_request_to_idle": cpu_to_idle / max(requests - count0, 1) * 1e6,
            "idle_window_cpu_ms": None if idle_from is None else (at_idle - idle_from) * 1000.0,
            "rest_cores": rest_cores,
            "idle_after_drain": idle_from is not None,
            "latency_ms": {},
        }
        for load in loads:
            cpu_before = cpu_seconds(proc.pid)
            level = await paced(
                producer, collector, requests_topic, sustained * load / 100.0, seconds, f"l{load}"
            )
            _level_cpu(level, cpu_seconds(proc.pid) - cpu_before, seconds)
            out["latency_ms"][str(load)] = level
        out["latency_at_ms"] = {}
        for rate in rates(sustained) if callable(rates) else rates:
            cpu_before = cpu_seconds(proc.pid)
            level = await paced(producer, collector, requests_topic, rate, seconds, f"r{int(rate)}")
            _level_cpu(level, cpu_seconds(proc.pid) - cpu_before, seconds)
            out["latency_at_ms"][str(int(rate))] = level
        out["worker_log_tail"] = proc.log_tail(600) if kind == "router" and not proc.alive() else None
        return out
    finally:
        proc.stop()
        await collector.stop()
        await producer.stop()
        await delete_topics(bootstrap, prefix)


FIXED_RATES = (1000.0, 5000.0)
"""Absolute rates (requests/s) at which the relay's and the router's latency are compared; the third is half of
the router's sustained rate."""


def _added(router: dict[str, Any], relay: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Router minus relay latency at each rate both were measured at."""
    return {
        rate: {q: router[rate][q] - relay[rate][q] for q in ("p50", "p99")}
        for rate in router
        if rate in relay
    }


def _cpu_ratio_at(router: dict[str, Any], relay: dict[str, Any]) -> dict[str, float]:
    """Relay over router CPU per request at each paced rate both were measured at (``cpu_ratio``'s form)."""
    return {
        rate: relay[rate]["cpu_us_per_request"] / router[rate]["cpu_us_per_request"]
        for rate in router
        if rate in relay and router[rate].get("cpu_us_per_request") and relay[rate].get("cpu_us_per_request")
    }


async def run_e2e_bench(
    bootstrap: str,
    *,
    requests: int = DRAIN_REQUESTS,
    seconds: float = 5.0,
    loads: tuple[int, ...] = (50,),
    workers: tuple[int, ...] = (),
    worker_partitions: int = 8,
    driver_procs: int = 1,
    on_started: Callable[[BenchWorker], Any] | None = None,
) -> dict[str, Any]:
    """Router, then the relay at the same absolute rates, the decide loop alone, and optionally the router
    with several worker processes; see the module docstring."""
    router = await measure_side(
        bootstrap,
        "router",
        ROUTER_ARGS,
        requests=requests,
        seconds=seconds,
        loads=loads,
        rates=lambda sustained: (*FIXED_RATES, round(sustained / 2)),
        on_started=on_started,
        driver_procs=driver_procs,
    )
    rates = tuple(float(r) for r in router["latency_at_ms"])
    relay = await measure_side(
        bootstrap,
        "relay",
        RELAY_ARGS,
        requests=requests * RELAY_FACTOR,
        seconds=seconds,
        loads=loads,
        rates=rates,
        driver_procs=driver_procs,
    )
    decide = await measure_side(
        bootstrap,
        "decide",
        DECIDE_ARGS,
        requests=requests * RELAY_FACTOR,
        seconds=seconds,
        loads=(),
        driver_procs=driver_procs,
    )
    half = str(round(router["per_s"] / 2))
    scaled = {
        str(n): await measure_workers(
            bootstrap, n, requests=requests * n, partitions=worker_partitions, driver_procs=driver_procs
        )
        for n in workers
    }
    return {
        "router_per_s": router["per_s"],
        "relay_per_s": relay["per_s"],
        "ratio": router["per_s"] / relay["per_s"] if relay["per_s"] else float("nan"),
        "cpu_ratio": relay["cpu_us_per_request"] / router["cpu_us_per_request"]
        if router["cpu_us_per_request"]
        else float("nan"),
        "added_ms": _added(router["latency_at_ms"], relay["latency_at_ms"]),
        "added_ms_half_sustained_rate": half,
        "cpu_ratio_at": _cpu_ratio_at(router["latency_at_ms"], relay["latency_at_ms"]),
        "workers": {n: r["per_s"] for n, r in scaled.items()},
        "workers_detail": scaled,
        "latency_at_ms": router["latency_at_ms"],
        "relay_latency_at_ms": relay["latency_at_ms"],
        "latency_ms": router["latency_ms"],
        "relay_latency_ms": relay["latency_ms"],
        "router_decide_per_s": router["decide_per_s"],
        "router": {
            k: v for k, v in router.items() if k not in ("latency_ms", "latency_at_ms", "worker_log_tail")
        },
        "relay": {
            k: v for k, v in relay.items() if k not in ("latency_ms", "latency_at_ms", "worker_log_tail")
        },
        "decide_only_per_s": decide["per_s"],
        "decide_only_ratio": decide["per_s"] / relay["per_s"] if relay["per_s"] else float("nan"),
        "decide_only": {k: v for k, v in decide.items() if k not in ("latency_ms", "worker_log_tail")},
        "method": {
            "partitions": PARTITIONS,
            "worker": "banditroute worker subprocess, web disabled, own topic prefix and group",
            "relay": "python -m banditroute.bench.relay subprocess (same loop shape and client settings)",
            "decide_only": "python -m banditroute.bench.relay decide: DecideService alone, priors only",
            "rate_window": "decide: 20%..90% of the pre-filled drain; sustained: min(decide, drain+settle)",
            "latency": "when the request was due (open loop) -> decision fetched by the bench consumer, after a "
            "warm-up",
            "added_ms": "router minus relay p50/p99 at the same absolute rates (1000/s, 5000/s, half the "
            "router's sustained rate), each side alone on the machine in turn",
            "cpu_ratio": "relay CPU per request / router CPU per request (drain); 0.5 = twice the relay's",
            "cpu_ratio_at": "the same at each paced rate of added_ms (each process's CPU over the level)",
            "driver_cores": "per level: the bench driver's own CPU over the level (wall_s), in cores",
            "process_cores": "per level: the measured process's CPU over the same wall time, in cores",
            "machine_busy_cores": "per level: every core's work over the same wall time (/proc/stat), in cores; "
            "less driver_cores and process_cores: the broker's and anything else's",
            "workers": f"n worker processes on {worker_partitions} partitions; once every worker is ready the "
            "driver produces the requests as fast as it can; decisions/s between the 20% and 90% marks of the "
            "decisions' own timestamps",
            "seconds_per_load": seconds,
            "driver_procs": driver_procs,
        },
        "machine": machine(bootstrap),
    }


SUMMARY_KEYS = ("ratio", "cpu_ratio", "router_per_s", "relay_per_s", "decide_only_ratio")
"""Figures of one run that :func:`summarise_runs` gives the median and range of."""


def run_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of one :func:`run_e2e_bench` result that repeated runs are compared by."""
    out: dict[str, Any] = {key: result[key] for key in SUMMARY_KEYS}
    out["router_cpu_us_per_request"] = result["router"]["cpu_us_per_request"]
    out["relay_cpu_us_per_request"] = result["relay"]["cpu_us_per_request"]
    # with the idle window that ended each drain (``cpu_us_per_request_to_idle``), where the side reports it
    router_to_idle = result["router"].get("cpu_us_per_request_to_idle")
    relay_to_idle = result["relay"].get("cpu_us_per_request_to_idle")
    out["router_cpu_us_per_request_to_idle"] = router_to_idle
    out["relay_cpu_us_per_request_to_idle"] = relay_to_idle
    out["cpu_ratio_to_idle"] = relay_to_idle / router_to_idle if router_to_idle and relay_to_idle else None
    for side in ("router", "relay"):  # what the idle window held, and the resting rate taken out of it
        out[f"{side}_idle_window_cpu_ms"] = result[side].get("idle_window_cpu_ms")
        out[f"{side}_rest_cores"] = result[side].get("rest_cores")
    out["added_ms"] = result["added_ms"]
    out["added_ms_half_sustained_rate"] = result["added_ms_half_sustained_rate"]
    out["cpu_ratio_at"] = result["cpu_ratio_at"]
    # the raw levels behind added_ms: each side's p50/p95/p99, rates achieved, losses and CPU per request
    out["latency_at_ms"] = result["latency_at_ms"]
    out["relay_latency_at_ms"] = result["relay_latency_at_ms"]
    return out


def _levels(run: dict[str, Any], key: str) -> dict[str, Any]:
    """One run's ``key`` (``added_ms`` or ``cpu_ratio_at``) at 1,000/s, 5,000/s and half its own sustained
    rate (None: not measured)."""
    at = run[key]
    levels = {str(int(rate)): at.get(str(int(rate))) for rate in FIXED_RATES}
    levels["half"] = at.get(run["added_ms_half_sustained_rate"])
    return levels


def summarise_runs(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeated :func:`run_e2e_bench` results as one: the median of each figure (``ratio``, ``cpu_ratio``, the
    rates, and ``added_ms`` at 1,000/s, 5,000/s and at half the sustained rate, which each run sets from its own
    rate: keyed by half the median sustained rate), ``spread`` (min and max of each), ``runs`` (each run's
    figures and raw latency levels, in order) and ``met`` (in how many runs each of issue #16's targets held).
    ``workers`` and the machine come from the first run, the only one that measures them."""
    if not results:
        raise ValueError("no runs to summarise")
    runs = [run_summary(r) for r in results]
    out: dict[str, Any] = {key: float(np.median([r[key] for r in runs])) for key in SUMMARY_KEYS}
    out["spread"] = {key: _range([r[key] for r in runs]) for key in SUMMARY_KEYS}
    half = str(round(out["router_per_s"] / 2))
    added: dict[str, dict[str, float]] = {}
    added_spread: dict[str, dict[str, dict[str, float]]] = {}
    met: dict[str, int] = {
        "ratio >= 0.5": sum(r["ratio"] >= 0.5 for r in runs),
        "cpu_ratio >= 0.5": sum(r["cpu_ratio"] >= 0.5 for r in runs),
    }
    for label, where, levels in _by_level([_levels(r, "added_ms") for r in runs], half):
        added[label] = {q: float(np.median([level[q] for level in levels])) for q in ("p50", "p99")}
        added_spread[label] = {q: _range([level[q] for level in levels]) for q in ("p50", "p99")}
        met[f"added p99 <= 10 ms at {where}"] = sum(level["p99"] <= 10.0 for level in levels)
    cpu_at: dict[str, float] = {}
    cpu_at_spread: dict[str, dict[str, float]] = {}
    for label, where, ratios in _by_level([_levels(r, "cpu_ratio_at") for r in runs], half):
        cpu_at[label] = float(np.median(ratios))
        cpu_at_spread[label] = _range(ratios)
        met[f"cpu_ratio >= 0.5 at {where}"] = sum(ratio >= 0.5 for ratio in ratios)
    out["added_ms"] = added
    out["added_ms_half_sustained_rate"] = half
    out["cpu_ratio_at"] = cpu_at
    out["spread"]["added_ms"] = added_spread
    out["spread"]["cpu_ratio_at"] = cpu_at_spread
    out["met"] = {**met, "of": len(runs)}
    out["runs"] = runs
    out["workers"] = results[0]["workers"]
    out["workers_detail"] = results[0]["workers_detail"]
    out["method"] = {
        **results[0]["method"],
        "repeat": f"{len(runs)} runs in a row, each router then relay; the figures are medians over the runs",
    }
    out["machine"] = results[0]["machine"]
    return out


def _by_level(per_run: list[dict[str, Any]], half: str) -> list[tuple[str, str, list[Any]]]:
    """Each level's values over the runs that measured it (levels none measured are left out), with its key in
    the summary (the half-sustained level under ``half``) and its name in ``met``."""
    out = []
    for name in per_run[0]:
        values = [run[name] for run in per_run if run[name] is not None]
        if values:
            out.append(
                (
                    half if name == "half" else name,
                    "half sustained" if name == "half" else f"{name}/s",
                    values,
                )
            )
    return out


def _range(values: list[float]) -> dict[str, float]:
    return {"min": float(min(values)), "max": float(max(values))}


async def run_e2e_repeated(
    bootstrap: str, *, repeat: int, workers: tuple[int, ...] = (), **kwargs: Any
) -> dict[str, Any]:
    """:func:`run_e2e_bench` ``repeat`` times in a row (``workers`` measured in the first run only); one run
    returns its result unchanged, several :func:`summarise_runs` of them."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    results = [
        await run_e2e_bench(bootstrap, workers=workers if i == 0 else (), **kwargs) for i in range(repeat)
    ]
    return results[0] if repeat == 1 else summarise_runs(results)


async def measure_workers(
    bootstrap: str, n: int, *, requests: int, partitions: int, driver_procs: int = 1
) -> dict[str, Any]:
    """Sustained decisions/s of ``n`` worker processes sharing ``partitions`` partitions."""
    prefix = new_prefix(f"w{n}")
    requests_topic, decisions_topic = f"{prefix}.requests", f"{prefix}.decisions"
    await create_topics(bootstrap, [requests_topic, decisions_topic], partitions=partitions)
    env = {"BANDITROUTE_PARTITIONS": str(partitions)}
    procs = [BenchWorker(bootstrap, prefix, extra_env=env) for _ in range(n)]
    collector = Collector(bootstrap, decisions_topic)
    collector.stamps = []
    try:
        await collector.start()
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all("worker ready" in p.log_tail(1_000_000) for p in procs):
            if time.monotonic() > deadline or not all(p.alive() for p in procs):
                raise RuntimeError(f"{n} workers did not all get ready")
            await asyncio.sleep(0.2)
        # every worker holds its partitions now: the requests are produced faster than they are decided
        started = time.perf_counter()
        await prefill_from(bootstrap, requests_topic, requests, "fill", driver_procs)
        produced_s = time.perf_counter() - started
        await collector.wait_count(requests, START_TIMEOUT_S, lambda: all(p.alive() for p in procs))
        drain_s = time.perf_counter() - started
        # the decisions' own timestamps (set by the workers' producers): the driver, busy producing, may
        # fetch them in bursts, so arrival times at the bench would measure the driver
        stamps = sorted(collector.stamps or [])
        lo, hi = stamps[int(len(stamps) * 0.2)], stamps[min(int(len(stamps) * 0.9), len(stamps) - 1)]
        span_s = (hi - lo) / 1000.0
        return {
            "per_s": (len(stamps) * 0.7) / span_s if span_s > 0.05 else requests / drain_s,  # tiny smoke runs
            "produced_per_s": requests / max(produced_s, 1e-3),
            "drain_s": drain_s,
            "partitions": partitions,
            "cpu_s": [cpu_seconds(p.pid) for p in procs if p.pid is not None],
        }
    finally:
        for proc in procs:
            proc.stop()
        await collector.stop()
        await delete_topics(bootstrap, prefix)


if (
    __name__ == "__main__"
):  # ``python -m banditroute.bench.e2e prefill BOOTSTRAP TOPIC N TAG`` (--driver-procs)
    if len(sys.argv) != 6 or sys.argv[1] != "prefill":
        sys.exit("usage: python -m banditroute.bench.e2e prefill BOOTSTRAP TOPIC N TAG")
    asyncio.run(prefill_from(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], 1))
