"""Metrics and dashboard stay bounded whatever clients put into task_type (no broker, synthetic router)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from banditroute.core.state import N_OBS, Q_N, Q_SUM, replace_state
from banditroute.join_io import local_counted
from banditroute.limits import SHARED_KEY
from banditroute.web.history import History
from banditroute.web.metrics import RouterMetrics, series_bound
from banditroute.web.snapshot import state_json
from banditroute.web.top import NAMED_CLIENTS, OTHER, TopTaskTypes
from tests.web.test_builders import fake_router, samples


def test_top_task_types_names_the_busiest_and_folds_the_rest() -> None:
    top = TopTaskTypes(n=2, window_s=60.0, pinned={"summarize"})
    counts: dict[tuple[str, str], int] = {}
    top.count(counts, "junk-a", "m", 0.0)  # the first two unlisted task types are named at once
    top.count(counts, "junk-b", "m", 0.1)
    for i in range(50):
        top.count(counts, "chat", "m", 1.0 + i)
        top.count(counts, "code", "m", 1.0 + i)
        top.count(counts, "summarize", "m", 1.0 + i)
    assert counts[(OTHER, "m")] == 100 and counts[("summarize", "m")] == 50
    top.count(counts, "chat", "m", 61.0)  # window end: chat and code are the busiest
    assert top.named == {"chat", "code"} and top.is_named("summarize")
    assert ("junk-a", "m") not in counts and counts[("chat", "m")] == 1  # a new series starts at 0
    assert counts[(OTHER, "m")] == 100  # other never decreases


def test_counting_n_at_once_is_counting_one_n_times() -> None:
    """The worker counts a polled batch once per (task type, model) (``Router._on_decisions``)."""
    one, many = TopTaskTypes(n=2, window_s=60.0), TopTaskTypes(n=2, window_s=60.0)
    ones: dict[tuple[str, str], int] = {}
    manys: dict[tuple[str, str], int] = {}
    for now, batch in ((0.0, [("a", 3), ("b", 2), ("c", 7)]), (61.0, [("c", 4), ("a", 1)])):
        for task_type, n in batch:
            for _ in range(n):
                one.count(ones, task_type, "m", now)
            many.count(manys, task_type, "m", now, n)
        assert manys == ones and many.named == one.named and many._counts == one._counts
    assert ones[("c", "m")] == 4  # named at the window end, counted from there


def test_candidate_table_is_bounded_under_a_flood_of_one_off_names() -> None:
    top = TopTaskTypes(n=5)
    counts: dict[tuple[str, str], int] = {}
    for i in range(200_000):
        top.count(counts, "chat", "m", i * 1e-4)
        top.count(counts, f"junk-{i}", "m", i * 1e-4)
    assert len(top._counts) <= 50 and len(counts) <= 6
    assert top.count(counts, "chat", "m", 100.0) == "chat"  # still named after every window
    assert "chat" in top.named


@pytest.mark.parametrize("by_batch", [False, True])
def test_a_task_type_met_with_the_candidate_table_full_is_counted(by_batch: bool) -> None:
    top = TopTaskTypes(n=1, window_s=60.0)  # a table of 10 candidates
    counts: dict[tuple[str, str], int] = {}

    def count(pairs: list[tuple[str, int]]) -> None:
        if by_batch:
            top.count_many(counts, [((task_type, "m"), n) for task_type, n in pairs], 0.0)
        else:
            for task_type, n in pairs:
                top.count(counts, task_type, "m", 0.0, n)

    count([("t0", 2)] + [(f"t{i}", 1) for i in range(1, 10)])
    assert len(top._counts) == 10
    count([("late", 3)])
    assert top._counts == {"t0": 2, "late": 3}  # the least seen dropped, the newcomer counted


def test_metrics_history_and_state_stay_bounded_under_a_task_type_flood(tmp_path: Path) -> None:
    router = fake_router(tmp_path)
    limits = router.registry.snapshot.limits
    router.top = TopTaskTypes(limits.metrics_task_types, pinned=router.registry.snapshot.routes)
    router.decisions_by_model = Counter()
    router.client_top, router.local_decisions = TopTaskTypes(NAMED_CLIENTS), Counter()
    history = History(points=5)
    metrics = RouterMetrics(router, history)
    base = router.view.get("chat")
    flood = 3_000
    for i in range(flood):
        task_type = f"junk-{i}"
        now = i * 0.05  # 150 s: several ranking windows
        router.top.count(router.decisions_by_model, task_type, "balanced", now)
        router.top.count(router.decisions_by_model, "chat", "premium", now)
        # local-mode decisions (join_io) naming a new client and a made-up model each, and the catalog's
        for model in (f"made-up-{i}", "premium", None):
            local = {"worker_id": f"client-{i}", "model": model}
            router.client_top.count(
                router.local_decisions, *local_counted(local, router.registry.model_names), now
            )
        metrics.observe_decision({"task_type": task_type, "decision_ms": 0.1})
        if i % 20 == 0:
            history.sample(router, now)
        if i % 10 == 0:  # learnt states of many of them, as with a max_task_types this high
            stats = base.stats.copy()
            stats[0, Q_SUM], stats[0, Q_N], stats[0, N_OBS] = 1.0, 2.0, 2.0
            router.view.offer(task_type, replace_state(base, stats=stats, version=1))
    router.view.offer(SHARED_KEY, base)
    text = metrics.render().decode()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    named = router.top.size()
    models = len(router.registry.models)
    assert named <= limits.metrics_task_types + len(router.registry.snapshot.routes)
    assert len(lines) <= series_bound(named, limits.metrics_state_keys, models)
    found = samples(text)
    task_labels = {s.labels["task_type"] for s in found["banditroute_decisions_total"]}
    assert "chat" in task_labels and OTHER in task_labels and len(task_labels) <= named + 1
    clients = {s.labels["client"] for s in found["banditroute_local_decisions_total"]}
    assert OTHER in clients and len(clients) <= NAMED_CLIENTS + 1
    local_models = {s.labels["model"] for s in found["banditroute_local_decisions_total"]}
    assert local_models == {OTHER, "premium", "None"}
    latency = {s.labels["task_type"] for s in found["banditroute_decision_latency_seconds_count"]}
    assert len(latency) <= named + 1
    keys = {s.labels["task_key"] for s in found["banditroute_state_version"]}
    assert "chat" in keys and SHARED_KEY in keys and len(keys) <= limits.metrics_state_keys
    assert len(history.tasks) <= named + 1 and "chat" in history.tasks
    assert len(state_json(router)["tasks"]) <= limits.metrics_state_keys


def test_history_names_every_routable_model_even_before_it_is_decided(tmp_path: Path) -> None:
    """The dashboard's share chart has an area per routable model: one never decided shows as a zero share."""
    router = fake_router(tmp_path)
    router.top = TopTaskTypes(20, pinned=router.registry.snapshot.routes)
    router.decisions_by_model = Counter()
    router.top.count(router.decisions_by_model, "chat", "premium", 0.0)
    history = History(points=5)
    history.sample(router, 0.0)
    routable = sorted(m.name for m in router.registry.models if m.routable)
    series = history.to_json()["tasks"]["chat"]
    assert series["models"] == routable and len(routable) > 1
    assert series["points"][-1]["counts"] == {name: int(name == "premium") for name in routable}


