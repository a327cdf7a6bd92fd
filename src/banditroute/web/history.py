"""Bounded time series for the dashboard: one sample per task type per interval, in ring buffers.

Task types are those ``router.decisions_by_model`` names (the named ones and ``other``, see web/top.py), so
there are at most ``limits.metrics_task_types`` + configured + 1 ring buffers of ``points`` samples each.

Every ``interval`` seconds :meth:`History.sample` turns the growth of ``router.decisions_by_model`` into
per-model decision counts, and prices that interval's mix with the current posteriors: the *model-based*
cost per request (``sum_m n_m * mean_cost_m / n``) and expected quality (``sum_m n_m * mean_quality_m / n``),
next to the same numbers for the best single model (highest posterior mean quality among routable models).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from banditroute.core import TaskState
from banditroute.routing import RoutingSnapshot, task_type_of
from banditroute.web.top import OTHER

DEFAULT_POINTS = 300  # five minutes at one sample per second
SHARE_WINDOW = 60  # samples behind the traffic-share gauge


def _state_for(router: Any, task_type: str) -> TaskState:
    state = router.view.get(task_type)
    if state is None:  # per-tenant keys: take any learnt key of this task type
        for key, held in router.view.items():
            if task_type_of(key) == task_type:
                state = held
                break
    snapshot: RoutingSnapshot = router.registry.snapshot
    return snapshot.state_for(state)


def price_mix(router: Any, task_type: str, counts: dict[str, int]) -> dict[str, Any]:
    """Model-based cost and quality of a decision mix, and of the best single model, for one task type."""
    state = _state_for(router, task_type)
    routable = {m.name for m in router.registry.models if m.routable}
    alpha, beta = state.alpha, state.beta
    quality = alpha / (alpha + beta)
    cost = state.mean_cost_usd
    index = {name: i for i, name in enumerate(state.names)}
    best_i = None
    for i, name in enumerate(state.names):
        if name in routable and (best_i is None or quality[i] > quality[best_i]):
            best_i = i
    total = sum(n for m, n in counts.items() if m in index)
    point: dict[str, Any] = {"cost_per_request": None, "quality": None}
    if total:
        point["cost_per_request"] = float(
            sum(n * cost[index[m]] for m, n in counts.items() if m in index) / total
        )
        point["quality"] = float(sum(n * quality[index[m]] for m, n in counts.items() if m in index) / total)
    if best_i is not None:
        point["best_model"] = state.names[best_i]
        point["best_cost"] = float(cost[best_i])
        point["best_quality"] = float(quality[best_i])
    return point


class History:
    """Ring buffers of samples per task type (bounded: ``points`` samples each, oldest dropped first)."""

    def __init__(self, points: int = DEFAULT_POINTS, interval_s: float = 1.0) -> None:
        self.points = points
        self.interval_s = interval_s
        self.tasks: dict[str, deque[dict[str, Any]]] = {}
        self.throughput: deque[dict[str, Any]] = deque(maxlen=points)
        self._last: dict[tuple[str, str], int] = {}
        self._last_decided: int | None = None

    def sample(self, router: Any, now_s: float | None = None) -> None:
        now_s = time.time() if now_s is None else now_s
        current = dict(router.decisions_by_model)
        by_task: dict[str, dict[str, int]] = {}
        for (task_type, model), n in current.items():
            delta = n - self._last.get((task_type, model), 0)
            by_task.setdefault(task_type, {})[model] = max(delta, 0)
        self._last = current
        for task_type in [t for t in self.tasks if t not in by_task]:
            del self.tasks[task_type]  # it lost its name (web/top.py): its series goes with its counters
        routable = [m.name for m in router.registry.models if m.routable]
        for task_type, counts in by_task.items():
            if task_type != OTHER:
                for name in routable:  # a model not yet decided shows as a zero share, not as a missing one
                    counts.setdefault(name, 0)
            priced = price_mix(router, task_type, counts) if task_type != OTHER else {}
            point = {"t": now_s, "counts": counts, **priced}
            self.tasks.setdefault(task_type, deque(maxlen=self.points)).append(point)
        decided = int(router.decider.decided)
        rate = 0 if self._last_decided is None else max(decided - self._last_decided, 0)
        self._last_decided = decided
        self.throughput.append({"t": now_s, "decisions": rate})

    def share(self, task_type: str, window: int = SHARE_WINDOW) -> dict[str, float]:
        """Traffic share per model over the last ``window`` samples (empty when nothing was decided)."""
        series = self.tasks.get(task_type)
        if not series:
            return {}
        totals: dict[str, int] = {}
        for point in list(series)[-window:]:
            for model, n in point["counts"].items():
                totals[model] = totals.get(model, 0) + n
        total = sum(totals.values())
        return {m: n / total for m, n in totals.items()} if total else {}

    def to_json(self, last: int | None = None) -> dict[str, Any]:
        """``/api/history``: the series per task type and a savings summary over the returned window."""
        tasks = {}
        for task_type, series in self.tasks.items():
            points = list(series)[-last:] if last else list(series)
            models = sorted({m for p in points for m in p["counts"]})
            tasks[task_type] = {"models": models, "points": points, "summary": _summary(points)}
        throughput = list(self.throughput)[-last:] if last else list(self.throughput)
        return {
            "interval_s": self.interval_s,
            "capacity": self.points,
            "tasks": tasks,
            "throughput": throughput,
        }


def _summary(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Decision-weighted cost and quality over the window, against the best single model."""
    n = cost = quality = best_cost = best_quality = 0.0
    for p in points:
        k = sum(p["counts"].values())
        if not k or p.get("cost_per_request") is None or p.get("best_cost") is None:
            continue
        n += k
        cost += k * p["cost_per_request"]
        quality += k * p["quality"]
        best_cost += k * p["best_cost"]
        best_quality += k * p["best_quality"]
    if not n:
        return {"requests": 0}
    return {
        "requests": int(n),
        "cost_per_request": cost / n,
        "quality": quality / n,
        "best_cost_per_request": best_cost / n,
        "best_quality": best_quality / n,
        "savings": 1.0 - cost / best_cost if best_cost > 0 else None,
    }
