"""Replay recorded outcomes through a real worker: requests on the topic, the recorded outcome as feedback.

The request stream is the in-process replay's (:func:`~banditroute.sim.replay.make_stream`, same data and
seed). Requests go out in rounds of ``block``; each decision's recorded outcome (quality, cost and latency of
the chosen model on that prompt) goes back as feedback after the round, and the next round starts once the
worker has learnt it (its ``state`` topic is followed for that), so every round is decided on the evidence of
all earlier rounds, as in the in-process replay with ``delay = block`` (:func:`comparable_delay`). What
differs is only the machinery: topics, the join, the learner, the state reader, and the worker's own
sampler.

The worker is configured like the in-process replay (:func:`worker_config`): the table's catalog prices, the
same λ (or the same mean-cost budget), no discounting, no new-model floor, and the same cap on the quality prior
pooled over task types (the worker's learner pools from the states it holds, recomputed at most once a second:
:mod:`banditroute.agents.prior_pool`). In budget mode the worker divides the one budget over the task types as
the replay does (:mod:`banditroute.agents.budget_split`, its draws seeded from the replay's seed).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

from banditroute.core.codec import decode_state
from banditroute.core.pooling import DEFAULT_MAX_STRENGTH
from banditroute.kafka.outbox import Outbox
from banditroute.kafka.state_reader import state_key_of
from banditroute.kafka.topic_reader import TopicReader
from banditroute.kafka.topics import read_topic
from banditroute.settings import Settings
from banditroute.sim.kafka_sim import decisions_from_end
from banditroute.sim.replay import PolicyRun, ReplayResult, Stream, catalog_from_table, make_stream
from banditroute.sim.table import OutcomeTable, parse_mix

NAME = "thompson_kafka"


def comparable_delay(block: int) -> int:
    """The in-process ``delay`` a replay through Kafka in rounds of ``block`` compares with."""
    return block


def worker_config(
    table: OutcomeTable,
    lam: float,
    folder: Path,
    pooled_prior_strength: float = DEFAULT_MAX_STRENGTH,
    budget: float | None = None,
    budget_split: str = "sampled",
) -> Path:
    """models.yaml, policy.yaml and rules.yaml for a worker configured like the in-process replay (with
    ``budget``: budget mode, that mean cost per call over all task types, divided as ``budget_split`` says)."""
    folder.mkdir(parents=True, exist_ok=True)
    models = [
        {
            "name": spec.name,
            "cost_per_call_usd": spec.cost_per_call_usd,
            "latency_ms": spec.latency_ms,
            "quality_prior": list(spec.quality_prior),
        }
        for spec in catalog_from_table(table)
    ]
    policy = {
        "defaults": {
            "objective": "utility" if budget is None else "budget",
            "budget_mean_cost_usd": budget,
            "lam": lam,
            "mu": 0.0,
            "half_life": None,
            "new_model_floor": 0.0,
            "propensity_samples": 1000,
            "join": {"wait_s": 300},
        },
        "pooling": {"max_strength": pooled_prior_strength},
        "budget_split": budget_split,
    }
    (folder / "models.yaml").write_text(yaml.safe_dump({"models": models}, sort_keys=False))
    (folder / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    (folder / "rules.yaml").write_text("rules: []\n")
    return folder


def _feedback(request_id: str, decision_id: str, model: str, q: float, c: float, lat: float) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "request_id": request_id,
            "decision_id": decision_id,
            "model": model,
            "quality": q,
            "cost_usd": c,
            "latency_ms": None if lat != lat else lat,  # NaN: not recorded
            "observed_at": datetime.now(UTC).isoformat(),
            "idempotency_key": f"{request_id}:{model}",
        }
    )


async def replay_through_kafka(
    settings: Settings,
    table: OutcomeTable,
    *,
    lam: float = 20.0,
    budget: float | None = None,
    requests: int = 2000,
    seed: int = 0,
    mix: str | None = None,
    block: int = 50,
    timeout_s: float = 60.0,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Run the replay's request stream through the worker reachable with ``settings`` (it must serve the
    table's models, see :func:`worker_config`) and score its choices like the in-process replay (``budget``:
    the worker's mean-cost budget, reported with the result)."""
    stream = make_stream(table, requests, seed, parse_mix(mix, table.task_types) if mix is not None else None)
    chosen = await _drive(settings, table, stream, block, timeout_s, progress)
    return _result(table, stream, lam, seed, chosen, block, budget)


