"""``banditroute bench scale``: memory and decision time as task types and models grow; join memory per decision.

In-process, no broker. For each (task types T, models M): a :class:`Registry` from a generated config, a
:class:`StateView` holding T learnt states (each got one outcome, so it owns its statistics matrix rather than
sharing the prior). Decision time is ``DecideLogic.decide`` on pre-validated requests whose task types cycle
through all T, plus ``orjson.dumps`` of the decision as the service does (best of ``REPEATS`` runs). Memory is the
tracemalloc delta of the states (``state_bytes_per_task_type``), and again after the decisions
(``served_bytes_per_task_type``: states plus the plans and pre-drawn sample blocks the core caches on them).

Join: :class:`JoinLogic` over plain dicts (the faust table's in-memory store holds the same key and bytes) with
N pending decisions; ``bytes_per_in_flight`` is the tracemalloc delta / N, incl. the request-id key, the
encoded :class:`Pending` value and the deadline-heap entry. ``pending_value_bytes`` is the encoded value alone.
"""

from __future__ import annotations

import gc
import tempfile
import time
import tracemalloc
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from banditroute.bench.common import machine

TASK_TYPES = (10, 100, 1000, 10_000)
MODELS = (3, 10, 50)
REPEATS = 3
JOIN_N = 100_000


def _config(folder: Path, models: int) -> Path:
    lines = ["models:"]
    for i in range(models):
        lines.append(
            f"  - {{name: model-{i:02d}, cost_per_call_usd: {0.0005 * (i + 1):.6f}, latency_ms: {300 + 40 * i}}}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.yaml").write_text("\n".join(lines) + "\n")
    (folder / "policy.yaml").write_text("defaults:\n  lam: 10.0\n  half_life: null\n")
    (folder / "rules.yaml").write_text("rules: []\n")
    return folder


def _requests(task_types: list[str], n: int) -> list[Any]:
    from banditroute.events import RoutingRequest

    now = datetime.now(UTC)
    return [
        RoutingRequest(request_id=uuid.uuid4().hex, task_type=task_types[i % len(task_types)], created_at=now)
        for i in range(n)
    ]


def _measure(task_types: int, models: int, decisions: int) -> dict[str, Any]:
    from banditroute.agents.decide import DecideLogic, StateView
    from banditroute.config import Registry, RouterConfig
    from banditroute.core import Outcome
    from banditroute.core.learn import update

    folder = Path(tempfile.mkdtemp(prefix="banditroute-scale-"))
    registry = Registry(RouterConfig.load(_config(folder, models)), folder)
    names = [f"t{i:05d}" for i in range(task_types)]
    view = StateView()
    rng = np.random.default_rng(1)
    models_ = registry.models
    outcomes = [
        Outcome(
            m.name,
            quality=float(rng.random() < 0.7),
            cost_usd=m.cost_per_call_usd,
            latency_ms=400.0,
            at_s=1.0,
        )
        for m in models_
    ]
    requests = _requests(names, max(decisions, task_types))
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    for i, name in enumerate(names):
        state = update(
            registry.initial_state(name), models_, registry.policy(name), outcomes[i % len(outcomes)]
        )
        state.stats  # noqa: B018 - materialise the copy-on-write matrix, as serving does
        view.offer(registry.state_key(None, name), state)
    gc.collect()
    after_states = tracemalloc.take_snapshot()
    logic = DecideLogic(registry, view, np.random.default_rng(2), worker_id="bench")
    for request in requests[: max(task_types, 1000)]:  # every task type serves at least once (plans, blocks)
        orjson.dumps(logic.decide(request))
    gc.collect()
    after_served = tracemalloc.take_snapshot()
    tracemalloc.stop()

    def delta(snapshot: Any) -> int:
        return sum(s.size_diff for s in snapshot.compare_to(base, "filename"))

    timed = requests[:decisions]
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        for request in timed:
            orjson.dumps(logic.decide(request))
        best = min(best, time.perf_counter() - start)
    return {
        "task_types": task_types,
        "models": models,
        "decide_us": best / len(timed) * 1e6,
        "state_bytes_per_task_type": delta(after_states) / task_types,
        "served_bytes_per_task_type": delta(after_served) / task_types,
    }


