"""``banditroute feedback``: send the outcome of one call (options) or many (``--file feedback.jsonl``)."""

from __future__ import annotations

from typing import Any

import click
import orjson

from banditroute.cli.output import (
    EXIT_INVALID,
    Ctx,
    client_options,
    emit_json,
    fail,
    print_record,
    print_table,
    read_jsonl,
    report_jsonl_errors,
    run_async,
)
from banditroute.events import Feedback, FeedbackError


def parse_feedback_line(data: dict[str, Any]) -> Feedback:
    """One JSONL line -> Feedback, strictly validated like the worker does. Filled when missing:
    ``request_id`` (from a ``d:<request_id>`` decision_id), ``observed_at``, ``idempotency_key``
    (``<request_id>:<model>``) and ``schema_version``."""
    from banditroute.client import idempotency_key_for, request_id_of_decision, utcnow
    from banditroute.codec import decode

    filled = dict(data)
    if filled.get("request_id") is None and isinstance(filled.get("decision_id"), str):
        derived = request_id_of_decision(filled["decision_id"])
        if derived is not None:
            filled["request_id"] = derived
    if not isinstance(filled.get("request_id"), str):
        raise ValueError("request_id is required (the feedback topic is keyed by it)")
    if "idempotency_key" not in filled and isinstance(filled.get("model"), str):
        filled["idempotency_key"] = idempotency_key_for(filled["request_id"], filled["model"])
    filled.setdefault("observed_at", utcnow().isoformat().replace("+00:00", "Z"))
    filled.setdefault("schema_version", 1)
    result = decode(Feedback, orjson.dumps(filled))
    if not isinstance(result, Feedback):
        raise ValueError(f"{result.reason.value}: {result.error}")
    return result


@click.command()
@click.option("--request-id", "-r", help="Request the outcome is for (the topic key).")
@click.option("--decision-id", help="Decision the outcome is for (d:<request_id> gives the request id).")
@click.option("--model", help="Model that served the call.")
@click.option("--quality", type=click.FloatRange(0.0, 1.0), help="Quality score in [0, 1].")
@click.option("--latency-ms", type=click.FloatRange(0.0), help="Observed latency in ms.")
@click.option("--cost-usd", type=click.FloatRange(0.0), help="Observed cost in USD.")
@click.option("--tokens-in", type=click.IntRange(0), help="Prompt tokens (priced from the catalog).")
@click.option("--tokens-out", type=click.IntRange(0), help="Completion tokens.")
@click.option("--error", type=click.Choice([e.value for e in FeedbackError]), help="Why the call failed.")
@click.option("--idempotency-key", help="Key that makes repeats harmless (default <request_id>:<model>).")
@click.option(
    "--file",
    "-f",
    "file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="JSONL file of Feedback objects ('-' for stdin).",
)
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1), default=10.0, show_default=True)
@client_options
def feedback(
    ctx: Ctx,
    request_id: str | None,
    decision_id: str | None,
    model: str | None,
    quality: float | None,
    latency_ms: float | None,
    cost_usd: float | None,
    tokens_in: int | None,
    tokens_out: int | None,
    error: str | None,
    idempotency_key: str | None,
    file: str | None,
    timeout_s: float,
) -> None:
    """Send the outcome of routed call(s) to the feedback topic, keyed by request_id.

    \b
    banditroute feedback -r 3f2a... --model small-fast --quality 0.8 --latency-ms 420 --cost-usd 0.0004
    banditroute feedback -r 3f2a... --model small-fast --error timeout
    banditroute feedback --file outcomes.jsonl
    """
    from pydantic import ValidationError

    from banditroute.client import build_feedback

    if file is not None:
        if request_id or decision_id or model:
            fail("give the options or --file, not both", EXIT_INVALID)
        events, errors = read_jsonl(file, parse_feedback_line)
        if errors:
            report_jsonl_errors(errors, file)
    else:
        if not model:
            fail("give --model (and --request-id), or --file", EXIT_INVALID)
        try:
            events = [
                build_feedback(
                    request_id=request_id,
                    decision_id=decision_id,
                    model=model,
                    quality=quality,
                    latency_ms=latency_ms,
                    cost_usd=cost_usd,
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    error=error,
                    idempotency_key=idempotency_key,
                )
            ]
        except ValidationError as exc:
            from banditroute.codec import describe_validation_error

            fail(describe_validation_error(exc), EXIT_INVALID)
        except ValueError as exc:
            fail(str(exc), EXIT_INVALID)
    run_async(_send(ctx, events, timeout_s))
    if file is None:
        print_record(events[0], ctx, title="feedback sent")
    elif ctx.json:
        emit_json({"sent": len(events), "topic": ctx.settings.topic("feedback")})
    else:
        print_table("feedback sent", ["events", "topic"], [[len(events), ctx.settings.topic("feedback")]])


async def _send(ctx: Ctx, events: list[Feedback], timeout_s: float) -> None:
    import asyncio

    from banditroute.client import RouterClient, RouterUnavailable

    async with RouterClient(
        ctx.settings, timeout_s=timeout_s, start_timeout_s=timeout_s, replies=False
    ) as client:
        if client.degraded:
            raise RouterUnavailable(client.degraded)
        await asyncio.gather(*(client.send_feedback(event) for event in events))


__all__ = ["feedback", "parse_feedback_line"]
