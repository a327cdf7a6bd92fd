"""Hypothesis strategies that build valid instances of every wire event."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from banditroute.events import (
    CandidateScore,
    Constraints,
    DeadLetter,
    DeadLetterReason,
    DecisionReasons,
    Feedback,
    FeedbackError,
    ModelCatalogEvent,
    Objective,
    PolicyRef,
    RoutingDecision,
    RoutingRequest,
)

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,40}", fullmatch=True)
topics = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,40}", fullmatch=True)
zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
# hypothesis takes naive bounds and attaches the zones itself
stamps = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=zones)  # noqa: DTZ001
non_neg = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False)
finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
short_text = st.text(min_size=1, max_size=40)


def unique_ids(max_size: int = 8) -> st.SearchStrategy[tuple[str, ...]]:
    return st.lists(ids, max_size=max_size, unique=True).map(tuple)


metadata_values: st.SearchStrategy[Any] = st.one_of(
    st.text(max_size=30), st.booleans(), st.integers(-(2**53), 2**53), finite
)
metadata = st.dictionaries(st.text(min_size=1, max_size=20), metadata_values, max_size=8)

requests = st.builds(
    RoutingRequest,
    request_id=ids,
    task_type=ids,
    tenant=st.none() | ids,
    candidates=st.none() | unique_ids(),
    exclude=st.none() | unique_ids(),
    constraints=st.builds(
        Constraints,
        max_cost_usd=st.none() | non_neg,
        max_latency_ms=st.none() | positive,
        capabilities=unique_ids(),
    ),
    objective=st.none()
    | st.builds(
        Objective,
        kind=st.sampled_from(["utility", "budget"]),
        lam=st.none() | non_neg,
        mu=st.none() | non_neg,
    ),
    metadata=metadata,
    created_at=stamps,
    reply_to=st.none() | topics,
)


@st.composite
def decisions(draw: st.DrawFn) -> RoutingDecision:
    rejected = draw(st.booleans())
    return RoutingDecision(
        decision_id=draw(ids),
        request_id=draw(ids),
        task_type=draw(ids),
        tenant=draw(st.none() | ids),
        model=None if rejected else draw(ids),
        fallbacks=draw(unique_ids()),
        propensity=draw(st.floats(min_value=1e-6, max_value=1.0)),
        candidates=tuple(
            draw(
                st.lists(
                    st.builds(CandidateScore, model=ids, sampled_utility=finite, mean_utility=finite),
                    max_size=5,
                )
            )
        ),
        policy=draw(st.builds(PolicyRef, name=ids, version=ids)),
        state_version=draw(st.integers(0, 2**62)),
        reasons=DecisionReasons(
            filtered=draw(st.dictionaries(ids, short_text, max_size=5)),
            circuit_open=draw(unique_ids(4)),
            exploration=draw(st.booleans()),
            no_eligible=draw(short_text) if rejected else None,
            rules=draw(unique_ids(4)),
        ),
        decided_at=draw(stamps),
        decision_ms=draw(non_neg),
        worker_id=draw(st.none() | ids),
        is_default_route=draw(st.booleans()),
        shadow=draw(st.booleans()),
    )


@st.composite
def feedbacks(draw: st.DrawFn) -> Feedback:
    error = draw(st.none() | st.sampled_from(list(FeedbackError)))
    which = draw(st.sampled_from(["request", "decision", "both"]))
    request_id = draw(ids) if which != "decision" else None
    decision_id = draw(ids) if which != "request" else None
    priced_by_tokens = draw(st.booleans())
    tokens = draw(st.integers(0, 10**6)) if priced_by_tokens else None
    return Feedback(
        request_id=request_id,
        decision_id=decision_id,
        model=draw(ids),
        quality=draw(unit) if error is None else draw(st.none() | unit),
        latency_ms=draw(st.none() | non_neg),
        cost_usd=None
        if priced_by_tokens
        else (draw(non_neg) if error is None else draw(st.none() | non_neg)),
        tokens_in=tokens,
        tokens_out=draw(st.integers(0, 10**6)) if priced_by_tokens else None,
        error=error,
        observed_at=draw(stamps),
        idempotency_key=draw(ids),
    )


@st.composite
def catalog_events(draw: st.DrawFn) -> ModelCatalogEvent:
    action = draw(st.sampled_from(["added", "updated", "retired"]))
    price = st.none() | non_neg if action == "retired" else non_neg
    return ModelCatalogEvent(
        action=action,
        model=draw(ids),
        price_in_per_1k_usd=draw(price),
        price_out_per_1k_usd=draw(price),
        cost_per_call_usd=draw(st.none() | non_neg),
        capabilities=draw(unique_ids()),
        context_window=draw(st.none() | st.integers(1, 10**7)),
        latency_ms=draw(st.none() | non_neg),
        enabled=draw(st.booleans()),
        lifecycle=draw(st.sampled_from(["active", "canary", "shadow"])),
        quality_prior=draw(st.none() | st.tuples(positive, positive)),
        rate_limit_rps=draw(st.none() | positive),
        tokens_per_minute=draw(st.none() | st.integers(1, 10**9)),
        updated_at=draw(stamps),
    )


@st.composite
def dead_letters(draw: st.DrawFn) -> DeadLetter:
    original = draw(st.binary(max_size=200))
    return DeadLetter(
        original=base64.b64encode(original).decode(),
        original_size=len(original) + draw(st.integers(0, 10)),
        original_truncated=draw(st.booleans()),
        source_topic=draw(topics),
        source_partition=draw(st.integers(0, 1000)),
        source_offset=draw(st.integers(0, 2**62)),
        event_type=draw(st.none() | st.sampled_from(["RoutingRequest", "Feedback"])),
        reason=draw(st.sampled_from(list(DeadLetterReason))),
        error=draw(st.text(min_size=1, max_size=200)),
        dead_lettered_at=draw(stamps),
    )


EVENT_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "RoutingRequest": requests,
    "RoutingDecision": decisions(),
    "Feedback": feedbacks(),
    "ModelCatalogEvent": catalog_events(),
    "DeadLetter": dead_letters(),
}
