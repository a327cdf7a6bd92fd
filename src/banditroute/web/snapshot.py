"""Plain-data views of a running router, shared by the JSON API and the Prometheus collector.

Everything here reads the router's live objects (the :class:`StateView`, counters, registry) without copying
much: it runs in the worker's event loop on every scrape or poll, so it stays O(task types x models).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import orjson

from banditroute.core import TaskState
from banditroute.core.summary import credible_interval
from banditroute.limits import SHARED_KEY
from banditroute.routing import RoutingSnapshot, task_type_of
from banditroute.web.top import OTHER

JOIN_COUNTERS = (
    "joined",
    "late_feedback",
    "duplicate_feedback",
    "model_mismatch",
    "unknown_request",
    "reward_timeouts",
    "parked_feedback",
    "expired_entries",
    "capped_given_up",
)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def task_states(router: Any) -> list[tuple[str, str, TaskState]]:
    """(state key, task type, state) for every learnt key, plus prior states of task types decided but unlearnt.

    Bounded: only keys of named task types (``router.top``, see web/top.py) and the shared key of capped task
    types, at most ``limits.metrics_state_keys`` of them.
    """
    snapshot: RoutingSnapshot = router.registry.snapshot
    top = getattr(router, "top", None)
    limit = snapshot.limits.metrics_state_keys
    out: list[tuple[str, str, TaskState]] = []
    seen_types: set[str] = set()
    for key, state in sorted(router.view.items()):
        task_type = task_type_of(key)
        if top is not None and key != SHARED_KEY and not top.is_named(task_type):
            continue
        if len(out) >= limit:
            return out
        seen_types.add(task_type)
        out.append((key, task_type, snapshot.aligned(state)))
    decided_types = sorted({task for task, _model in list(router.decisions_by_model)} - seen_types - {OTHER})
    for task_type in decided_types[: max(0, limit - len(out))]:
        out.append((task_type, task_type, snapshot.initial))
    return out


def canary_state(spec: Any, policy: Any, observations: float) -> str:
    """``ramping`` (canary below its observation target, share held in [floor, ceiling]), ``graduated``
    (canary past the target), ``new`` (active model still under its floor period) or the lifecycle itself."""
    if not spec.enabled:
        return "disabled"
    if spec.lifecycle == "canary":
        return "ramping" if observations < policy.canary_observations else "graduated"
    if spec.lifecycle == "active" and observations < policy.new_model_observations:
        return "new"
    return str(spec.lifecycle)


def model_rows(router: Any, task_type: str, state: TaskState, now_s: float) -> list[dict[str, Any]]:
    """One row per model of a state: posterior quality (mean, 90% interval, see core/summary.py), cost, latency, guards."""
    catalog = {m.name: m for m in router.registry.models}
    policy = router.registry.policy(task_type)
    alpha, beta = state.alpha, state.beta
    mean = alpha / (alpha + beta)
    low, high = credible_interval(alpha, beta)
    cost, latency, obs = state.mean_cost_usd, state.mean_latency_ms, state.observations
    circuits = state.circuit_state(now_s)
    rows = []
    for i, name in enumerate(state.names):
        spec = catalog.get(name)
        rows.append(
            {
                "model": name,
                "quality_mean": _finite(mean[i]),
                "quality_low": _finite(low[i]),
                "quality_high": _finite(high[i]),
                "alpha": _finite(alpha[i]),
                "beta": _finite(beta[i]),
                "mean_cost_usd": _finite(cost[i]),
                "mean_latency_ms": _finite(latency[i]),
                "observations": int(obs[i]),
                "circuit": circuits.get(name, "closed"),
                "lifecycle": spec.lifecycle if spec else "unknown",
                "routable": bool(spec.routable) if spec else False,
                "canary": canary_state(spec, policy, float(obs[i])) if spec else "unknown",
            }
        )
    return rows


def best_single(rows: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The baseline without routing: the routable model with the highest posterior mean quality."""
    candidates = [r for r in rows if r["routable"] and r["quality_mean"] is not None]
    if not candidates:
        return None
    return max(candidates, key=lambda r: (r["quality_mean"], -(r["mean_cost_usd"] or 0.0)))


def budget_view(policy: Any, state: TaskState) -> dict[str, Any]:
    calls = state.spend_calls
    return {
        "objective": policy.objective,
        "lam": policy.lam,
        "spend_rate_usd_per_min": state.spend_rate_per_min,
        "budget_usd_per_min": policy.budget_usd_per_min,
        "mean_cost_usd": state.spend_total_usd / calls if calls else None,
        "budget_mean_cost_usd": policy.budget_mean_cost_usd,
        "spend_total_usd": state.spend_total_usd,
        "spend_calls": calls,
        "dual": state.dual,
    }


def state_json(router: Any, now_s: float | None = None) -> dict[str, Any]:
    """``/api/state``: per state key, the posteriors, guards, budget and the decision counts per model."""
    now_s = time.time() if now_s is None else now_s
    decided = dict(router.decisions_by_model)
    tasks = []
    for key, task_type, state in task_states(router):
        rows = model_rows(router, task_type, state, now_s)
        for row in rows:
            row["decisions"] = decided.get((task_type, row["model"]), 0)
        best = best_single(rows)
        tasks.append(
            {
                "key": key,
                "task_type": task_type,
                "version": state.version,
                "events": state.events,
                "models": rows,
                "best_single": best["model"] if best else None,
                "budget": budget_view(router.registry.policy(task_type), state),
                "updated_at": router.view.updated_at.get(key),
            }
        )
    return {
        "now": now_s,
        "worker_id": router.worker_id,
        "registry_version": router.registry.version,
        "models": [
            {
                "model": m.name,
                "lifecycle": m.lifecycle,
                "enabled": m.enabled,
                "cost_per_call_usd": m.cost_per_call_usd,
            }
            for m in router.registry.models
        ],
        "tasks": tasks,
    }


