"""``banditroute state [TASK_TYPE]``: what the router has learnt, per task type and model;
``banditroute state forget KEY``: remove a learnt state for good (a tombstone on the compacted state topic)."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from typing import Any

import click

from banditroute.cli.output import Ctx, client_options, emit_json, fail, print_table, run_async


def _num(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def summarise(
    key: str, state: Any, *, now_s: float, models: dict[str, Any], policy: Any | None
) -> dict[str, Any]:
    """One task state as plain data: per-model posterior quality with a 90% Beta credible interval, cost,
    latency, error rate, observations and observation share, circuit state, lifecycle; spend vs budget."""
    from banditroute.core.state import ERR, OK
    from banditroute.core.summary import credible_interval

    tenant, _, task_type = key.rpartition("|")
    alpha, beta = state.alpha, state.beta
    lows, highs = credible_interval(alpha, beta)
    errors, oks = state.column(ERR), state.column(OK)
    observations = state.observations
    total_obs = float(observations.sum())
    circuits = state.circuit_state(now_s)
    rows = []
    for i, name in enumerate(state.names):
        spec = models.get(name)
        seen = float(errors[i] + oks[i])
        rows.append(
            {
                "model": name,
                "quality_mean": _num(alpha[i] / (alpha[i] + beta[i])),
                "quality_ci90": [_num(lows[i]), _num(highs[i])],
                "mean_cost_usd": _num(state.mean_cost_usd[i]),
                "mean_latency_ms": _num(state.mean_latency_ms[i]),
                "error_rate": _num(errors[i] / seen) if seen > 0 else None,
                "observations": int(observations[i]),
                "observation_share": _num(observations[i] / total_obs) if total_obs > 0 else None,
                "circuit": circuits.get(name),
                "lifecycle": (spec.get("lifecycle") if spec else None) or ("unknown" if models else None),
                "enabled": spec.get("enabled") if spec else None,
            }
        )
    spend: dict[str, Any] = {
        "rate_usd_per_min": _num(state.spend_rate_per_min),
        "total_usd": _num(state.spend_total_usd),
        "calls": int(state.spend_calls),
        "mean_cost_usd": _num(state.spend_total_usd / state.spend_calls) if state.spend_calls else None,
        "budget_usd_per_min": getattr(policy, "budget_usd_per_min", None),
        "budget_mean_cost_usd": getattr(policy, "budget_mean_cost_usd", None),
        "objective": getattr(policy, "objective", None),
    }
    if spend["budget_usd_per_min"] and spend["rate_usd_per_min"] is not None:
        spend["rate_vs_budget"] = spend["rate_usd_per_min"] / spend["budget_usd_per_min"]
    return {
        "key": key,
        "task_type": task_type,
        "tenant": tenant or None,
        "version": int(state.version),
        "events": int(state.events),
        "share_basis": "observations (outcomes learnt), not decisions",
        "spend": spend,
        "models": rows,
    }


def _policies(ctx: Ctx) -> tuple[dict[str, Any], Any]:
    """Model lifecycles (config + catalog are merged by 'catalog list'; here config only) and a policy lookup."""
    try:
        from banditroute.config import Registry, RouterConfig, config_dir_of

        config_dir = config_dir_of(ctx.settings)[0]
        registry = Registry(RouterConfig.load(config_dir), config_dir)
    except Exception as exc:  # config is optional for this view
        click.echo(f"note: config not read, no budgets or lifecycles ({exc})", err=True)
        return {}, None
    models = {m.name: {"lifecycle": m.lifecycle, "enabled": m.enabled} for m in registry.config.models}
    return models, registry


class _ShowByDefault(click.Group):
    """``state [TASK_TYPE]`` shows; ``state forget KEY`` forgets (a first word that is no subcommand is shown)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["show", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_ShowByDefault)
def state() -> None:
    """Show the learnt state (``state [TASK_TYPE]``) or forget one for good (``state forget KEY``)."""


