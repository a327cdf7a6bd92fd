"""Soak: run a worker at a fraction of its measured maximum rate for minutes and watch it stay healthy.

The soak starts its own worker (``python -m banditroute worker``) on fresh topics of the given broker, with the
web API on a free localhost port, then:

1. measures the closed-loop maximum rate: a burst of requests produced as fast as possible, every decision
   answered with feedback at once, timed until every outcome is learned;
2. runs an open loop at ``rate_fraction`` of that rate for ``minutes``: requests paced every 50 ms, 90% of the
   decisions answered with feedback after a short random delay (the rest time out in the join);
3. samples the worker's RSS, its join table size (``/api/stats`` ``join_in_flight``) and the consumer lag;
4. stops producing and waits for the consumer lag of both worker groups to return to zero.

Checks: RSS growth after warm-up <= ``max_rss_growth`` (10%), the join table never above what the reward wait
window allows (rate x (wait_s + keep_joined_s) plus slack), lag back to zero, the worker alive throughout.
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


@dataclass
class Sample:
    t_s: float
    rss_kb: int
    join_in_flight: int
    lag: int
    decided: int
    learned: int


@dataclass
class SoakResult:
    max_rate_per_s: float
    target_rate_per_s: float
    minutes: float
    sent: int = 0
    decided: int = 0
    feedback_sent: int = 0
    learned: int = 0
    rss_baseline_kb: int = 0
    rss_final_kb: int = 0
    rss_max_kb: int = 0
    rss_growth: float = 0.0
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
        workdir: Path | None = None,
        log: Any = print,
    ) -> None:
        self.bootstrap = bootstrap
        self.minutes = minutes
        self.rate_fraction = rate_fraction
        self.burst = burst
        self.max_rss_growth = max_rss_growth
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
            result.join_bound = int(rate * (WAIT_S + KEEP_JOINED_S + 5.0) * 1.25) + 1000
            ready = asyncio.Event()
            answer = asyncio.create_task(self._answer_decisions(producer, 0.9, 2.0, ready))
            await ready.wait()
            duration = self.minutes * 60.0
            warm_s = min(WAIT_S + KEEP_JOINED_S + 30.0, duration / 3)
            t0 = time.monotonic()
            next_sample = t0
            credit = 0.0
            last = t0
            while (now := time.monotonic()) - t0 < duration:
                credit += (now - last) * rate
                last = now
                while credit >= 1.0:
                    key, value = self._request()
                    await producer.send(f"{self.prefix}.requests", key=key, value=value)
                    credit -= 1.0
                if now >= next_sample:
                    next_sample = now + 5.0
                    stats = await asyncio.to_thread(self.stats) or {}
                    sample = Sample(
                        now - t0,
                        _rss_kb(self.proc.pid),
                        int(stats.get("join_in_flight", -1)),
                        await self.lag(),
                        self.decided - decided0,
                        int(stats.get("learned", 0)) - learned0,
                    )
                    result.samples.append(sample)
                    if sample.t_s >= warm_s and not result.rss_baseline_kb:
                        result.rss_baseline_kb = sample.rss_kb
                    if len(result.samples) % 12 == 1:
                        self.log(
                            f"t={sample.t_s:5.0f}s rss={sample.rss_kb / 1024:.0f} MiB join={sample.join_in_flight}"
                            f" lag={sample.lag} decided={sample.decided} learned={sample.learned}"
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
            final = await asyncio.to_thread(self.stats) or {}
            result.sent = self.sent - sent0
            result.decided = self.decided - decided0
            result.feedback_sent = self.feedback_sent - fb0
            result.learned = int(final.get("learned", 0)) - learned0
            steady = [s for s in result.samples if s.t_s >= warm_s] or result.samples
            tail = steady[-max(1, len(steady) // 5) :]
            result.rss_final_kb = sorted(s.rss_kb for s in tail)[len(tail) // 2]
            result.rss_baseline_kb = result.rss_baseline_kb or steady[0].rss_kb
            result.rss_max_kb = max(s.rss_kb for s in result.samples)
            result.rss_growth = result.rss_final_kb / max(result.rss_baseline_kb, 1) - 1.0
            result.join_max = max(s.join_in_flight for s in result.samples)
            result.lag_max = max(s.lag for s in result.samples)
            result.worker_alive = self.alive()
            result.checks = {
                "rss_growth_within_limit": result.rss_growth <= self.max_rss_growth,
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