def test_observing_a_batch_is_observing_each_decision(tmp_path: Path) -> None:
    """The worker records a shipped batch's decision times at once (``observe_batch``): same histogram as one
    call per decision, with the flood's task types under ``other`` and a renamed label dropped."""
    one_by_one, batched = (
        RouterMetrics(fake_router(tmp_path), None),
        RouterMetrics(fake_router(tmp_path), None),
    )
    for metrics in (one_by_one, batched):
        metrics.collector.router.top = TopTaskTypes(2, window_s=60.0)
        metrics.collector.router.decisions_by_model = Counter()
    rounds = [
        (0.0, [("chat", 0.2), ("code", 1.5), ("chat", 30.0), ("junk-1", 0.1)]),
        (61.0, [(f"junk-{i}", 0.01 * i) for i in range(50)] + [("junk-7", 0.4)] * 30 + [("chat", 2.0)] * 5),
        (122.0, [("junk-7", 0.5)] * 20 + [("code", 0.3)]),
    ]
    for now, batch in rounds:
        for metrics in (one_by_one, batched):
            top, counts = metrics.collector.router.top, metrics.collector.router.decisions_by_model
            for task_type, _ms in batch:
                top.count(counts, task_type, "balanced", now)
        for task_type, ms in batch:
            one_by_one.observe(task_type, ms)
        batched.observe_batch(iter(batch))
        assert latency_samples(batched) == latency_samples(one_by_one)
    final = latency_samples(batched)
    assert {labels[0] for labels in final} == {"chat", "junk-7", OTHER}  # code lost its name at 122 s
    assert final[(OTHER, "count")] >= 50  # the second round's one-off task types at least


def latency_samples(metrics: RouterMetrics) -> dict[tuple[str, str], float]:
    """The decision latency histogram's samples by (task type, count / sum / bucket bound)."""
    found = samples(metrics.render().decode())
    name = "banditroute_decision_latency_seconds"
    return {
        (s.labels["task_type"], part + s.labels.get("le", "")): s.value
        for part in ("count", "sum", "bucket")
        for s in found[f"{name}_{part}"]
    }
