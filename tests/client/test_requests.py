"""Client helpers without a broker: request and feedback building, the default route, degraded start."""

from __future__ import annotations

import os
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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
from banditroute.events import Constraints as RequestConstraints
from banditroute.events import Feedback, RoutingDecision, RoutingRequest
from banditroute.messages import new_request_id, plain_call
from banditroute.settings import Settings
from tests.contracts.strategies import ids


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


names = st.one_of(ids, st.text(max_size=140), st.just("x" * 129), st.just("ok\n"), st.just(""))
metadata_keys = st.one_of(st.text(min_size=1, max_size=20), st.just(""), st.just("k" * 65))
any_metadata = st.none() | st.dictionaries(
    metadata_keys,
    st.one_of(
        st.text(max_size=300),
        st.booleans(),
        st.integers(-(2**54), 2**54),
        st.floats(),
        st.none(),
        st.just([1]),
    ),
    max_size=34,
)


@settings(max_examples=400, deadline=None)
@given(task_type=names, tenant=st.none() | names, request_id=st.none() | names, metadata=any_metadata)
def test_the_fast_request_path_equals_pydantic(
    task_type: str, tenant: str | None, request_id: str | None, metadata: dict[str, Any] | None
) -> None:
    """``build_request`` builds the common request without pydantic: for any input the result equals
    validating the same fields with pydantic, and whatever pydantic rejects still raises its error."""
    fields = {
        "task_type": task_type,
        "tenant": tenant,
        "candidates": None,
        "exclude": None,
        "constraints": RequestConstraints(max_cost_usd=None, max_latency_ms=None, capabilities=()),
        "objective": None,
        "metadata": dict(metadata or {}),
        "reply_to": None,
    }  # what build_request hands pydantic
    plain = plain_call(task_type, tenant, metadata, request_id)  # local mode's request: no model built
    try:
        built = build_request(task_type, tenant=tenant, request_id=request_id, metadata=metadata)
    except ValidationError:
        assert plain is None
        with pytest.raises(ValidationError):
            RoutingRequest(request_id=request_id or "r", created_at=datetime.now(UTC), **fields)
        return
    validated = RoutingRequest(request_id=built.request_id, created_at=built.created_at, **fields)
    assert built == validated
    assert built.model_fields_set == validated.model_fields_set
    assert encode(built) == encode(validated)
    assert request_id is None or request_id == "" or built.request_id == request_id
    if plain is not None:  # what the decide logic reads of it equals the validated model's fields
        read = ("task_type", "tenant", "metadata", "candidates", "exclude", "objective", "constraints")
        assert {f: getattr(plain, f) for f in read} == {f: getattr(validated, f) for f in read}
        assert request_id is None or request_id == "" or plain.request_id == request_id
        full = plain.full()
        assert full == validated.model_copy(
            update={"request_id": plain.request_id, "created_at": full.created_at}
        )
        assert full.model_fields_set == validated.model_fields_set


def test_request_ids_are_uuid4_hex_and_unique() -> None:
    made = [new_request_id() for _ in range(50_000)]
    assert len(set(made)) == len(made)
    for rid in made[:1000]:
        parsed = uuid.UUID(hex=rid)
        assert (parsed.hex, parsed.version, parsed.variant) == (rid, 4, uuid.RFC_4122)
    random.seed(1)  # a caller seeding the random module does not make ids repeat
    first = new_request_id()
    random.seed(1)
    assert new_request_id() != first


def test_request_ids_from_several_threads_never_repeat() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(lambda _: [new_request_id() for _ in range(20_000)], range(4)))
    made = [rid for batch in batches for rid in batch]
    assert len(set(made)) == len(made) == 80_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_makes_other_request_ids() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then out without running any of pytest's cleanup
        os.write(write_end, new_request_id().encode())
        os._exit(0)
    os.close(write_end)
    mine = new_request_id()
    with os.fdopen(read_end, "rb") as pipe:
        theirs = pipe.read().decode()
    os.waitpid(pid, 0)
    assert len(theirs) == 32 and theirs != mine
