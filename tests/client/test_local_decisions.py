"""Every decision the decide logic makes is a valid RoutingDecision (local mode returns it validated)."""

from __future__ import annotations

import dataclasses

import numpy as np

from banditroute.agents.decide import DecideLogic
from banditroute.config import PACKAGED_CONFIG, Registry, RouterConfig
from banditroute.events import RoutingDecision
from banditroute.limits import Limits
from banditroute.messages import build_request
from banditroute.routing import StateView


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
