"""Client helpers without a broker: request and feedback building, the default route, degraded start."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from banditroute.client import (
    DefaultRoute,
    RouterClient,
    RouteTimeout,
    build_feedback,
    build_request,
    default_decision,
    default_route_reason,
    idempotency_key_for,
    topic_layout,
)
from banditroute.codec import decode, encode
from banditroute.events import Feedback, RoutingDecision, RoutingRequest
from banditroute.settings import Settings


def test_build_request_fills_defaults_and_round_trips() -> None:
    req = build_request(
        "chat",
        tenant="acme",
        candidates=["a", "b"],
        exclude=["c"],
        max_cost_usd=0.01,
        max_latency_ms=500,
        capabilities=["json"],
        objective={"kind": "utility", "lam": 2.0},
        metadata={"user": "u1", "n": 3},
        reply_to="p.replies.x",
    )
    assert len(req.request_id) == 32
    assert req.candidates == ("a", "b") and req.exclude == ("c",)
    assert req.constraints.capabilities == ("json",)
    assert req.objective is not None and req.objective.lam == 2.0
    assert req.created_at.tzinfo is not None
    assert decode(RoutingRequest, encode(req)) == req


def test_build_request_rejects_bad_input() -> None:
    with pytest.raises(ValidationError):
        build_request("chat", candidates=["a", "a"])
    with pytest.raises(ValidationError):
        build_request("bad task type")
    with pytest.raises(ValidationError):
        build_request("chat", max_cost_usd=-1)


def test_default_route_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DefaultRoute.parse("a, b ,c") == DefaultRoute("a", ("b", "c"))
    assert DefaultRoute.parse(["a"]) == DefaultRoute("a")
    assert DefaultRoute.parse("") is None
    assert DefaultRoute.parse(None) is None
    monkeypatch.setenv("BANDITROUTE_DEFAULT_ROUTE", "small-fast,mid-tier")
    assert DefaultRoute.from_settings(Settings.model_validate({})) == DefaultRoute(
        "small-fast", ("mid-tier",)
    )


def test_default_decision_is_valid_and_flagged() -> None:
    req = build_request("chat", tenant="acme", request_id="r1")
    decision = default_decision(req, DefaultRoute("small-fast", ("mid-tier",)), "no decision within 2s")
    assert decision.is_default_route and decision.propensity == 1.0
    assert decision.model == "small-fast" and decision.fallbacks == ("mid-tier",)
    assert (decision.request_id, decision.task_type, decision.tenant) == ("r1", "chat", "acme")
    assert decision.decision_id == "default:r1"
    assert "default_route" in decision.reasons.rules
    assert default_route_reason(decision) == "no_decision_within_2s"
    assert decode(RoutingDecision, encode(decision)) == decision


def test_build_feedback() -> None:
    fb = build_feedback(request_id="r1", model="m", quality=0.5, cost_usd=0.001, latency_ms=10)
    assert fb.idempotency_key == "r1:m"
    assert decode(Feedback, encode(fb)) == fb
    derived = build_feedback(request_id=None, decision_id="d:r9", model="m", error="timeout")
    assert derived.request_id == "r9" and derived.error == "timeout"
    with pytest.raises(ValueError, match="request_id"):
        build_feedback(request_id=None, decision_id="other", model="m", error="timeout")
    with pytest.raises(ValidationError):
        build_feedback(request_id="r1", model="m", quality=0.5)  # no cost, no tokens
    long_key = idempotency_key_for("r" * 120, "model-name")
    assert len(long_key) == 64


def test_topic_layout_matches_settings() -> None:
    s = Settings.model_validate({"topic_prefix": "x", "partitions": 6, "state_partitions": 2})
    layout = topic_layout(s)
    assert layout["x.feedback"][0] == layout["x.decisions"][0] == layout["x.requests"][0] == 6
    assert layout["x.catalog"] == (1, {"cleanup.policy": "compact"})
    assert layout["x.state"][0] == 2


async def test_unreachable_broker_start_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from banditroute.kafka.local import free_port

    monkeypatch.delenv("BANDITROUTE_DEFAULT_ROUTE", raising=False)
    settings = Settings.model_validate({"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    started = time.monotonic()
    client = RouterClient(settings, start_timeout_s=1.0, default_route="fallback-model")
    await client.start()
    decision = await client.route("chat", request_id="r1")
    await client.close()
    assert client.degraded and decision.is_default_route and decision.model == "fallback-model"
    assert time.monotonic() - started < 10
    bare = RouterClient(settings, start_timeout_s=1.0)
    async with bare:
        with pytest.raises(RouteTimeout, match="BANDITROUTE_DEFAULT_ROUTE"):
            await bare.route("chat")


def test_sync_client_degraded_returns_default_route() -> None:
    from banditroute.client import SyncRouterClient
    from banditroute.kafka.local import free_port

    settings = Settings.model_validate({"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    with SyncRouterClient(settings, start_timeout_s=1.0, default_route="m1,m2") as client:
        decision = client.route("chat", tenant="t")
        assert decision.is_default_route and decision.model == "m1" and decision.fallbacks == ("m2",)