def stats_json(router: Any, lag: dict[str, Any] | None = None, now_s: float | None = None) -> dict[str, Any]:
    """``/api/stats``: counters, dead letters by reason, in-flight joins and consumer lag."""
    counters = dict(router.counters)
    return {
        "now": time.time() if now_s is None else now_s,
        "worker_id": router.worker_id,
        "decided": int(router.decider.decided),
        "replies_skipped": int(getattr(router.decider, "replies_skipped", 0)),
        "low_lane": _low_lane(router.decider),
        "decisions_by_task": _by_task(router.decisions_by_model),
        "local_decisions_by_client": _by_task(getattr(router, "local_decisions", {})),
        "counters": counters,
        "join": {name: int(counters.get(name, 0)) for name in JOIN_COUNTERS},
        "join_in_flight": int(router.join.in_flight()),
        "learned": int(counters.get("learned", 0)),
        "dead_letters": router.dead_letters.snapshot(),
        "capped": dict(getattr(router, "capped", {})),
        "foreign_capped": dict(getattr(router, "foreign_capped", {})),
        "readers": {
            name: _reader(reader)
            for name in ("decision_reader", "feedback_reader", "learn_reader")
            if (reader := getattr(router, name, None)) is not None
        },
        "lag": lag or {"sampled_at": None, "groups": []},
    }


def _reader(reader: Any) -> dict[str, Any]:
    """Where one of the worker's batch readers (``kafka/partition_reader.py``) stands, per partition."""
    return {
        "partitions": sorted(reader.partitions),
        "caught_up": reader.caught_up.is_set(),
        "positions": {str(p): o for p, o in sorted(reader.positions().items())},
        "batches": int(reader.batches),
        "records": int(reader.records),
        "skipped": int(reader.skipped),
    }


def _low_lane(decider: Any) -> dict[str, int]:
    """The decide loop's priority lane: requests parked now (and their payload bytes), and since start."""
    lane = getattr(decider, "lane", None)
    if lane is None:
        return {"parked": 0, "bytes": 0, "parked_total": 0, "spilled_total": 0}
    return {
        "parked": len(lane),
        "bytes": int(lane.bytes),
        "parked_total": int(lane.parked_total),
        "spilled_total": int(getattr(decider, "spilled_total", 0)),
    }


def _by_task(decisions: Any) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (task_type, model), n in list(decisions.items()):
        out.setdefault(task_type, {})[model] = int(n)
    return out


DECISION_FIELDS = (
    "decision_id",
    "request_id",
    "task_type",
    "tenant",
    "model",
    "fallbacks",
    "propensity",
    "reasons",
    "decided_at",
    "decision_ms",
    "state_version",
)


def decisions_json(router: Any, limit: int = 50, task_type: str | None = None) -> dict[str, Any]:
    """``/api/decisions``: the newest decisions first, with their reasons and best sampled candidates."""
    picked: list[dict[str, Any]] = []
    for kept in reversed(router.recent_decisions[-200:]):
        decision = orjson.loads(kept) if isinstance(kept, bytes) else kept  # the worker keeps the JSON text
        if task_type is not None and decision.get("task_type") != task_type:
            continue
        row = {k: decision.get(k) for k in DECISION_FIELDS}
        candidates = sorted(
            decision.get("candidates") or (), key=lambda c: c.get("sampled_utility", 0.0), reverse=True
        )
        row["candidates"] = candidates[:5]
        picked.append(row)
        if len(picked) >= limit:
            break
    return {"decisions": picked}


def network_json(router: Any, history: Any = None, window: int = 60) -> dict[str, Any]:
    """``/api/network``: requests -> task types -> models, edge weights = decisions in the last ``window``
    history samples (all decisions since start when no history is kept yet)."""
    counts: dict[tuple[str, str], int] = {}
    if history is not None:
        for task_type, series in list(history.tasks.items()):
            for point in list(series)[-window:]:
                for model, n in point["counts"].items():
                    counts[(task_type, model)] = counts.get((task_type, model), 0) + n
    if not any(counts.values()):
        counts = {k: int(v) for k, v in dict(router.decisions_by_model).items()}
    task_totals: dict[str, int] = {}
    model_totals: dict[str, int] = {}
    for (task_type, model), n in counts.items():
        task_totals[task_type] = task_totals.get(task_type, 0) + n
        model_totals[model] = model_totals.get(model, 0) + n
    catalog = {m.name: m for m in router.registry.models}
    nodes = [{"id": "requests", "kind": "source", "label": "requests", "weight": sum(task_totals.values())}]
    nodes += [
        {"id": f"task:{t}", "kind": "task", "label": t, "weight": n} for t, n in sorted(task_totals.items())
    ]
    for name in sorted(set(catalog) | set(model_totals)):
        spec = catalog.get(name)
        nodes.append(
            {
                "id": f"model:{name}",
                "kind": "model",
                "label": name,
                "weight": model_totals.get(name, 0),
                "lifecycle": spec.lifecycle if spec else "unknown",
            }
        )
    edges = [
        {"source": "requests", "target": f"task:{t}", "weight": n} for t, n in sorted(task_totals.items())
    ]
    edges += [
        {"source": f"task:{t}", "target": f"model:{m}", "weight": n}
        for (t, m), n in sorted(counts.items())
        if n
    ]
    return {"window_samples": window, "nodes": nodes, "edges": edges}