async def _drive(
    settings: Settings,
    table: OutcomeTable,
    stream: Stream,
    block: int,
    timeout_s: float,
    progress: Callable[[int], None] | None,
) -> np.ndarray[Any, np.dtype[np.intp]]:
    producer = Outbox(settings.kafka_bootstrap, settings.aiokafka_security(), linger_ms=2)
    decisions = await decisions_from_end(settings)
    n = len(stream.task)
    chosen = np.full(n, -1, dtype=np.intp)
    run = uuid.uuid4().hex[:12]
    learnt: dict[str, int] = {}
    sent: dict[str, int] = {}
    follower = asyncio.create_task(_follow_learning(settings, learnt))
    try:
        feedback: list[tuple[bytes, bytes]] = []
        for start in range(0, n, block):
            await _send_and_wait_learnt(
                producer, settings, feedback, stream, start - block, sent, learnt, timeout_s, follower
            )
            ids = {f"replay-{run}-{i}": i for i in range(start, min(n, start + block))}
            for rid, i in ids.items():
                request = {
                    "schema_version": 1,
                    "request_id": rid,
                    "task_type": stream.task_types[stream.task[i]],
                    "created_at": datetime.now(UTC).isoformat(),
                }
                await producer.send(settings.topic("requests"), key=rid.encode(), value=orjson.dumps(request))
            await producer.drain()
            feedback = await _collect(decisions, table, stream, ids, chosen, timeout_s)
            if progress is not None:
                progress(len(ids))
        for key, value in feedback:
            await producer.send(settings.topic("feedback"), key=key, value=value)
        await producer.drain()
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await decisions.stop()
        await producer.stop()
    return chosen


async def _follow_learning(settings: Settings, learnt: dict[str, int]) -> None:
    """Keep ``learnt[task key]`` at the number of outcomes the worker's learner has applied (state topic)."""
    async for record in read_topic(settings, settings.topic("state"), start="earliest", follow=True):
        key = state_key_of(record.key)  # as the learner's table reads it
        if key is not None and record.value:
            learnt[key] = max(learnt.get(key, 0), decode_state(record.value).events)


async def _send_and_wait_learnt(
    producer: Outbox,
    settings: Settings,
    feedback: list[tuple[bytes, bytes]],
    stream: Stream,
    start: int,
    sent: dict[str, int],
    learnt: dict[str, int],
    timeout_s: float,
    follower: asyncio.Task[None],
) -> None:
    """Send the previous round's feedback (requests ``start`` ... ``start + len(feedback)``) and wait until
    the worker has learnt all of it."""
    if not feedback:
        return
    for key, value in feedback:
        await producer.send(settings.topic("feedback"), key=key, value=value)
    await producer.drain()
    for i in range(start, start + len(feedback)):
        task = stream.task_types[stream.task[i]]
        sent[task] = sent.get(task, 0) + 1
    deadline = time.monotonic() + timeout_s
    while any(learnt.get(t, 0) < count for t, count in sent.items()):
        if follower.done():
            follower.result()  # raises what stopped it
            raise RuntimeError("stopped following the state topic")
        if time.monotonic() > deadline:
            behind = {t: count - learnt.get(t, 0) for t, count in sent.items() if learnt.get(t, 0) < count}
            raise TimeoutError(
                f"the worker did not learn the feedback within {timeout_s:g} s (missing {behind})"
            )
        await asyncio.sleep(0.005)


