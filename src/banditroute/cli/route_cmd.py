"""``banditroute route``: send one routing request (options) or many (``--file requests.jsonl``)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import click
import orjson

from banditroute.cli.output import (
    EXIT_INVALID,
    EXIT_UNAVAILABLE,
    Ctx,
    client_options,
    emit_json,
    fail,
    parse_kv,
    print_record,
    print_table,
    read_jsonl,
    report_jsonl_errors,
    run_async,
    split_names,
)
from banditroute.events import RoutingDecision, RoutingRequest


def parse_request_line(data: dict[str, Any]) -> RoutingRequest:
    """One JSONL line -> RoutingRequest, strictly validated like the worker does; ``request_id``,
    ``created_at`` and ``schema_version`` are filled in when missing."""
    from banditroute.client import new_request_id, utcnow
    from banditroute.codec import decode

    filled = dict(data)
    filled.setdefault("request_id", new_request_id())
    filled.setdefault("created_at", utcnow().isoformat().replace("+00:00", "Z"))
    filled.setdefault("schema_version", 1)
    result = decode(RoutingRequest, orjson.dumps(filled))
    if not isinstance(result, RoutingRequest):
        raise ValueError(f"{result.reason.value}: {result.error}")
    return result


@click.command()
@click.option("--task-type", "-t", help="Task type of the request (required unless --file).")
@click.option("--tenant", help="Tenant or team.")
@click.option("--candidate", "candidates", multiple=True, help="Allowed model (repeat or comma-separate).")
@click.option("--exclude", "excludes", multiple=True, help="Denied model (repeat or comma-separate).")
@click.option("--max-cost-usd", type=float, help="Largest acceptable expected cost in USD.")
@click.option("--max-latency-ms", type=float, help="Largest acceptable expected latency in ms.")
@click.option("--capability", "capabilities", multiple=True, help="Required capability (repeatable).")
@click.option("--metadata", "-m", "metadata", multiple=True, help="Label KEY=VALUE (repeatable).")
@click.option("--objective", type=click.Choice(["utility", "budget"]), help="Objective override.")
@click.option("--lam", type=float, help="Price of one USD in quality units (objective override).")
@click.option("--mu", type=float, help="Price of one second of latency (objective override).")
@click.option("--request-id", help="Request id (default: a random uuid).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.01), default=5.0, show_default=True)
@click.option(
    "--default-route",
    help="Static route 'model[,fallback,...]' used when no decision arrives "
    "(default: BANDITROUTE_DEFAULT_ROUTE).",
)
@click.option(
    "--file",
    "-f",
    "file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="JSONL file of requests ('-' for stdin); missing request_id/created_at/schema_version are filled.",
)
@click.option("--rate", type=click.FloatRange(0.001), help="Send at most N requests per second (file mode).")
@click.option(
    "--concurrency", type=click.IntRange(1, 10_000), default=200, show_default=True, help="File mode."
)
@click.option("--no-wait", is_flag=True, help="File mode: only produce; do not await decisions.")
@client_options
def route(
    ctx: Ctx,
    task_type: str | None,
    tenant: str | None,
    candidates: tuple[str, ...],
    excludes: tuple[str, ...],
    max_cost_usd: float | None,
    max_latency_ms: float | None,
    capabilities: tuple[str, ...],
    metadata: tuple[str, ...],
    objective: str | None,
    lam: float | None,
    mu: float | None,
    request_id: str | None,
    timeout_s: float,
    default_route: str | None,
    file: str | None,
    rate: float | None,
    concurrency: int,
    no_wait: bool,
) -> None:
    """Ask the router for a model and print the decision.

    One request from the options, or many from --file (one RoutingRequest JSON object per line). Exit codes:
    0 decided, 1 invalid input, 3 no decision in time (the default route, if configured, is printed).

    \b
    banditroute route --task-type summarise --tenant acme --max-cost-usd 0.01 -m user=42
    banditroute route --file requests.jsonl --rate 50 --format json
    """
    from pydantic import ValidationError

    from banditroute.client import build_request

    if file is not None:
        if task_type is not None:
            fail("give --task-type or --file, not both", EXIT_INVALID)
        requests, errors = read_jsonl(file, parse_request_line)
        if errors:
            report_jsonl_errors(errors, file)
        code = run_async(_route_many(ctx, requests, timeout_s, default_route, rate, concurrency, no_wait))
        raise SystemExit(code)
    if not task_type:
        fail("give --task-type (or --file)", EXIT_INVALID)
    if rate is not None or no_wait:
        fail("--rate and --no-wait apply to --file only", EXIT_INVALID)
    obj: dict[str, Any] | None = None
    if objective or lam is not None or mu is not None:
        obj = {"kind": objective or "utility", "lam": lam, "mu": mu}
    try:
        request = build_request(
            task_type,
            tenant=tenant,
            candidates=split_names(candidates),
            exclude=split_names(excludes),
            max_cost_usd=max_cost_usd,
            max_latency_ms=max_latency_ms,
            capabilities=split_names(capabilities) or (),
            objective=obj,
            metadata=parse_kv(metadata),
            request_id=request_id,
        )
    except ValidationError as exc:
        from banditroute.codec import describe_validation_error

        fail(describe_validation_error(exc), EXIT_INVALID)
    except ValueError as exc:
        fail(str(exc), EXIT_INVALID)
    decision, why = run_async(_route_one(ctx, request, timeout_s, default_route))
    print_record(decision, ctx, title=f"decision for {request.request_id}")
    if decision.is_default_route:
        click.echo(f"warning: no decision from the router; default route ({why})", err=True)
        raise SystemExit(EXIT_UNAVAILABLE)


async def _route_one(
    ctx: Ctx, request: RoutingRequest, timeout_s: float, default_route: str | None
) -> tuple[RoutingDecision, str | None]:
    """The decision, and for a default route why the router did not answer."""
    from banditroute.client import RouterClient, default_route_reason

    async with RouterClient(
        ctx.settings, timeout_s=timeout_s, start_timeout_s=max(timeout_s, 5.0), default_route=default_route
    ) as client:
        decision = await client.route_request(request)
        why = default_route_reason(decision) if decision.is_default_route else None
        if why == "timeout":
            why = f"timeout: {await client.why_no_answer(timeout_s)}"
        return decision, why


async def _route_many(
    ctx: Ctx,
    requests: list[RoutingRequest],
    timeout_s: float,
    default_route: str | None,
    rate: float | None,
    concurrency: int,
    no_wait: bool,
) -> int:
    """Send ``requests`` paced by ``rate``; print each decision (json) or a summary (table). Returns the
    exit code."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from banditroute.client import RouterClient, RouteTimeout

    err_console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
    )
    by_model: Counter[str] = Counter()
    failures = 0
    sem = asyncio.Semaphore(concurrency)
    started = time.monotonic()

    async with RouterClient(
        ctx.settings,
        timeout_s=timeout_s,
        start_timeout_s=max(timeout_s, 5.0),
        default_route=default_route,
        replies=not no_wait,
    ) as client:
        if client.degraded and (no_wait or client.default_route is None):
            fail(client.degraded, EXIT_UNAVAILABLE)
        with progress:
            task = progress.add_task("routing" if not no_wait else "producing", total=len(requests))

            async def one(request: RoutingRequest) -> None:
                nonlocal failures
                try:
                    if no_wait:
                        await client.send_request(request, wait=False)
                        return
                    decision = await client.route_request(request)
                except RouteTimeout as exc:
                    failures += 1
                    if ctx.json:
                        emit_json({"request_id": request.request_id, "error": str(exc)})
                    return
                finally:
                    progress.advance(task)
                    sem.release()
                label = str(decision.model)
                if decision.is_default_route:
                    failures += 1
                    label = f"{label} (default route)"
                by_model[label] += 1
                if ctx.json:
                    emit_json(decision)

            pending: set[asyncio.Task[None]] = set()
            for i, request in enumerate(requests):
                if rate is not None:
                    delay = started + i / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await sem.acquire()
                t = asyncio.create_task(one(request))
                pending.add(t)
                t.add_done_callback(pending.discard)
            if pending:
                await asyncio.gather(*pending)
            if no_wait:
                await client.flush()
        if failures and not no_wait:
            click.echo(
                f"warning: {failures} requests without a decision: {await client.why_no_answer(timeout_s)}",
                err=True,
            )
    elapsed = time.monotonic() - started
    if no_wait:
        summary = {"sent": len(requests), "seconds": round(elapsed, 3)}
        if ctx.json:
            emit_json(summary)
        else:
            print_table("route --no-wait", ["sent", "seconds"], [[len(requests), elapsed]])
        return 0
    if not ctx.json:
        rows = [[m, n, n / max(1, len(requests))] for m, n in by_model.most_common()]
        print_table(
            f"{len(requests)} requests in {elapsed:.2f}s ({failures} without a decision)",
            ["model", "decisions", "share"],
            rows,
        )
    return EXIT_UNAVAILABLE if failures else 0


__all__ = ["parse_request_line", "route"]
