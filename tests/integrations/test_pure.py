"""The integrations' own logic without a broker: error classes, the score hook, the attempt order, when a
LiteLLM failure is the call's last, and the OpenAI wrapper's feedback for one call."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM would fetch its price map at import

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import litellm
import pytest
from litellm import Router

from banditroute.client import RouterClient
from banditroute.events import FeedbackError, PolicyRef, RoutingDecision
from banditroute.integrations.common import error_kind, run_score, usage_tokens
from banditroute.integrations.litellm import BanditRouting, Call, metadata_of
from banditroute.integrations.openai import Attempts, request_id_of


def decision(
    model: str = "a", fallbacks: tuple[str, ...] = ("b", "c"), default: bool = False
) -> RoutingDecision:
    return RoutingDecision(
        decision_id="d:r1",
        request_id="r1",
        task_type="chat",
        model=model,
        fallbacks=fallbacks,
        propensity=0.5,
        policy=PolicyRef(name="t", version="1"),
        state_version=1,
        decided_at=datetime.now(UTC),
        decision_ms=0.1,
        is_default_route=default,
    )


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (litellm.RateLimitError("slow down", "openai", "m"), FeedbackError.RATE_LIMITED),
        (litellm.Timeout("too slow", "m", "openai"), FeedbackError.TIMEOUT),
        (TimeoutError(), FeedbackError.TIMEOUT),
        (litellm.ContentPolicyViolationError("no", "m", "openai"), FeedbackError.CONTENT_FILTER),
        (litellm.InternalServerError("boom", "openai", "m"), FeedbackError.PROVIDER_ERROR),
        (litellm.APIConnectionError("down", "openai", "m"), FeedbackError.PROVIDER_ERROR),
        (litellm.ServiceUnavailableError("down", "openai", "m"), FeedbackError.PROVIDER_ERROR),
        (litellm.BadRequestError("bad", "m", "openai"), FeedbackError.OTHER),
        (ValueError("x"), FeedbackError.OTHER),
        (None, FeedbackError.OTHER),
    ],
)
def test_error_kind(exc: BaseException | None, kind: FeedbackError) -> None:
    assert error_kind(exc) == kind


def test_score_hook_answers_are_checked() -> None:
    assert run_score(None, object()) is None
    assert run_score(lambda r: 0.25, object()) == 0.25
    assert run_score(lambda r: None, object()) is None
    assert run_score(lambda r: 1.5, object()) is None  # outside [0, 1]: no quality rather than a wrong one

    def broken(response: Any) -> float:
        raise RuntimeError("hook bug")

    assert run_score(broken, object()) is None


def test_usage_tokens_from_objects_and_dicts() -> None:
    assert usage_tokens(SimpleNamespace(usage=SimpleNamespace(prompt_tokens=3, completion_tokens=4))) == (
        3,
        4,
    )
    assert usage_tokens(SimpleNamespace(usage={"prompt_tokens": 1, "completion_tokens": 2})) == (1, 2)
    assert usage_tokens(SimpleNamespace(usage=None)) == (None, None)


def test_attempts_follow_the_decision_order_within_the_hop_group() -> None:
    call = Call("r1", decision(), ("a", "b", "c"))
    assert call.next_model(("a", "b", "c")) == "a"
    call.tried.append("a")
    assert call.next_model(("a", "b", "c")) == "b"  # a retry: the next model of the order
    assert call.next_model(("c", "x")) == "c"  # a fallback hop to a group holding only c of the order
    assert call.next_model(("x", "y")) is None  # a group outside the decision: LiteLLM's own pick
    call.tried += ["b", "c"]
    assert call.next_model(("a", "b")) in ("a", "b")  # all tried: cycle rather than fail


def test_metadata_bucket_is_created_on_the_request() -> None:
    request: dict[str, Any] = {"model": "auto"}
    metadata_of(request)["k"] = 1
    assert request["metadata"] == {"k": 1}
    assert metadata_of({"litellm_metadata": {"x": 2}}) == {"x": 2}


def test_a_failure_is_the_last_one_when_no_retry_or_fallback_is_left() -> None:
    router = Router(
        model_list=[
            {
                "model_name": g,
                "litellm_params": {"model": f"openai/{g}", "api_key": "k"},
                "model_info": {"id": g},
            }
            for g in ("a", "b", "c")
        ],
        fallbacks=[{"a": ["b", "c"]}],
    )
    routing = BanditRouting(RouterClient(bootstrap="127.0.0.1:1")).attach(router)
    try:

        def last(**metadata: Any) -> bool:
            return routing._last_attempt({"attempted_retries": 0, "max_retries": 0, **metadata}, {})

        assert not routing._last_attempt({"attempted_retries": 0, "max_retries": 2}, {})  # a retry follows
        assert last(original_model_group="c")  # no fallbacks for c
        assert not last(original_model_group="a", attempted_fallbacks=1)  # a -> b failed, c is next
        assert last(original_model_group="a", attempted_fallbacks=2)
        # a request's own fallbacks win over the router's
        assert not routing._last_attempt(
            {"attempted_retries": 0, "max_retries": 0, "original_model_group": "c"}, {"fallbacks": ["a"]}
        )
    finally:
        routing.detach()
    assert routing not in litellm.callbacks


def test_openai_attempts_feedback() -> None:
    response = SimpleNamespace(usage=SimpleNamespace(prompt_tokens=5, completion_tokens=2))
    attempts = Attempts(decision(), ("a", "b", "c"))
    attempts.failed("a", litellm.RateLimitError("x", "openai", "a"), started=0.0)
    error = attempts.error_feedback()
    assert error is not None and error["model"] == "a" and error["error"] == FeedbackError.RATE_LIMITED
    ok = attempts.success_feedback("b", response, started=0.0, score=lambda r: 0.7)
    assert ok is not None and ok["model"] == "b" and ok["quality"] == 0.7 and ok["tokens_in"] == 5
    assert request_id_of(response) == "r1"
    assert attempts.success_feedback("b", response, started=0.0, score=None) is None  # quality comes later
    # a default route has no decision at the worker: nothing to send
    assert Attempts(decision(default=True), ("a",)).error_feedback() is None