async def _collect(
    decisions: TopicReader,
    table: OutcomeTable,
    stream: Stream,
    ids: dict[str, int],
    chosen: np.ndarray[Any, np.dtype[np.intp]],
    timeout_s: float,
) -> list[tuple[bytes, bytes]]:
    """Wait for the decisions of ``ids``; record the chosen model and return the feedback to send."""
    waiting = dict(ids)
    out: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    while waiting:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(waiting)} requests got no decision within {timeout_s:g} s")
        got = await decisions.fetch(timeout_ms=100)
        for records in got.values():
            for rec in records:
                if not rec.value:
                    continue  # the worker's tick records
                d = orjson.loads(rec.value)
                i = waiting.pop(d["request_id"], None)
                if i is None:
                    continue
                if d.get("model") not in table.models:
                    raise RuntimeError(f"the worker chose {d.get('model')!r}, not a model of the table")
                col = table.models.index(d["model"])
                chosen[i] = col
                outcomes = table.tasks[stream.task_types[stream.task[i]]]
                p = stream.prompt[i]
                out.append(
                    (
                        d["request_id"].encode(),
                        _feedback(
                            d["request_id"],
                            d["decision_id"],
                            d["model"],
                            float(outcomes.quality[p, col]),
                            float(outcomes.cost[p, col]),
                            float(outcomes.latency[p, col]),
                        ),
                    )
                )
    return out


def _result(
    table: OutcomeTable,
    stream: Stream,
    lam: float,
    seed: int,
    chosen: np.ndarray[Any, np.dtype[np.intp]],
    block: int,
    budget: float | None = None,
) -> ReplayResult:
    n = len(stream.task)
    quality, cost = np.empty(n), np.empty(n)
    for i, t in enumerate(stream.task_types):
        where = np.flatnonzero(stream.task == i)
        quality[where] = table.tasks[t].quality[stream.prompt[where], chosen[where]]
        cost[where] = table.tasks[t].cost[stream.prompt[where], chosen[where]]
    q, c = table.mean_quality(), table.mean_cost()
    run = PolicyRun(
        name=NAME,
        chosen=chosen,
        quality=quality,
        cost=cost,
        utility=quality - lam * cost,
        expected_utility=(q - lam * c)[stream.task, chosen],
    )
    return ReplayResult(
        models=table.models,
        stream=stream,
        lam=lam,
        budget=budget,
        runs=[run],
        task_utility=q - lam * c,
        task_quality=q,
        task_cost=c,
        seed=seed,
        source=table.source,
        extra={"through_kafka": {"block": block, "comparable_delay": comparable_delay(block)}},
    )


def run_with_own_worker(
    bootstrap: str,
    table: OutcomeTable,
    *,
    lam: float,
    requests: int,
    seed: int,
    mix: str | None,
    delay: int,
    pooled_prior_strength: float = DEFAULT_MAX_STRENGTH,
    budget: float | None = None,
    budget_split: str = "sampled",
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Start a worker configured for ``table`` on fresh topics, replay through it in rounds of ``delay``
    (comparable to the in-process replay with ``delay``) and stop it; its topics are left on the broker."""
    import tempfile

    from banditroute.sim.worker_process import log_tail, worker_process

    block = delay
    prefix = f"replay{uuid.uuid4().hex[:10]}"
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, app_id=prefix)
    with tempfile.TemporaryDirectory(prefix="banditroute-replay-") as tmp:
        folder = Path(tmp)
        config = worker_config(table, lam, folder / "config", pooled_prior_strength, budget, budget_split)
        with worker_process(bootstrap, prefix, config, folder, BANDITROUTE_SEED=str(seed)):
            try:
                return asyncio.run(
                    replay_through_kafka(
                        settings,
                        table,
                        lam=lam,
                        budget=budget,
                        requests=requests,
                        seed=seed,
                        mix=mix,
                        block=block,
                        progress=progress,
                    )
                )
            except (TimeoutError, RuntimeError) as exc:
                raise RuntimeError(f"{exc}\nworker log (tail):\n{log_tail(folder)}") from exc


__all__ = ["NAME", "comparable_delay", "replay_through_kafka", "run_with_own_worker", "worker_config"]
