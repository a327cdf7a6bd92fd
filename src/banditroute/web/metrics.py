"""Prometheus metrics of one router: a per-router ``CollectorRegistry`` and a collector reading live state.

Counters and gauges are not mirrored into prometheus-client objects on the hot path; :class:`RouterCollector`
reads the router's own counters, posteriors and budgets when ``/metrics`` is scraped. The only hot-path metric
is the decision latency histogram, observed from the decide loop's ``on_decision`` callback.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from banditroute.web.snapshot import JOIN_COUNTERS, model_rows, task_states
from banditroute.web.top import NAMED_CLIENTS, OTHER

CIRCUIT_STATES = ("closed", "open", "half_open")
CANARY_STATES = ("ramping", "graduated")
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
FIXED_SERIES = 100
"""Series that do not depend on task types or models: counters, join events, dead-letter reasons, lag, caps."""


def series_bound(named_task_types: int, state_keys: int, models: int) -> int:
    """The most sample lines ``/metrics`` can have: per-task families count the named task types plus
    ``other``; posterior families at most ``limits.metrics_state_keys`` state keys (see web/top.py); local-mode
    decisions the named clients plus ``other`` by the models plus ``None`` and ``other`` (join_io.local_counted)."""
    labels = named_task_types + 1
    return (
        labels * (models + 1)  # banditroute_decisions_total, "<none>" included
        + (NAMED_CLIENTS + 1) * (models + 2)  # banditroute_local_decisions_total (since review21)
        + labels * (len(LATENCY_BUCKETS) + 4)  # the latency histogram: buckets, +Inf, count, sum, created
        + state_keys * models * 11  # 5 posterior gauges, 3 circuit states, 2 canary states, traffic share
        + state_keys * 6  # spend, budgets, mean cost, dual, version
        + FIXED_SERIES
    )


CONTENT_TYPE = "text/plain; version=0.0.4"  # charset utf-8 is set on the response (aiohttp wants it apart)


class RouterCollector:
    """Builds every ``banditroute_*`` family (except the latency histogram) from the router at scrape time."""

    def __init__(self, router: Any, history: Any = None, lag: Any = None) -> None:
        self.router = router
        self.history = history
        self.lag = lag

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: nothing is read at registration

    def collect(self) -> Iterator[Metric]:
        r = self.router
        now = time.time()

        decisions = CounterMetricFamily(
            "banditroute_decisions",
            "Routing decisions published, by task type and model.",
            labels=["task_type", "model"],
        )
        for (task_type, model), n in sorted(dict(r.decisions_by_model).items()):
            decisions.add_metric([task_type, model], n)
        yield decisions

        counters = dict(r.counters)
        yield _counter(
            "banditroute_feedback_joined",
            "Feedback joined with its decision in time.",
            counters.get("joined", 0),
        )
        yield _counter(
            "banditroute_late_feedback",
            "Feedback joined after the reward wait window (learnt, flagged late).",
            counters.get("late_feedback", 0),
        )
        yield _counter(
            "banditroute_reward_timeouts",
            "Decisions whose reward wait window expired without feedback.",
            counters.get("reward_timeouts", 0),
        )
        yield _counter(
            "banditroute_outcomes_learned", "Outcomes applied to the posteriors.", counters.get("learned", 0)
        )
        join = CounterMetricFamily(
            "banditroute_join_events",
            "Feedback join events by kind (see docs/dashboard.md).",
            labels=["event"],
        )
        for name in sorted(set(JOIN_COUNTERS) | set(counters)):
            join.add_metric([name], counters.get(name, 0))
        yield join
        yield _gauge("banditroute_join_in_flight", "Entries held in the join table.", r.join.in_flight())

        local = CounterMetricFamily(
            "banditroute_local_decisions",
            "Decisions of local-mode clients joined by this worker, by client id (the 20 busiest; the rest: "
            "other) and model.",
            labels=["client", "model"],
        )
        for (client, model), n in sorted(dict(getattr(r, "local_decisions", {})).items()):
            local.add_metric([client, model], n)
        yield local

        capped = CounterMetricFamily(
            "banditroute_capped_requests",
            "Requests a cap on client-named keys applied to (policy.yaml limits), by cap.",
            labels=["cap"],
        )
        for cap, n in sorted(dict(getattr(r, "capped", {})).items()):
            capped.add_metric([cap], n)
        yield capped
        foreign = CounterMetricFamily(
            "banditroute_capped_foreign_decisions",
            "Decisions read from the decisions topic (a local-mode client's, anything that writes the topic) a "
            "cap on client-named keys applied to, by cap: learnt into ~shared or the task type's state, or "
            "dead-lettered (unknown_task_type).",
            labels=["cap"],
        )
        for cap, n in sorted(dict(getattr(r, "foreign_capped", {})).items()):
            foreign.add_metric([cap], n)
        yield foreign
        admission = getattr(getattr(r, "decide_logic", None), "admission", None)
        if admission is not None:
            held = admission.counts()
            yield _gauge(
                "banditroute_held_task_types",
                "Unlisted task types holding their own state on this worker (bounded by max_task_types).",
                held["task_types_held"],
            )
            yield _gauge(
                "banditroute_held_tenant_states",
                "Per-tenant states held (bounded by max_tenants_per_task_type per task type).",
                held["tenant_states_held"],
            )

        dead = CounterMetricFamily(
            "banditroute_dead_letters", "Records dead-lettered, by reason.", labels=["reason"]
        )
        for reason, n in sorted(r.dead_letters.snapshot().items()):
            dead.add_metric([reason], n)
        yield dead

        yield from self._posteriors(now)
        yield from self._lag()

    def _posteriors(self, now: float) -> Iterator[Metric]:
        r = self.router
        labels = ["task_key", "task_type", "model"]
        mean = GaugeMetricFamily(
            "banditroute_posterior_quality_mean", "Posterior mean quality.", labels=labels
        )
        low = GaugeMetricFamily(
            "banditroute_posterior_quality_low", "Lower end of the 90% credible interval.", labels=labels
        )
        high = GaugeMetricFamily(
            "banditroute_posterior_quality_high", "Upper end of the 90% credible interval.", labels=labels
        )
        cost = GaugeMetricFamily(
            "banditroute_posterior_cost_usd", "Posterior mean cost of one call.", labels=labels
        )
        obs = GaugeMetricFamily(
            "banditroute_model_observations", "Outcomes ever learnt per model.", labels=labels
        )
        circuit = GaugeMetricFamily(
            "banditroute_circuit_state",
            "Circuit breaker state (1 for the current state).",
            labels=[*labels, "state"],
        )
        canary = GaugeMetricFamily(
            "banditroute_canary_state",
            "Canary ramp state of canary models (1 for the current state).",
            labels=[*labels, "state"],
        )
        share = GaugeMetricFamily(
            "banditroute_traffic_share",
            "Share of decisions per model over the last minute.",
            labels=["task_type", "model"],
        )
        tlabels = ["task_key", "task_type"]
        spend = GaugeMetricFamily(
            "banditroute_spend_rate_usd_per_minute", "Realised spend rate (60 s decay).", labels=tlabels
        )
        budget_rate = GaugeMetricFamily(
            "banditroute_budget_usd_per_minute", "Configured spend-rate budget.", labels=tlabels
        )
        mean_cost = GaugeMetricFamily(
            "banditroute_mean_cost_per_call_usd", "Realised mean cost per call.", labels=tlabels
        )
        budget_mean = GaugeMetricFamily(
            "banditroute_budget_mean_cost_usd", "Configured mean-cost budget.", labels=tlabels
        )
        dual = GaugeMetricFamily(
            "banditroute_pacing_dual", "Budget pacing dual variable (λ in budget mode).", labels=tlabels
        )
        version = GaugeMetricFamily(
            "banditroute_state_version", "Version of the posterior state held.", labels=tlabels
        )
        shared: set[str] = set()
        for key, task_type, state in task_states(r):
            policy = r.registry.policy(task_type)
            for row in model_rows(r, task_type, state, now):
                values = [key, task_type, row["model"]]
                for family, field in (
                    (mean, "quality_mean"),
                    (low, "quality_low"),
                    (high, "quality_high"),
                    (cost, "mean_cost_usd"),
                ):
                    if row[field] is not None:
                        family.add_metric(values, row[field])
                obs.add_metric(values, row["observations"])
                for s in CIRCUIT_STATES:
                    circuit.add_metric([*values, s], 1.0 if row["circuit"] == s else 0.0)
                if row["lifecycle"] == "canary":
                    for s in CANARY_STATES:
                        canary.add_metric([*values, s], 1.0 if row["canary"] == s else 0.0)
            tvalues = [key, task_type]
            spend.add_metric(tvalues, state.spend_rate_per_min)
            if policy.budget_usd_per_min is not None:
                budget_rate.add_metric(tvalues, policy.budget_usd_per_min)
            if state.spend_calls:
                mean_cost.add_metric(tvalues, state.spend_total_usd / state.spend_calls)
            if policy.budget_mean_cost_usd is not None:
                budget_mean.add_metric(tvalues, policy.budget_mean_cost_usd)
            dual.add_metric(tvalues, state.dual)
            version.add_metric(tvalues, state.version)
            if self.history is not None and task_type not in shared:
                shared.add(task_type)
                for model, fraction in sorted(self.history.share(task_type).items()):
                    share.add_metric([task_type, model], fraction)
        yield from (
            mean,
            low,
            high,
            cost,
            obs,
            circuit,
            canary,
            share,
            spend,
            budget_rate,
            mean_cost,
            budget_mean,
            dual,
            version,
        )

    def _lag(self) -> Iterator[Metric]:
        if self.lag is None:
            return
        snap = self.lag.snapshot()
        lag = GaugeMetricFamily(
            "banditroute_consumer_lag",
            "Committed consumer lag (end offset - committed offset), summed over partitions.",
            labels=["group", "topic"],
        )
        for row in snap["groups"]:
            lag.add_metric([row["group"], row["topic"]], row["lag"])
        yield lag
        if snap["sampled_at"] is not None:
            yield _gauge(
                "banditroute_consumer_lag_sampled_timestamp_seconds",
                "When the lag was last sampled.",
                snap["sampled_at"],
            )


def _counter(name: str, doc: str, value: float) -> Metric:
    family = CounterMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def _gauge(name: str, doc: str, value: float) -> Metric:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family


class RouterMetrics:
    """The per-router registry: the live collector plus the decision latency histogram."""

    def __init__(self, router: Any, history: Any = None, lag: Any = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = RouterCollector(router, history, lag)
        self.registry.register(self.collector)
        self.decision_latency = Histogram(
            "banditroute_decision_latency_seconds",
            "Time to compute one routing decision (decide logic, excluding Kafka).",
            labelnames=["task_type"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._latency_labels: set[str] = set()

    def observe_decision(self, decision: dict[str, Any]) -> None:
        ms = decision.get("decision_ms")
        if isinstance(ms, int | float):
            self.observe(str(decision.get("task_type", "")), ms)

    def observe(self, task_type: str, ms: float) -> None:
        """One decision's time to decide (``decision_ms``) under its task type's label."""
        self.observe_batch(((task_type, ms),))

    def observe_batch(self, decided: Iterable[tuple[str, float]]) -> None:
        """Decisions' times to decide (``(task_type, decision_ms)``), each under its task type's label; the
        histogram's child is looked up once per label in the batch (a flood's task types all fall under
        ``other``), which was most of the cost per decision on the worker's main thread."""
        top = getattr(self.collector.router, "top", None)
        children: dict[str, Any] = {}
        for task_type, ms in decided:
            label = task_type if top is None else top.label_of(task_type)
            child = children.get(label)
            if child is None:
                if top is not None and label not in self._latency_labels:
                    for gone in [t for t in self._latency_labels if t != OTHER and not top.is_named(t)]:
                        self.decision_latency.remove(gone)  # it lost its name (web/top.py)
                        self._latency_labels.discard(gone)
                    self._latency_labels.add(label)
                child = children[label] = self.decision_latency.labels(label)
            child.observe(ms / 1000.0)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
