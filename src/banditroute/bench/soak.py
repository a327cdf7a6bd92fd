"""Soak: run a worker at a fraction of its measured maximum rate for minutes and watch it stay healthy.

The soak starts its own worker (``python -m banditroute worker``) on fresh topics of the given broker, with the
web API on a free localhost port, then:

1. measures the closed-loop maximum rate: a burst of requests produced as fast as possible, every decision
   answered with feedback at once, timed until every outcome is learned;
2. runs an open loop at ``rate_fraction`` of that rate for ``minutes``: requests paced every 50 ms, 90% of the
   decisions answered with feedback after a short random delay (the rest time out in the join);
3. samples the worker's RSS, its join table size (``/api/stats`` ``join_in_flight``), the consumer lag and the
   decision rate every 5 s, and reports RSS once a minute;
4. stops producing and waits for the consumer lag of both worker groups to return to zero, then for every
   feedback sent to be learnt.

Checks: RSS growth after warm-up <= ``max_rss_growth`` (10%); the least-squares slope of RSS over the last
15 minutes (the last half of shorter runs) times that window <= ``max_tail_growth`` (1%) of the fitted RSS at
the window's start; the join table never above what the reward wait window allows (rate x (wait_s +
keep_joined_s) plus slack); lag back to zero; every feedback sent learnt exactly once (the learned counter
plus the feedback dead-lettered as late, past its reward wait window, equals the feedback count: none lost,
none learnt twice); the worker alive throughout.
The result and its plot are in :mod:`banditroute.bench.soak_report`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from banditroute.bench.common import BenchWorker
from banditroute.bench.soak_report import TAIL_MINUTES, Sample, SoakResult, linear_fit, plot_soak, tail_trend
from banditroute.kafka.admin import wait_for_topics
from banditroute.kafka.lag import LagProbe
from banditroute.kafka.local import free_port
from banditroute.kafka.outbox import Outbox
from banditroute.kafka.topic_reader import TopicReader

WAIT_S = 20.0
KEEP_JOINED_S = 20.0
POLICY_YAML = f"""defaults:
  lam: 10.0
  join: {{wait_s: {WAIT_S:g}, keep_joined_s: {KEEP_JOINED_S:g}}}
