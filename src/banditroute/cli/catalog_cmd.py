"""``banditroute catalog add|update|retire|list``: change the model catalog at runtime, or show it."""

from __future__ import annotations

import contextlib
from typing import Any

import click

from banditroute.cli.output import (
    EXIT_INVALID,
    Ctx,
    client_options,
    emit_json,
    fail,
    print_record,
    print_table,
    run_async,
    split_names,
)
from banditroute.events import ModelCatalogEvent

FIELDS = (
    "price_in_per_1k_usd",
    "price_out_per_1k_usd",
    "cost_per_call_usd",
    "capabilities",
    "context_window",
    "latency_ms",
    "enabled",
    "lifecycle",
    "quality_prior",
    "rate_limit_rps",
    "tokens_per_minute",
)


def config_models(ctx: Ctx) -> dict[str, dict[str, Any]]:
    """Models of ``config/models.yaml`` as catalog-like dicts (empty when the config cannot be read)."""
    try:
        from banditroute.config import RouterConfig, config_dir_of

        config = RouterConfig.load(config_dir_of(ctx.settings)[0])
    except Exception as exc:  # the config module or files may be absent; the topic view still works
        click.echo(f"note: config not read ({exc})", err=True)
        return {}
    out: dict[str, dict[str, Any]] = {}
    for spec in config.models:
        out[spec.name] = {
            "model": spec.name,
            "action": None,
            "source": "config",
            "price_in_per_1k_usd": spec.price_in_per_1k_usd,
            "price_out_per_1k_usd": spec.price_out_per_1k_usd,
            "cost_per_call_usd": spec.cost_per_call_usd,
            "capabilities": sorted(spec.capabilities),
            "context_window": spec.context_window,
            "latency_ms": spec.latency_ms,
            "enabled": spec.enabled,
            "lifecycle": spec.lifecycle,
            "quality_prior": list(spec.quality_prior),
            "rate_limit_rps": spec.rate_limit_rps,
            "tokens_per_minute": spec.tokens_per_minute,
            "updated_at": None,
        }
    return out


async def read_catalog(ctx: Ctx) -> dict[str, ModelCatalogEvent | None]:
    """Latest catalog event per model from the compacted topic (None = tombstone); empty if no topic."""
    from banditroute.codec import decode
    from banditroute.kafka.topics import read_topic

    latest: dict[str, ModelCatalogEvent | None] = {}
    records = read_topic(ctx.settings, ctx.settings.topic("catalog"), start="earliest")
    try:
        async with contextlib.aclosing(records):
            async for record in records:
                key = record.key.decode("utf-8", "replace") if record.key else None
                if record.value is None:
                    if key:
                        latest[key] = None
                    continue
                event = decode(ModelCatalogEvent, record.value)
                if isinstance(event, ModelCatalogEvent):
                    latest[event.model] = event
    except LookupError:
        return {}
    return latest


def merged_view(
    config: dict[str, dict[str, Any]], events: dict[str, ModelCatalogEvent | None]
) -> list[dict[str, Any]]:
    """Config models overlaid by the latest catalog event per model (events replace the whole entry)."""
    view = {name: dict(entry) for name, entry in config.items()}
    for name, event in events.items():
        if event is None:
            continue
        entry = event.model_dump(mode="json")
        entry.pop("schema_version", None)
        entry["source"] = "catalog+config" if name in config else "catalog"
        if event.action == "retired":
            base = view.get(name, {"model": name})
            entry = {
                **base,
                "action": "retired",
                "source": entry["source"],
                "updated_at": entry["updated_at"],
            }
            entry["lifecycle"] = "retired"
            entry["enabled"] = False
        view[name] = entry
    return [view[name] for name in sorted(view)]


@click.group()
def catalog() -> None:
    """Add, update or retire models at runtime (events on the compacted catalog topic), or list them."""


def _model_options(func: Any) -> Any:
    options = [
        click.option(
            "--price-in", "price_in_per_1k_usd", type=click.FloatRange(0.0), help="USD per 1k prompt tokens."
        ),
        click.option(
            "--price-out",
            "price_out_per_1k_usd",
            type=click.FloatRange(0.0),
            help="USD per 1k completion tokens.",
        ),
        click.option(
            "--cost-per-call", "cost_per_call_usd", type=click.FloatRange(0.0), help="Expected USD per call."
        ),
        click.option(
            "--capability", "capabilities", multiple=True, help="Capability (repeat or comma-separate)."
        ),
        click.option("--context-window", type=click.IntRange(1), help="Context window in tokens."),
        click.option("--latency-ms", type=click.FloatRange(0.0), help="Expected latency in ms."),
        click.option(
            "--enabled/--disabled", "enabled", default=None, help="Take the model in or out of routing."
        ),
        click.option(
            "--lifecycle", type=click.Choice(["active", "canary", "shadow"]), help="Lifecycle stage."
        ),
        click.option(
            "--quality-prior", type=(float, float), default=None, help="Beta prior ALPHA BETA (> 0)."
        ),
        click.option(
            "--rate-limit-rps", type=click.FloatRange(0.0, min_open=True), help="Requests per second."
        ),
        click.option("--tokens-per-minute", type=click.IntRange(1), help="Provider tokens-per-minute limit."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _given(values: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in values.items() if k in FIELDS and v is not None}
    if "capabilities" in out:
        names = split_names(out["capabilities"])
        if names is None:
            del out["capabilities"]
        else:
            out["capabilities"] = names
    return out


def _publish(ctx: Ctx, event: ModelCatalogEvent) -> None:
    from banditroute.client import produce_events

    run_async(produce_events(ctx.settings, "catalog", [(event.model, event)]))
    print_record(event, ctx, title=f"catalog: {event.action} {event.model}")


def _make_event(**values: Any) -> ModelCatalogEvent:
    from pydantic import ValidationError

    from banditroute.client import utcnow
    from banditroute.codec import describe_validation_error

    try:
        return ModelCatalogEvent(updated_at=utcnow(), **values)
    except ValidationError as exc:
        fail(describe_validation_error(exc), EXIT_INVALID)


@catalog.command("add")
@click.argument("model")
@_model_options
@client_options
def add(ctx: Ctx, model: str, **values: Any) -> None:
    """Add MODEL (--price-in and --price-out are required)."""
    _publish(ctx, _make_event(action="added", model=model, **_given(values)))


@catalog.command("update")
@click.argument("model")
@_model_options
@client_options
def update(ctx: Ctx, model: str, **values: Any) -> None:
    """Update MODEL: fields not given keep their current value (from the catalog topic or config)."""
    current = {e["model"]: e for e in merged_view(config_models(ctx), run_async(read_catalog(ctx)))}.get(
        model
    )
    if current is None:
        fail(
            f"model {model} is neither in the catalog topic nor in the config; use 'catalog add'",
            EXIT_INVALID,
        )
    base = {k: current.get(k) for k in FIELDS if current.get(k) is not None}
    if base.get("lifecycle") == "retired":
        base.pop("lifecycle")
    merged = {**base, **_given(values)}
    if "quality_prior" in merged:
        merged["quality_prior"] = tuple(merged["quality_prior"])
    _publish(ctx, _make_event(action="updated", model=model, **merged))


@catalog.command("retire")
@click.argument("model")
@client_options
def retire(ctx: Ctx, model: str) -> None:
    """Retire MODEL: it is no longer routed (its learned state is kept)."""
    _publish(ctx, _make_event(action="retired", model=model))


@catalog.command("list")
@click.option("--no-config", is_flag=True, help="Show only the catalog topic, not config/models.yaml.")
@client_options
def list_models(ctx: Ctx, no_config: bool) -> None:
    """List models: config/models.yaml merged with the latest catalog event per model."""
    config = {} if no_config else config_models(ctx)
    view = merged_view(config, run_async(read_catalog(ctx)))
    if ctx.json:
        for entry in view:
            emit_json(entry)
        return
    columns = [
        "model",
        "lifecycle",
        "enabled",
        "price_in/1k",
        "price_out/1k",
        "cost/call",
        "latency_ms",
        "capabilities",
        "source",
        "updated_at",
    ]
    rows = [
        [
            e.get("model"),
            e.get("lifecycle"),
            e.get("enabled"),
            e.get("price_in_per_1k_usd"),
            e.get("price_out_per_1k_usd"),
            e.get("cost_per_call_usd"),
            e.get("latency_ms"),
            e.get("capabilities"),
            e.get("source"),
            e.get("updated_at"),
        ]
        for e in view
    ]
    print_table(f"models ({ctx.settings.topic('catalog')} + config)", columns, rows)


__all__ = ["catalog", "merged_view"]
