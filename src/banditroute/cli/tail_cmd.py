"""``banditroute tail decisions|feedback|dlq``: read events, filtered, as a table or JSON lines."""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from banditroute.cli.output import (
    EXIT_INVALID,
    Ctx,
    client_options,
    console,
    emit_json,
    fail,
    fmt_cell,
    parse_offset,
    parse_since,
    print_table,
    run_async,
)
from banditroute.events import DeadLetter, Feedback, RoutingDecision, WireEvent

STREAMS: dict[str, tuple[str, type[WireEvent]]] = {
    "decisions": ("decisions", RoutingDecision),
    "feedback": ("feedback", Feedback),
    "dlq": ("deadletter", DeadLetter),
}

COLUMNS: dict[str, list[tuple[str, Callable[[Any], Any]]]] = {
    "decisions": [
        ("decided_at", lambda e: e.decided_at),
        ("request_id", lambda e: e.request_id),
        ("task_type", lambda e: e.task_type),
        ("tenant", lambda e: e.tenant),
        ("model", lambda e: e.model if e.model else f"- ({e.reasons.no_eligible})"),
        ("propensity", lambda e: e.propensity),
        ("explore", lambda e: e.reasons.exploration),
        (
            "flags",
            lambda e: ",".join(f for f, on in (("shadow", e.shadow), ("default", e.is_default_route)) if on),
        ),
        ("ms", lambda e: e.decision_ms),
    ],
    "feedback": [
        ("observed_at", lambda e: e.observed_at),
        ("request_id", lambda e: e.request_id),
        ("model", lambda e: e.model),
        ("quality", lambda e: e.quality),
        ("latency_ms", lambda e: e.latency_ms),
        ("cost_usd", lambda e: e.cost_usd),
        ("tokens", lambda e: None if e.tokens_in is None else f"{e.tokens_in}/{e.tokens_out}"),
        ("error", lambda e: e.error.value if e.error else None),
    ],
    "dlq": [
        ("dead_lettered_at", lambda e: e.dead_lettered_at),
        ("source", lambda e: f"{e.source_topic}[{e.source_partition}]@{e.source_offset}"),
        ("reason", lambda e: e.reason.value),
        ("error", lambda e: e.error),
    ],
}


def make_filter(
    stream: str, task_type: str | None, model: str | None, tenant: str | None, reason: str | None
) -> Callable[[Any], bool]:
    """A predicate over decoded events; raises ValueError for a filter the stream does not have."""
    if stream != "decisions" and (task_type or tenant):
        raise ValueError("--task-type and --tenant filter decisions only")
    if stream == "dlq" and model:
        raise ValueError("--model does not apply to dlq (use --reason)")
    if stream != "dlq" and reason:
        raise ValueError("--reason applies to dlq only")

    def keep(event: Any) -> bool:
        if task_type and event.task_type != task_type:
            return False
        if tenant and event.tenant != tenant:
            return False
        if model and event.model != model:
            return False
        return not (reason and event.reason.value != reason)

    return keep


def row_of(stream: str, event: Any) -> list[Any]:
    return [get(event) for _, get in COLUMNS[stream]]


@click.command()
@click.argument("stream", type=click.Choice(sorted(STREAMS)))
@click.option("--task-type", help="Only decisions of this task type.")
@click.option("--model", help="Only events for this model.")
@click.option("--tenant", help="Only decisions of this tenant.")
@click.option("--reason", help="Only dead letters with this reason code (dlq).")
@click.option("--since", help="Start at a time: relative (10m, 2h, 1d) or ISO 8601 (2025-01-31T12:00:00Z).")
@click.option(
    "--offset", help="Start at earliest, latest or an offset N per partition (negative: N before the end)."
)
@click.option("--follow", "-F", is_flag=True, help="Keep reading new events until interrupted.")
@click.option("--limit", "-n", type=click.IntRange(1), help="Stop after N matching events.")
@client_options
def tail(
    ctx: Ctx,
    stream: str,
    task_type: str | None,
    model: str | None,
    tenant: str | None,
    reason: str | None,
    since: str | None,
    offset: str | None,
    follow: bool,
    limit: int | None,
) -> None:
    """Print events of the decisions, feedback or dead-letter (dlq) topic.

    Without --follow it reads to the current end and exits. Without --since/--offset: --follow starts at the
    end (new events only); otherwise all events are read and, with --limit N, the LAST N matching ones are
    printed (with --since/--offset, the FIRST N from there).

    \b
    banditroute tail decisions --task-type summarise --since 10m
    banditroute tail feedback --model small-fast --follow --format json
    banditroute tail dlq --limit 20
    """
    if since and offset:
        fail("give --since or --offset, not both", EXIT_INVALID)
    try:
        keep = make_filter(stream, task_type, model, tenant, reason)
        start: Any
        if since:
            start = parse_since(since)
        elif offset:
            start = parse_offset(offset)
        else:
            start = "latest" if follow else "earliest"
    except ValueError as exc:
        fail(str(exc), EXIT_INVALID)
    last_n = limit is not None and not follow and not since and not offset
    run_async(_tail(ctx, stream, keep, start, follow, limit, last_n))


async def _tail(
    ctx: Ctx,
    stream: str,
    keep: Callable[[Any], bool],
    start: Any,
    follow: bool,
    limit: int | None,
    last_n: bool,
) -> None:
    from banditroute.codec import DecodeError, decode
    from banditroute.kafka.topics import read_topic

    suffix, event_type = STREAMS[stream]
    topic = ctx.settings.topic(suffix)
    # (timestamp, arrival, event); with last_n a min-heap of the newest N: the partitions are read one after
    # another, so the last N read are not the last N written
    collected: list[tuple[int, int, Any]] = []
    shown = 0
    live_console = console() if follow and not ctx.json else None
    if live_console is not None:
        live_console.print(" | ".join(name for name, _ in COLUMNS[stream]), style="bold")
    records = read_topic(ctx.settings, topic, start=start, follow=follow)
    async with contextlib.aclosing(records):
        async for record in records:
            if not record.value:  # tombstones and the worker's tick records (empty value, tick header)
                continue
            event = decode(event_type, record.value)
            if isinstance(event, DecodeError):
                click.echo(
                    f"warning: {topic}[{record.partition}]@{record.offset} does not decode: {event.reason.value}: {event.error}",
                    err=True,
                )
                continue
            if not keep(event):
                continue
            if follow:
                if ctx.json:
                    emit_json(event)
                else:
                    assert live_console is not None
                    live_console.print(
                        " | ".join(fmt_cell(v) for v in row_of(stream, event)), highlight=False
                    )
            elif not last_n:
                collected.append((record.timestamp, shown, event))
            elif len(collected) < (limit or 0):
                heapq.heappush(collected, (record.timestamp, shown, event))
            else:
                heapq.heappushpop(collected, (record.timestamp, shown, event))
            shown += 1
            if limit is not None and not last_n and shown >= limit:
                break
    if follow:
        return
    ordered = [(timestamp, event) for timestamp, _, event in sorted(collected, key=lambda item: item[:2])]
    if ctx.json:
        for _, event in ordered:
            emit_json(event)
        return
    now = datetime.now(UTC).strftime("%H:%M:%S")
    print_table(
        f"{topic}: {len(ordered)} event(s) at {now}Z",
        [name for name, _ in COLUMNS[stream]],
        [row_of(stream, event) for _, event in ordered],
    )


__all__ = ["make_filter", "tail"]