def join_memory(n: int = JOIN_N) -> dict[str, Any]:
    """Bytes per in-flight decision in the join table (see the module docstring)."""
    from banditroute.agents.decide import DecideLogic, StateView
    from banditroute.agents.pending import Pending
    from banditroute.config import Registry, RouterConfig

    folder = Path(tempfile.mkdtemp(prefix="banditroute-scale-"))
    registry = Registry(RouterConfig.load(_config(folder, 3)), folder)
    logic = DecideLogic(registry, StateView(), np.random.default_rng(3), worker_id="bench")
    # decisions as the join reads them (decoded JSON), with 32-hex-char request ids like the client's uuid4().hex
    decisions = [orjson.loads(orjson.dumps(logic.decide(r))) for r in _requests(["chat"], n)]
    as_is = _join_bytes(decisions)
    rid = decisions[0]["request_id"]
    sample = Pending.decode(Pending(**_fields(decisions[0])).encode(rid), rid)
    return {
        "n": n,
        "bytes_per_in_flight": as_is["bytes"],
        "pending_value_bytes": as_is["value_len"],
        "value_allocation_bytes": as_is["value_alloc"],
        "key_chars": len(decisions[0]["request_id"]),
        "example_value": sample.encode(rid).decode(),
        "target_bytes": 300,
    }


def _fields(decision: dict[str, Any]) -> dict[str, Any]:
    return {
        "decision_id": decision["decision_id"],
        "task_key": decision["task_type"],
        "task_type": decision["task_type"],
        "tenant": decision.get("tenant"),
        "model": decision["model"],
        "fallbacks": tuple(decision["fallbacks"]),
        "propensity": decision["propensity"],
        "state_version": decision["state_version"],
        "policy": "thompson",
        "deadline_s": 0.0,
    }


def _join_bytes(decisions: list[dict[str, Any]]) -> dict[str, float]:
    """tracemalloc bytes per entry of a JoinLogic fed ``decisions``."""
    from banditroute.agents.join import JoinLogic
    from banditroute.core.join_policy import JoinPolicy

    pending: dict[str, bytes] = {}
    join = JoinLogic(pending, {}, lambda _t: JoinPolicy(wait_s=300.0))
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    now = time.time()
    for offset, decision in enumerate(decisions):
        join.on_decision(decision, offset % 4, offset, now)
    gc.collect()
    snap = tracemalloc.take_snapshot()
    value = next(iter(pending.values()))
    tracemalloc.stop()
    n = len(decisions)
    stats = snap.compare_to(base, "filename")
    return {
        "bytes": sum(s.size_diff for s in stats) / n,
        "value_len": float(len(value)),
        "value_alloc": _alloc_of(snap, base, n),
    }


def _alloc_of(snap: Any, base: Any, n: int) -> float:
    """Average size of the largest per-line allocation group (the encoded values)."""
    top = snap.compare_to(base, "lineno")[0]
    return float(top.size_diff / max(top.count_diff, 1)) if top.count_diff else 0.0


def run_scale_bench(
    *,
    task_types: tuple[int, ...] = TASK_TYPES,
    models: tuple[int, ...] = MODELS,
    decisions: int = 20_000,
    join_n: int = JOIN_N,
) -> dict[str, Any]:
    grid = [_measure(t, m, decisions) for m in models for t in task_types]
    by_models: dict[str, Any] = {}
    for m in models:
        rows = [g for g in grid if g["models"] == m]
        times = [r["decide_us"] for r in rows]
        by_models[str(m)] = {
            "decide_us_min": min(times),
            "decide_us_max": max(times),
            "decide_flatness": max(times) / min(times),  # 1.0 = flat in task types
        }
    return {
        "grid": grid,
        "decide_vs_task_types": by_models,
        "join": join_memory(join_n),
        "machine": machine(),
    }
