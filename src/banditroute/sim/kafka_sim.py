"""Drive a running router over Kafka with a synthetic world: requests in, decisions back, feedback later.

Requests are produced in rounds; each decision's outcome is drawn from the :class:`SyntheticWorld` at that
request's index (so drift events happen at known points) and its feedback is sent one round later, so the
router always learns from delayed feedback, as it would in production.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from banditroute.kafka.outbox import Outbox
from banditroute.kafka.topic_reader import TopicReader
from banditroute.settings import Settings
from banditroute.sim.scenario import Scenario, SyntheticWorld


@dataclass
class Step:
    """One simulated request and what happened to it."""

    index: int
    task_type: str
    model: str | None
    propensity: float
    quality: float | None
    cost_usd: float
    latency_ms: float
    error: str | None
    decided_ms: float


@dataclass
class SimulationLog:
    scenario: Scenario
    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0
    throttled_s: float = 0.0
    """Time the simulator waited for learning to catch up (see ``max_learning_lag``)."""


async def decisions_from_end(settings: Settings) -> TopicReader:
    """A started reader of every partition of the decisions topic, positioned at its end before the first
    request goes out (so no decision of ours is missed)."""
    reader = TopicReader(settings.kafka_bootstrap, settings.topic("decisions"), settings.aiokafka_security())
    try:
        return await reader.start()
    except LookupError as exc:
        raise RuntimeError(f"{exc}: is a worker running with this topic prefix?") from exc


def _request(task_type: str, index: int) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "request_id": f"sim-{uuid.uuid4().hex[:16]}-{index}",
        "task_type": task_type,
        "created_at": datetime.now(UTC).isoformat(),
        "metadata": {"sim_index": index},
    }


async def simulate(
    settings: Settings,
    scenario: Scenario,
    *,
    requests: int,
    seed: int = 0,
    batch: int = 50,
    rate: float = 0.0,
    timeout_s: float = 60.0,
    progress: Callable[[int], None] | None = None,
    max_learning_lag: int = 400,
) -> SimulationLog:
    """Run ``requests`` requests through the router reachable with ``settings``; returns the log.

    ``rate`` > 0 paces request rounds to that many requests per second; 0 runs as fast as the router answers.
    Like a well-behaved client, the simulator does not outrun learning: when the feedback it has sent for a
    task type is more than ``max_learning_lag`` ahead of the state version the decisions report, it slows
    down until the worker catches up (so a demo on a busy machine still shows learning, just slower).
    """
    world = SyntheticWorld(scenario)
    rng = np.random.default_rng(seed)
    tasks = world.request_task_types(requests, rng)
    producer = Outbox(settings.kafka_bootstrap, settings.aiokafka_security(), linger_ms=2)
    decisions = await decisions_from_end(settings)
    log = SimulationLog(scenario)
    decided: dict[str, dict[str, Any]] = {}
    pending_feedback: list[tuple[bytes, bytes]] = []
    sent_feedback: dict[str, int] = {}
    seen_version: dict[str, int] = {}
    t0 = time.monotonic()
    try:
        for start in range(0, requests, batch):
            round_t0 = time.monotonic()
            reqs = [_request(tasks[i], i) for i in range(start, min(requests, start + batch))]
            sent_at = time.monotonic()
            for r in reqs:
                await producer.send(
                    settings.topic("requests"), key=r["request_id"].encode(), value=orjson.dumps(r)
                )
            # feedback of the previous round goes out now: one round of delay
            for key, value in pending_feedback:
                await producer.send(settings.topic("feedback"), key=key, value=value)
            pending_feedback = []
            await producer.drain()
            wanted = {r["request_id"] for r in reqs}
            deadline = time.monotonic() + timeout_s
            while wanted - decided.keys() and time.monotonic() < deadline:
                got = await decisions.fetch(timeout_ms=100)
                for records in got.values():
                    for rec in records:
                        if rec.value:
                            d = orjson.loads(rec.value)
                            decided.setdefault(
                                d["request_id"], d | {"_ms": (time.monotonic() - sent_at) * 1000}
                            )
            missing = wanted - decided.keys()
            if missing:
                raise TimeoutError(f"{len(missing)} requests got no decision within {timeout_s:g} s")
            for r in reqs:
                d = decided.pop(r["request_id"])
                index = int(r["metadata"]["sim_index"])
                model = d.get("model")
                seen_version[r["task_type"]] = max(
                    seen_version.get(r["task_type"], 0), int(d["state_version"])
                )
                outcome: dict[str, Any] = {"quality": None, "cost_usd": 0.0, "latency_ms": 0.0, "error": None}
                if model is not None:
                    outcome = world.sample(r["task_type"], model, index, rng)
                    feedback = {
                        "schema_version": 1,
                        "request_id": r["request_id"],
                        "decision_id": d["decision_id"],
                        "model": model,
                        "latency_ms": outcome["latency_ms"],
                        "cost_usd": outcome["cost_usd"],
                        "observed_at": datetime.now(UTC).isoformat(),
                        "idempotency_key": f"{r['request_id']}:{model}",
                    }
                    if outcome["error"]:
                        feedback["error"] = outcome["error"]
                    else:
                        feedback["quality"] = outcome["quality"]
                    pending_feedback.append((r["request_id"].encode(), orjson.dumps(feedback)))
                    sent_feedback[r["task_type"]] = sent_feedback.get(r["task_type"], 0) + 1
                log.steps.append(
                    Step(
                        index=index,
                        task_type=r["task_type"],
                        model=model,
                        propensity=float(d.get("propensity", 1.0)),
                        quality=outcome["quality"],
                        cost_usd=float(outcome["cost_usd"]),
                        latency_ms=float(outcome["latency_ms"]),
                        error=outcome["error"],
                        decided_ms=float(d["_ms"]),
                    )
                )
            if progress is not None:
                progress(len(reqs))
            if rate > 0:
                await asyncio.sleep(max(0.0, len(reqs) / rate - (time.monotonic() - round_t0)))
            lag = max((sent_feedback[t] - seen_version.get(t, 0) for t in sent_feedback), default=0)
            if lag > max_learning_lag:
                log.throttled_s += min(1.0, 0.002 * (lag - max_learning_lag))
                await asyncio.sleep(min(1.0, 0.002 * (lag - max_learning_lag)))
        for key, value in pending_feedback:
            await producer.send(settings.topic("feedback"), key=key, value=value)
        await producer.drain()
    finally:
        log.seconds = time.monotonic() - t0
        await decisions.stop()
        await producer.stop()
    return log


def summarise(log: SimulationLog, window: int = 500) -> dict[str, Any]:
    """Per task type: the scenario's best model at the end, each model's share of the final ``window``
    decisions, and for each drift event the drifting model's share just before and at the end."""
    world = SyntheticWorld(log.scenario)
    lam, mu = log.scenario.lam, log.scenario.mu
    last_index = max((s.index for s in log.steps), default=0)
    per_task: dict[str, Any] = {}
    for task in log.scenario.task_types:
        steps = [s for s in log.steps if s.task_type == task]
        final = steps[-window:]
        share = {
            m: sum(1 for s in final if s.model == m) / max(1, len(final)) for m in log.scenario.model_names
        }
        utilities = [
            (s.quality or 0.0) - lam * s.cost_usd - mu * s.latency_ms for s in steps if s.model is not None
        ]
        per_task[task] = {
            "decisions": len(steps),
            "best_model": world.best_model(task, last_index, lam, mu),
            "final_share": share,
            "mean_quality": float(np.mean([s.quality or 0.0 for s in steps])) if steps else 0.0,
            "mean_cost_usd": float(np.mean([s.cost_usd for s in steps])) if steps else 0.0,
            "mean_utility": float(np.mean(utilities)) if utilities else 0.0,
        }
    drifts = []
    for event in log.scenario.drift:
        tasks = [event.task_type] if event.task_type else list(log.scenario.task_types)
        for task in tasks:
            before = [s for s in log.steps if s.task_type == task and s.index < event.at][-window:]
            after = [s for s in log.steps if s.task_type == task and s.index >= event.at][-window:]
            drifts.append(
                {
                    "at": event.at,
                    "model": event.model,
                    "task_type": task,
                    "share_before": sum(1 for s in before if s.model == event.model) / max(1, len(before)),
                    "share_at_end": sum(1 for s in after if s.model == event.model) / max(1, len(after)),
                }
            )
    latencies = np.array([s.decided_ms for s in log.steps]) if log.steps else np.zeros(1)
    return {
        "scenario": log.scenario.name,
        "requests": len(log.steps),
        "seconds": round(log.seconds, 2),
        "throttled_seconds": round(log.throttled_s, 2),
        "round_trip_ms": {
            "p50": float(np.percentile(latencies, 50)),
            "p99": float(np.percentile(latencies, 99)),
        },
        "task_types": per_task,
        "drift": drifts,
        "total_cost_usd": float(sum(s.cost_usd for s in log.steps)),
        "best_single_model_cost_usd": _best_single_cost(log),
    }


