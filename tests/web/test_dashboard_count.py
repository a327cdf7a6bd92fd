"""The worker's dashboard count of a polled batch (``Router._on_decisions``): a batch of one task type (counted by
model, then paired) and a mixed batch count what counting each decision's (task type, model) pair counts."""

from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace

import pytest

from banditroute import app
from banditroute.app import Router
from banditroute.limits import CAPS
from banditroute.served import Decided
from banditroute.web.top import TopTaskTypes


def dashboard() -> SimpleNamespace:
    return SimpleNamespace(
        top=TopTaskTypes(n=2, window_s=60.0),
        decisions_by_model=Counter(),
        capped=Counter({cap: 0 for cap in CAPS}),
        recent_decisions=[],
    )


def test_a_batch_counts_what_its_pairs_count_one_task_type_or_many(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(app, "time", SimpleNamespace(time=lambda: clock[0]))
    rng = random.Random(51)
    counted, reference = dashboard(), dashboard()
    for step in range(300):
        types = ["chat"] if rng.random() < 0.6 else rng.sample(["chat", "code", "x", "y"], rng.randint(1, 4))
        batch: list[Decided] = [
            (
                rng.choice(types),
                rng.choice(["m1", "m2", None, ""]),
                rng.choice([None, None, "task_types"]),
                0.1,
                b"{}",
            )
            for _ in range(rng.choice([0, 1, 5, 40]))
        ]
        now = clock[0] = step * 0.5  # windows of 60 s: several end in the run
        Router._on_decisions(counted, batch)  # type: ignore[arg-type]  # the fields it reads
        pairs = Counter((task_type, model) for task_type, model, *_ in batch)
        reference.top.count_many(reference.decisions_by_model, list(pairs.items()), now)
        reference.capped.update(cap for _t, _m, cap, *_ in batch if cap)
        assert counted.decisions_by_model == reference.decisions_by_model
        assert list(counted.decisions_by_model) == list(reference.decisions_by_model)  # the same order too
        assert counted.top.named == reference.top.named and counted.top._counts == reference.top._counts
        assert counted.capped == reference.capped