@state.command("show")
@click.argument("task_type", required=False)
@client_options
def show(ctx: Ctx, task_type: str | None) -> None:
    """Show the learnt state: per model the posterior mean quality with a 90% credible interval, mean cost
    and latency, error rate, observations and observation share (share of outcomes learnt, not of traffic),
    circuit breaker, lifecycle, and spend rate versus the budget of the task type's policy.

    Reads the compacted state topic to its end. TASK_TYPE limits the output to that task type (including its
    per-tenant keys).
    """
    from banditroute.cli.catalog_cmd import merged_view, read_catalog

    states = run_async(_read_states(ctx))
    models, registry = _policies(ctx)
    with contextlib.suppress(Exception):  # catalog events override config lifecycles
        for entry in merged_view({}, run_async(read_catalog(ctx))):
            models[entry["model"]] = {"lifecycle": entry.get("lifecycle"), "enabled": entry.get("enabled")}
    now = time.time()
    summaries = []
    for key in sorted(states):
        _, _, tt = key.rpartition("|")
        if task_type and tt != task_type:
            continue
        policy = None
        if registry is not None:
            with contextlib.suppress(Exception):
                policy = registry.policy(tt)
        summaries.append(summarise(key, states[key], now_s=now, models=models, policy=policy))
    if ctx.json:
        for summary in summaries:
            emit_json(summary)
        return
    if not summaries:
        click.echo(
            f"no learnt state{' for ' + task_type if task_type else ''} in {ctx.settings.topic('state')}"
        )
        return
    for s in summaries:
        spend = s["spend"]
        budget = spend["budget_usd_per_min"]
        title = (
            f"{s['key']}  v{s['version']}  events={s['events']}  spend={spend['rate_usd_per_min'] or 0:.4g} USD/min"
            + (f" of {budget:g} budget" if budget else "")
            + (
                f"  mean cost {spend['mean_cost_usd']:.4g} (budget {spend['budget_mean_cost_usd']:g})"
                if spend["budget_mean_cost_usd"] and spend["mean_cost_usd"] is not None
                else ""
            )
        )
        rows = [
            [
                m["model"],
                m["quality_mean"],
                f"{m['quality_ci90'][0]:.3f}-{m['quality_ci90'][1]:.3f}"
                if None not in m["quality_ci90"]
                else None,
                m["mean_cost_usd"],
                m["mean_latency_ms"],
                m["error_rate"],
                m["observations"],
                f"{m['observation_share']:.1%}" if m["observation_share"] is not None else None,
                m["circuit"],
                m["lifecycle"],
            ]
            for m in s["models"]
        ]
        print_table(
            title,
            [
                "model",
                "quality",
                "90% CI",
                "cost_usd",
                "latency_ms",
                "err_rate",
                "obs",
                "obs share",
                "circuit",
                "lifecycle",
            ],
            rows,
        )


@state.command("forget")
@click.argument("keys", nargs=-1, required=True)
@click.option(
    "--tenants", is_flag=True, help="Also forget every per-tenant state (<tenant>|KEY) of the task type."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@client_options
def forget(ctx: Ctx, keys: tuple[str, ...], tenants: bool, yes: bool) -> None:
    """Remove learnt states for good: write a tombstone for each KEY (a task type, ``<tenant>|<task type>``, or
    ``~shared``) to the compacted state topic. Every worker drops it from memory as it reads the tombstone;
    the next outcome for it starts again from the prior. Idle states are evicted from memory without this
    (policy.yaml ``limits.idle_evict_s``) and come back from the topic; ``forget`` is for good.
    """
    states = run_async(_read_states(ctx))
    wanted = {k for k in keys if k in states}
    if tenants:
        wanted |= {k for k in states if k.rpartition("|")[2] in keys and "|" in k}
    missing = [
        k for k in keys if k not in states and not (tenants and any(w.endswith(f"|{k}") for w in wanted))
    ]
    if missing:
        fail(f"no learnt state {', '.join(repr(k) for k in missing)} in {ctx.settings.topic('state')}")
    if not yes and sys.stdin.isatty():
        click.confirm(f"forget {len(wanted)} state(s): {', '.join(sorted(wanted))}?", abort=True)
    run_async(_tombstones(ctx, sorted(wanted)))
    for key in sorted(wanted):
        if ctx.json:
            emit_json({"forgotten": key, "topic": ctx.settings.topic("state")})
        else:
            click.echo(f"forgot {key} ({ctx.settings.topic('state')})")


async def _tombstones(ctx: Ctx, keys: list[str]) -> None:
    """A null-valued record per key, on the partition the worker's state table uses for it (JSON key)."""
    import orjson

    from banditroute.kafka.topics import write_keyed

    settings = ctx.settings
    await write_keyed(settings, settings.topic("state"), [(orjson.dumps(key), None) for key in keys])


async def _read_states(ctx: Ctx) -> dict[str, Any]:

    from banditroute.core import decode_state
    from banditroute.kafka.state_reader import state_key_of
    from banditroute.kafka.topics import read_topic

    latest: dict[str, bytes | None] = {}
    records = read_topic(ctx.settings, ctx.settings.topic("state"), start="earliest")
    try:
        async with contextlib.aclosing(records):
            async for record in records:
                if record.key is None:
                    continue
                key = state_key_of(record.key)
                if key is None:  # not a JSON string: the learner's table holds it under no task type
                    click.echo(f"warning: state record with key {record.key!r} is no task type's", err=True)
                    continue
                latest[key] = record.value
    except LookupError:
        return {}
    out: dict[str, Any] = {}
    for key, value in latest.items():
        if value is None:
            continue
        try:
            out[key] = decode_state(value)
        except Exception as exc:
            click.echo(f"warning: state {key!r} does not decode: {exc}", err=True)
    return out


__all__ = ["state", "summarise"]
