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
:func:`plot_soak` draws RSS (with the fit), lag and rate over time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

MODELS_YAML = """models:
  - {name: premium, cost_per_call_usd: 0.02, latency_ms: 900}
  - {name: balanced, cost_per_call_usd: 0.002, latency_ms: 500}
  - {name: budget, cost_per_call_usd: 0.0005, latency_ms: 300}
"""
WAIT_S = 20.0
KEEP_JOINED_S = 20.0
POLICY_YAML = f"""defaults:
  lam: 10.0
  join: {{wait_s: {WAIT_S:g}, keep_joined_s: {KEEP_JOINED_S:g}}}
"""
TRUTH = {"premium": 0.8, "balanced": 0.8, "budget": 0.45}
TASKS = ("chat", "code", "summarise", "extract")
SAMPLE_EVERY_S = 5.0
TAIL_MINUTES = 15.0
"""The RSS trend is fitted over the last this many minutes (the last half of a shorter soak)."""


@dataclass
class Sample:
    t_s: float
    rss_kb: int
    join_in_flight: int
    lag: int
    decided: int
    learned: int
    rate_per_s: float = 0.0


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``(slope, intercept)`` of ``ys`` over ``xs`` (slope 0 for fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0, (ys[0] if ys else 0.0)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0, my
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def tail_trend(samples: list[Sample], minutes: float) -> dict[str, float]:
    """RSS trend over the last ``TAIL_MINUTES`` (or the last half of a shorter run): the fitted slope in KiB per
    minute and the growth it implies over that window, relative to the fitted RSS at the window's start."""
    end = samples[-1].t_s if samples else 0.0
    window_min = min(TAIL_MINUTES, minutes / 2.0)
    start = end - window_min * 60.0
    tail = [s for s in samples if s.t_s >= start]
    slope_per_s, intercept = linear_fit([s.t_s for s in tail], [float(s.rss_kb) for s in tail])
    at_start = intercept + slope_per_s * start
    return {
        "window_minutes": window_min,
        "points": float(len(tail)),
        "slope_kb_per_min": slope_per_s * 60.0,
        "rss_at_window_start_kb": at_start,
        "growth": slope_per_s * window_min * 60.0 / at_start if at_start > 0 else 0.0,
    }


@dataclass
class SoakResult:
    max_rate_per_s: float
    target_rate_per_s: float
    minutes: float
    sent: int = 0
    decided: int = 0
    feedback_sent: int = 0
    learned: int = 0
    late_feedback: int = 0
    """Feedback that arrived after its decision's reward wait window (dead-lettered, not learnt, by design)."""
    dead_letters: dict[str, int] = field(default_factory=dict)
    """Dead letters of the soak phase, by reason (the worker's counters, end minus start)."""
    rss_baseline_kb: int = 0
    rss_final_kb: int = 0
    rss_max_kb: int = 0
    rss_growth: float = 0.0
    rss_tail: dict[str, float] = field(default_factory=dict)
    """The fitted RSS trend over the last minutes (see :func:`tail_trend`)."""
    rss_by_minute_kb: list[int] = field(default_factory=list)
    join_max: int = 0
    join_bound: int = 0
    lag_max: int = 0
    drain_s: float | None = None
    worker_alive: bool = True
    checks: dict[str, bool] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(self.checks.values())

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("samples")
        out["ok"] = self.ok
        out["samples_n"] = len(self.samples)
        return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
        self.web_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.rng = random.Random(1)
        self.decided = 0
        self.feedback_sent = 0
        self.sent = 0
        self._answer = True

    # -- the worker -------------------------------------------------------------------------------------
    def start_worker(self) -> None:
        config = self.workdir / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "models.yaml").write_text(MODELS_YAML, encoding="utf-8")
        (config / "policy.yaml").write_text(POLICY_YAML, encoding="utf-8")
        (config / "rules.yaml").write_text("rules: []\n", encoding="utf-8")
        env = {
            **os.environ,
            "BANDITROUTE_KAFKA_BOOTSTRAP": self.bootstrap,
            "BANDITROUTE_TOPIC_PREFIX": self.prefix,
            "BANDITROUTE_APP_ID": self.prefix,
            "BANDITROUTE_CONFIG_DIR": str(config),
            "BANDITROUTE_DATA_DIR": str(self.workdir / "data"),
            "BANDITROUTE_WEB_ENABLED": "true",
            "BANDITROUTE_WEB_PORT": str(self.web_port),
            "BANDITROUTE_LOG_LEVEL": "warning",
        }
        log = open(self.workdir / "worker.log", "ab")  # noqa: SIM115 - the child's for its lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "banditroute", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def stop_worker(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stats(self) -> dict[str, Any] | None:
        try:
            url = f"http://127.0.0.1:{self.web_port}/api/stats"
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - our own localhost worker
                data: dict[str, Any] = json.loads(resp.read())
                return data
        except Exception:
            return None

    async def lag(self) -> int:
        """Committed lag of the worker's groups (decide: requests; join's reader: decisions; faust: feedback,
        outcomes)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        groups = {
            f"{self.prefix}.decide": [f"{self.prefix}.requests"],
            f"{self.prefix}.join-decisions": [f"{self.prefix}.decisions"],
            self.prefix: [f"{self.prefix}.{t}" for t in ("feedback", "outcomes")],
        }
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await admin.start()
        await consumer.start()
        try:
            total = 0
            for group, topics in groups.items():
                tps = [
                    TopicPartition(t, p)
                    for t in topics
                    for p in sorted(consumer.partitions_for_topic(t) or await self._parts(consumer, t))
                ]
                committed = await admin.list_consumer_group_offsets(group, partitions=tps)
                ends = await consumer.end_offsets(tps)
                for tp in tps:
                    meta = committed.get(tp)
                    done = meta.offset if meta is not None and meta.offset >= 0 else 0
                    total += max(int(ends[tp]) - done, 0)
            return total
        finally:
            await consumer.stop()
            await admin.close()

    async def _wait_topics(self, names: tuple[str, ...], timeout_s: float) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        wanted = {f"{self.prefix}.{n}" for n in names}
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            deadline = time.monotonic() + timeout_s
            while not wanted <= set(await admin.list_topics()):
                if time.monotonic() > deadline or not self.alive():
                    raise RuntimeError(
                        f"the worker did not create its topics; see {self.workdir / 'worker.log'}"
                    )
                await asyncio.sleep(0.2)
        finally:
            await admin.close()

    async def _wait_web(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await asyncio.to_thread(self.stats) is not None:
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"the worker's web API did not answer; see {self.workdir / 'worker.log'}")

    @staticmethod
    async def _parts(consumer: Any, topic: str) -> set[int]:
        from banditroute.kafka.topics import partitions_of

        return await partitions_of(consumer, topic)

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
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        topic = f"{self.prefix}.decisions"
        tps = [TopicPartition(topic, p) for p in sorted(await self._parts(consumer, topic))]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        ready.set()
        due: list[tuple[float, bytes, bytes]] = []
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=50, max_records=5000)
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
            await consumer.stop()

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
            await producer.flush()
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
        from aiokafka import AIOKafkaProducer

        self.start_worker()
        assert self.proc is not None
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks="all")
        try:
            await self._wait_topics(("requests", "decisions", "feedback"), 120.0)
            await self._wait_web(120.0)
            await producer.start()
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
                        _rss_kb(self.proc.pid),
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
            await producer.flush()
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
            await producer.flush()
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


def plot_soak(result: SoakResult, path: Path) -> Path:
    """RSS (with the fitted trend of the tail window), consumer lag and decision rate over time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.t_s / 60.0 for s in result.samples]
    fig, (rss, lag, rate) = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    rss.plot(minutes, [s.rss_kb / 1024.0 for s in result.samples], lw=1, label="RSS")
    tail = result.rss_tail
    if tail and result.samples:
        end = result.samples[-1].t_s
        start = end - tail["window_minutes"] * 60.0
        y0 = tail["rss_at_window_start_kb"]
        y1 = y0 + tail["slope_kb_per_min"] * tail["window_minutes"]
        rss.plot(
            [start / 60.0, end / 60.0],
            [y0 / 1024.0, y1 / 1024.0],
            "r--",
            lw=1.5,
            label=f"fit of the last {tail['window_minutes']:g} min: {tail['growth'] * 100:+.2f} %",
        )
    rss.set_ylabel("worker RSS (MiB)")
    rss.legend(loc="lower right", fontsize=8)
    rss.set_title(
        f"soak at {result.target_rate_per_s:.0f} requests/s ({result.minutes:g} min), "
        f"{result.decided:,} decided, {result.learned:,} learnt",
        fontsize=10,
    )
    lag.plot(minutes, [s.lag for s in result.samples], lw=1, color="tab:orange")
    lag.set_ylabel("consumer lag (records)")
    rate.plot(minutes, [s.rate_per_s for s in result.samples], lw=1, color="tab:green")
    rate.set_ylabel("decisions/s")
    rate.set_xlabel("minutes")
    for ax in (rss, lag, rate):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