"""
TRUTH = {"premium": 0.8, "balanced": 0.8, "budget": 0.45}
TASKS = ("chat", "code", "summarise", "extract")
SAMPLE_EVERY_S = 5.0


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Soak:
    """One soak run; ``run()`` returns a :class:`SoakResult`."""

    def __init__(
        self,
        bootstrap: str,
        *,
        minutes: float,
        rate_fraction: float,
        burst: int = 6000,
        max_rss_growth: float = 0.10,
        max_tail_growth: float = 0.01,
        workdir: Path | None = None,
        log: Any = print,
    ) -> None:
        self.bootstrap = bootstrap
        self.minutes = minutes
        self.rate_fraction = rate_fraction
        self.burst = burst
        self.max_rss_growth = max_rss_growth
        self.max_tail_growth = max_tail_growth
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="banditroute-soak-"))
        self.log = log
        self.prefix = f"soak{uuid.uuid4().hex[:8]}"
        self.web_port = free_port()
        self.worker = BenchWorker(
            bootstrap,
            self.prefix,
            folder=self.workdir,
            policy=POLICY_YAML,
            extra_env={
                "BANDITROUTE_WEB_ENABLED": "true",
                "BANDITROUTE_WEB_PORT": str(self.web_port),
                "BANDITROUTE_STATE_PARTITIONS": "4",
                "BANDITROUTE_LOG_LEVEL": "warning",
            },
        )
        self.rng = random.Random(1)
        self.decided = 0
        self.feedback_sent = 0
        self.sent = 0
        self._answer = True

    # -- the worker -------------------------------------------------------------------------------------
    def start_worker(self) -> None:
        self.worker.start()

    def stop_worker(self) -> int | None:
        self.worker.stop()
        return self.worker.proc.returncode if self.worker.proc is not None else None

    def alive(self) -> bool:
        return self.worker.alive()

    def stats(self) -> dict[str, Any] | None:
        try:
            url = f"http://127.0.0.1:{self.web_port}/api/stats"
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - our own localhost worker
                data: dict[str, Any] = json.loads(resp.read())
                return data
        except (OSError, ValueError):  # not up yet, or gone: the caller decides
            return None

    async def lag(self) -> int:
        """Committed lag of the worker's groups (decide: requests; the join's readers: decisions, feedback; the
        learner's reader: outcomes)."""
        groups = {
            f"{self.prefix}.decide": [f"{self.prefix}.requests"],
            f"{self.prefix}.join-decisions": [f"{self.prefix}.decisions"],
            f"{self.prefix}.join-feedback": [f"{self.prefix}.feedback"],
            f"{self.prefix}.learn": [f"{self.prefix}.outcomes"],
        }
        async with LagProbe(self.bootstrap) as probe:
            return sum((await probe.lag(groups)).values())

    async def _wait_topics(self, names: tuple[str, ...], timeout_s: float) -> None:
        try:
            await wait_for_topics(
                self.bootstrap, None, [f"{self.prefix}.{n}" for n in names], timeout_s, self.alive
            )
        except (TimeoutError, ChildProcessError) as exc:
            raise RuntimeError(
                f"the worker did not create its topics ({exc}); see {self.workdir / 'worker.log'}"
            ) from exc

    async def _wait_web(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await asyncio.to_thread(self.stats) is not None:
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"the worker's web API did not answer; see {self.workdir / 'worker.log'}")

    # -- traffic ----------------------------------------------------------------------------------------
    def _request(self) -> tuple[bytes, bytes]:
        rid = uuid.uuid4().hex
        doc = {
            "schema_version": 1,
            "request_id": rid,
            "task_type": TASKS[self.sent % len(TASKS)],
            "created_at": datetime.now(UTC).isoformat(),
        }
        self.sent += 1
        return rid.encode(), orjson.dumps(doc)

    def _feedback(self, decision: dict[str, Any]) -> bytes:
        model = decision["model"]
        return orjson.dumps(
            {
                "schema_version": 1,
                "request_id": decision["request_id"],
                "decision_id": decision["decision_id"],
                "model": model,
                "quality": float(self.rng.random() < TRUTH[model]),
                "cost_usd": 0.001,
                "latency_ms": 100.0,
                "observed_at": datetime.now(UTC).isoformat(),
                "idempotency_key": f"{decision['request_id']}:{model}",
            }
        )

    async def _answer_decisions(
        self, producer: Any, answer_share: float, delay_s: float, ready: asyncio.Event
    ) -> None:
        """Read decisions from the end; answer ``answer_share`` of them after up to ``delay_s`` seconds."""
        decisions = await TopicReader(self.bootstrap, f"{self.prefix}.decisions").start()
        ready.set()
        due: list[tuple[float, bytes, bytes]] = []
        try:
            while True:
                batch = await decisions.fetch(timeout_ms=50, max_records=5000)
                now = time.monotonic()
                for records in batch.values():
                    for rec in records:
                        if not rec.value:
                            continue
                        self.decided += 1
                        d = orjson.loads(rec.value)
                        if d.get("model") is None or self.rng.random() >= answer_share:
                            continue
                        due.append((now + self.rng.uniform(0, delay_s), rec.key, self._feedback(d)))
                if due:
                    now_due = [x for x in due if x[0] <= now]
                    due = [x for x in due if x[0] > now]
                    for _, key, value in now_due:
                        await producer.send(f"{self.prefix}.feedback", key=key, value=value)
                        self.feedback_sent += 1
        finally:
            await decisions.stop()

    async def _learned(self) -> int:
        stats = await asyncio.to_thread(self.stats)
        return int(stats.get("learned", 0)) if stats else -1

    async def _late(self) -> int:
        stats = await asyncio.to_thread(self.stats)
        return int((stats.get("dead_letters") or {}).get("late_feedback", 0)) if stats else 0

    async def measure_max_rate(self, producer: Any) -> float:
        """Closed loop: a burst of requests, all answered at once; requests per second until all are learned."""
        ready = asyncio.Event()
        answer = asyncio.create_task(self._answer_decisions(producer, 1.0, 0.0, ready))
        try:
            await ready.wait()
            base_learned = max(await self._learned(), 0)
            t0 = time.monotonic()
            for _ in range(self.burst):
                key, value = self._request()
                await producer.send(f"{self.prefix}.requests", key=key, value=value)
            await producer.drain()
            deadline = t0 + 300
            while time.monotonic() < deadline:
                if await self._learned() - base_learned >= self.burst:
                    break
                await asyncio.sleep(0.1)
            elapsed = time.monotonic() - t0
        finally:
            answer.cancel()
            with contextlib.suppress(BaseException):
                await answer
        return self.burst / elapsed

    async def run_async(self) -> SoakResult:
        self.start_worker()
        assert self.worker.pid is not None
        producer = Outbox(self.bootstrap, {}, linger_ms=5)
        try:
            await self._wait_topics(("requests", "decisions", "feedback"), 120.0)
            await self._wait_web(120.0)
            # warm-up burst (untimed), then the timed one
            small, self.burst = self.burst, max(500, self.burst // 10)
            await self.measure_max_rate(producer)
            self.burst = small
            max_rate = await self.measure_max_rate(producer)
            rate = max_rate * self.rate_fraction
            self.log(
                f"max closed-loop rate {max_rate:.0f}/s; soaking at {rate:.0f}/s for {self.minutes:g} min"
            )
            result = SoakResult(max_rate, rate, self.minutes)
            sent0, decided0, fb0 = self.sent, self.decided, self.feedback_sent
            learned0 = max(await self._learned(), 0)
            late0 = await self._late()
            letters0 = dict(((await asyncio.to_thread(self.stats)) or {}).get("dead_letters") or {})
            result.join_bound = int(rate * (WAIT_S + KEEP_JOINED_S + 5.0) * 1.25) + 1000
            ready = asyncio.Event()
            answer = asyncio.create_task(self._answer_decisions(producer, 0.9, 2.0, ready))
            await ready.wait()
            duration = self.minutes * 60.0
            warm_s = min(WAIT_S + KEEP_JOINED_S + 30.0, duration / 3)
            t0 = time.monotonic()
            next_sample = t0
            next_minute = 60.0
            credit = 0.0
            last = t0
            prev: tuple[float, int] = (0.0, 0)
            while (now := time.monotonic()) - t0 < duration:
                credit += (now - last) * rate
                last = now
                while credit >= 1.0:
                    key, value = self._request()
                    await producer.send(f"{self.prefix}.requests", key=key, value=value)
                    credit -= 1.0
                if now >= next_sample:
                    next_sample = now + SAMPLE_EVERY_S
                    stats = await asyncio.to_thread(self.stats) or {}
                    sample = Sample(
                        now - t0,
                        _rss_kb(self.worker.pid),
                        int(stats.get("join_in_flight", -1)),
                        await self.lag(),
                        self.decided - decided0,
                        int(stats.get("learned", 0)) - learned0,
                    )
                    sample.rate_per_s = (sample.decided - prev[1]) / max(sample.t_s - prev[0], 1e-9)
                    prev = (sample.t_s, sample.decided)
                    result.samples.append(sample)
                    if sample.t_s >= warm_s and not result.rss_baseline_kb:
                        result.rss_baseline_kb = sample.rss_kb
                    if sample.t_s >= next_minute:
                        next_minute += 60.0
                        result.rss_by_minute_kb.append(sample.rss_kb)
                        self.log(
                            f"minute {len(result.rss_by_minute_kb):3d}: rss={sample.rss_kb / 1024:.1f} MiB "
                            f"join={sample.join_in_flight} lag={sample.lag} rate={sample.rate_per_s:.0f}/s "
                            f"decided={sample.decided} learned={sample.learned}"
                        )
                    if not self.alive():
                        break
                await asyncio.sleep(0.05)
            await producer.drain()
            # drain: lag back to zero
            t_stop = time.monotonic()
            deadline = t_stop + 120
            while time.monotonic() < deadline:
                if await self.lag() == 0:
                    result.drain_s = time.monotonic() - t_stop
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(3.0)  # the last feedback answers
            answer.cancel()
            with contextlib.suppress(BaseException):
                await answer
            await producer.drain()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the last feedback learnt (or the check below fails)
                done = await self._learned() - learned0 + await self._late() - late0
                if done >= self.feedback_sent - fb0:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(2.0)  # anything learnt twice would show by now
            final = await asyncio.to_thread(self.stats) or {}
            result.sent = self.sent - sent0
            result.decided = self.decided - decided0
            result.feedback_sent = self.feedback_sent - fb0
            result.learned = int(final.get("learned", 0)) - learned0
            result.late_feedback = int((final.get("dead_letters") or {}).get("late_feedback", 0)) - late0
            result.dead_letters = {
                reason: int(n) - int(letters0.get(reason, 0))
                for reason, n in (final.get("dead_letters") or {}).items()
                if int(n) - int(letters0.get(reason, 0))
            }
            steady = [s for s in result.samples if s.t_s >= warm_s] or result.samples
            tail = steady[-max(1, len(steady) // 5) :]
            result.rss_final_kb = sorted(s.rss_kb for s in tail)[len(tail) // 2]
            result.rss_baseline_kb = result.rss_baseline_kb or steady[0].rss_kb
            result.rss_max_kb = max(s.rss_kb for s in result.samples)
            result.rss_growth = result.rss_final_kb / max(result.rss_baseline_kb, 1) - 1.0
            result.rss_tail = tail_trend(result.samples, self.minutes)
            result.join_max = max(s.join_in_flight for s in result.samples)
            result.lag_max = max(s.lag for s in result.samples)
            result.worker_alive = self.alive()
            result.checks = {
                "rss_growth_within_limit": result.rss_growth <= self.max_rss_growth,
                "rss_tail_trend_within_limit": result.rss_tail["growth"] <= self.max_tail_growth,
                "feedback_learned_exactly_once": result.learned + result.late_feedback
                == result.feedback_sent,
                "join_table_bounded": 0 <= result.join_max <= result.join_bound,
                "lag_back_to_zero": result.drain_s is not None,
                "worker_alive": result.worker_alive,
                "all_decided": result.decided >= result.sent,
            }
            return result
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()
            self.stop_worker()

    def run(self) -> SoakResult:
        return asyncio.run(self.run_async())


__all__ = [
    "TAIL_MINUTES",
    "Sample",
    "Soak",
    "SoakResult",
    "linear_fit",
    "plot_soak",
    "tail_trend",
]