def _best_single_cost(log: SimulationLog) -> dict[str, float]:
    """What the same requests would have cost on the best single model (by expected utility over the run)."""
    world = SyntheticWorld(log.scenario)
    lam, mu = log.scenario.lam, log.scenario.mu
    names = log.scenario.model_names
    totals = np.zeros(len(names))
    for s in log.steps:
        totals += world.expected_utilities(s.task_type, s.index, lam, mu)
    best = names[int(np.argmax(totals))]
    cost = next(m.cost_usd for m in log.scenario.models if m.name == best)
    return {"model": best, "cost_usd": float(cost * len(log.steps))}  # type: ignore[dict-item]


def plot(log: SimulationLog, out_dir: Path, window: int = 200) -> list[Path]:
    """Traffic share over time per task type; cumulative cost against the best single model; quality vs cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    names = log.scenario.model_names
    tasks = log.scenario.task_types
    paths: list[Path] = []
    fig, axes = plt.subplots(len(tasks), 1, figsize=(9, 2.2 * len(tasks)), sharex=True, squeeze=False)
    for ax, task in zip(axes[:, 0], tasks, strict=True):
        steps = [s for s in log.steps if s.task_type == task]
        idx = np.array([s.index for s in steps])
        w = max(1, min(window, len(steps)))
        kernel = np.ones(w) / w
        shares = []
        for m in names:
            hits = np.array([1.0 if s.model == m else 0.0 for s in steps])
            shares.append(np.convolve(hits, kernel, mode="valid") if len(hits) >= w else np.zeros(0))
        if len(idx) >= w:
            ax.stackplot(idx[w - 1 :], *shares, labels=names)
        for event in log.scenario.drift:
            if event.task_type in (None, task):
                ax.axvline(event.at, color="black", linestyle="--", linewidth=0.8)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"{task}\nshare", fontsize=8)
    axes[0, 0].legend(loc="upper left", fontsize=7, ncol=len(names))
    axes[-1, 0].set_xlabel("request")
    fig.suptitle(f"Traffic share per model (scenario {log.scenario.name}; dashed: drift events)")
    fig.tight_layout()
    path = out_dir / "traffic_share.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    best = _best_single_cost(log)
    per_call = best["cost_usd"] / max(1, len(log.steps))
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.plot(np.cumsum([s.cost_usd for s in log.steps]), label="banditroute")
    ax.plot(np.arange(1, len(log.steps) + 1) * per_call, label=f"always {best['model']}")
    ax.set_xlabel("request")
    ax.set_ylabel("cumulative cost (USD)")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "cumulative_cost.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in names:
        picked = [s for s in log.steps if s.model == m]
        if picked:
            ax.scatter(
                np.mean([s.cost_usd for s in picked]),
                np.mean([s.quality or 0.0 for s in picked]),
                s=20 + 400 * len(picked) / len(log.steps),
                label=m,
            )
    ax.set_xlabel("mean cost per call (USD)")
    ax.set_ylabel("mean quality")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "quality_vs_cost.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths
