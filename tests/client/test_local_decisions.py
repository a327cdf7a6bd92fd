"""Every decision the decide logic makes is a valid RoutingDecision (local mode returns it validated)."""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings

from banditroute.agents.decide import DecideLogic
from banditroute.agents.learn import LearnLogic
from banditroute.config import PACKAGED_CONFIG, Registry, RouterConfig
from banditroute.events import Constraints, RoutingDecision
from banditroute.limits import Limits
from banditroute.local_router import DecisionModels, LocalRouter
from banditroute.messages import build_request, plain_call
from banditroute.routing import StateView
from banditroute.settings import Settings
from tests.agents.test_decide_encoded import POLICIES, learn, open_circuit, registry, requests
from tests.client.test_decision_publisher import BatchProducer
from tests.contracts.strategies import decisions


def test_every_kind_of_decision_validates() -> None:
    config = RouterConfig.load(PACKAGED_CONFIG)
    config = dataclasses.replace(
        config, limits=Limits(reject_unknown_task_types=True, allowed_task_types=frozenset({"chat", "code"}))
    )
    logic = DecideLogic(Registry(config), StateView(), np.random.default_rng(3), worker_id="client-1")
    requests = [
        build_request("chat"),
        build_request("code", tenant="acme", metadata={"tier": "gold"}),
        build_request("chat", max_cost_usd=0.001, exclude=["mid-tier"]),
        build_request("chat", max_latency_ms=1.0),  # no model that fast: relaxed to the cheapest model
        build_request("unknown"),  # rejected by the limits
    ]
    decisions = [RoutingDecision.model_validate(logic.decide(r)) for r in requests]
    relaxed, rejected = decisions[3], decisions[4]
    assert relaxed.model is not None and relaxed.reasons.no_eligible is None
    assert "relaxed_to_cheapest" in relaxed.reasons.rules
    assert rejected.model is None and rejected.reasons.no_eligible is not None
    assert decisions[2].reasons.filtered


def decide_many(count: int) -> list[dict[str, Any]]:
    """``count`` decisions of every kind the packaged config gives (rules, limits, filters, learnt states)."""
    config = RouterConfig.load(PACKAGED_CONFIG)
    config = dataclasses.replace(config, limits=Limits(max_task_types=3))
    view = StateView()
    registry = Registry(config)
    logic = DecideLogic(registry, view, np.random.default_rng(11), worker_id="client-1")
    learner = LearnLogic({}, registry, view.offer)
    rng = random.Random(5)
    made = []
    for i in range(count):
        request = build_request(
            rng.choice(["chat", "code", "summarise", f"extra-{i % 7}"]),
            tenant=rng.choice([None, "acme", "acme-eu"]),
            metadata=rng.choice([None, {"tier": "vip"}, {"tier": "gold", "n": 3}]),
            **rng.choice(
                [{}, {}, {"max_cost_usd": 0.001}, {"exclude": ["mid-tier"]}, {"max_latency_ms": 1.0}]
            ),
        )
        decision = logic.decide(request)
        made.append(decision)
        if decision["model"] is not None and i % 3 == 0:  # learn, so states and their versions move
            outcome = {"model": decision["model"], "quality": rng.random(), "cost_usd": 0.001}
            learner.apply([{**outcome, "task_key": decision["state_key"], "src": 0, "off": i}], 1.7e9)
    assert view.close()  # its plans' thread, not left idle for 30 s into later tests
    return made


def test_a_plain_request_is_decided_as_its_model() -> None:
    """Local mode decides the common call from a PlainRequest (no request model): the same decision as from
    the RoutingRequest the remote path would send (same seed, same clock, rules and tenants included)."""
    clock = lambda: 1.7e9  # noqa: E731
    logics = [  # a registry each: pre-drawn samples are cached on its states
        DecideLogic(
            Registry(RouterConfig.load(PACKAGED_CONFIG)), StateView(), np.random.default_rng(4), "c", clock
        )
        for _ in range(2)
    ]
    rng = random.Random(2)
    for i in range(300):
        plain = plain_call(
            rng.choice(["chat", "code", "summarise", f"new-{i % 5}"]),
            rng.choice([None, "acme", "acme-eu"]),
            rng.choice([None, {"tier": "vip"}, {"tier": "gold", "n": 3}]),
            rng.choice([None, f"req-{i}"]),
        )
        assert plain is not None
        by_plain, by_model = logics[0].decide(plain), logics[1].decide(plain.full())
        assert by_plain.pop("decision_ms") >= 0 and by_model.pop("decision_ms") >= 0
        assert by_plain == by_model


def test_decision_models_equal_validating_the_json() -> None:
    """What local mode returns (built without validation) equals validating the published JSON, for thousands
    of decisions of every kind, nested models and fields set included."""
    models = DecisionModels()
    kinds = set()
    for decision in decide_many(2000):
        payload = orjson.dumps(decision)
        validated = RoutingDecision.model_validate_json(payload)
        built = models(copy.deepcopy(decision))
        assert built == validated
        assert built.model_dump_json() == validated.model_dump_json()
        assert built.model_fields_set == validated.model_fields_set
        assert type(built.decided_at) is type(validated.decided_at)
        assert built.decided_at.tzinfo == validated.decided_at.tzinfo
        kinds.add(
            (built.model is None, bool(built.reasons.rules), built.reasons.capped, len(built.candidates))
        )
    assert len(kinds) >= 6  # rejected, rule-named, capped and filtered decisions were all compared


@settings(max_examples=150, deadline=None)
@given(decision=decisions())
def test_decision_models_equal_validation_for_any_valid_decision(decision: RoutingDecision) -> None:
    """The same for any valid decision (any shape the schema allows, not only what the decide logic makes)."""
    as_dict = orjson.loads(decision.model_dump_json())
    validated = RoutingDecision.model_validate(copy.deepcopy(as_dict))
    assert DecisionModels()(as_dict) == validated


@pytest.mark.parametrize("policy", sorted(POLICIES))
async def test_what_local_mode_returns_is_what_it_publishes(tmp_path: Path, policy: str) -> None:
    """``LocalRouter.decide_now`` builds a block row's decision from the row and its request shape (no dict, no
    validation): for every kind of decision (rules, pins, tenants, caps, filters, circuits, shadows, learnt
    states moving the shape on), the returned model equals validating the published JSON, fields set and nested
    models included."""
    producer = BatchProducer()
    local = LocalRouter(
        Settings.model_validate({}),
        producer,
        client_id="client-eq",
        seed=5,
        config=registry(tmp_path, POLICIES[policy]).config,
    )
    local.reader.caught_up.set()
    local.reader.polled_at = time.monotonic() + 3600.0
    await local.publisher.start([local.decisions_topic, local.shadow_topic])
    returned: dict[str, RoutingDecision] = {}
    rows = 0
    try:
        for i, request in enumerate(requests(600, seed=len(policy))):
            if i == 150:
                learn(local.logic, "chat", "budget", 1.0, time.time())
            if i == 300:
                open_circuit(local.logic, "code", time.time() - 30.0)
            if i == 450:
                open_circuit(local.logic, "chat", time.time() - 1.0)
            plain = plain_call(request.task_type, request.tenant, request.metadata, request.request_id)
            simple = (
                request.candidates is None and not request.exclude and request.constraints == Constraints()
            )
            decided = local.decide_now(plain if simple and plain is not None else request)
            assert isinstance(decided, RoutingDecision), decided
            rows += local.logic.row is not None
            returned[decided.request_id] = decided
        assert await local.flush(10.0)
    finally:
        await local.stop(2.0)
    # most decisions were built from their block row; with a shadow policy all from their dict
    assert rows == 0 if policy == "shadow" else rows > 300
    published = [RoutingDecision.model_validate_json(value) for value in producer.stored]
    assert sorted(d.request_id for d in published if not d.shadow) == sorted(returned)
    for validated in published:
        if validated.shadow:
            continue
        built = returned[validated.request_id]
        assert built == validated
        assert built.model_dump_json() == validated.model_dump_json()
        assert list(built.__dict__) == list(validated.__dict__)
        assert built.model_fields_set == validated.model_fields_set
        assert built.reasons.model_fields_set == validated.reasons.model_fields_set
        assert [c.model_fields_set for c in built.candidates] == [
            c.model_fields_set for c in validated.candidates
        ]
        assert (
            built.decided_at == validated.decided_at
            and built.decided_at.tzinfo == validated.decided_at.tzinfo
        )
    if policy == "shadow":
        assert sum(d.shadow for d in published) == len(returned)
