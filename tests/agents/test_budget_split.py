"""The learner's division of a shared budget over task types (:mod:`banditroute.agents.budget_split`), without a
broker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from banditroute.agents.budget_split import MAX_CPU_SHARE, BudgetSplit
from banditroute.agents.decide import StateView
from banditroute.agents.learn import LearnLogic
from banditroute.config import PACKAGED_CONFIG, ConfigError, Registry, RouterConfig
from banditroute.core import TaskState, decode_state
from banditroute.core.budget import split_offsets
from banditroute.core.objective import effective_budget
from banditroute.core.state import replace_state
from banditroute.routing import task_type_of

MODELS = "models:\n  - {name: cheap, cost_per_call_usd: 0.0001}\n  - {name: dear, cost_per_call_usd: 0.01}\n"
BUDGET = "defaults: {objective: budget, budget_mean_cost_usd: 0.001, pacing_horizon: 100}\n"
MEAN = BUDGET + "budget_split: mean\n"  # the split on posterior means: no draw, so the test can recompute it


def registry(folder: Path, policy: str = MEAN) -> Registry:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.yaml").write_text(MODELS)
    (folder / "policy.yaml").write_text(policy)
    return Registry(RouterConfig.load(folder), folder)


def outcomes(key: str, model: str, qualities: list[float], start: int) -> list[dict[str, Any]]:
    cost = 0.0001 if model == "cheap" else 0.01
    return [
        {"task_key": key, "model": model, "quality": q, "cost_usd": cost, "src": 0, "off": start + i}
        for i, q in enumerate(qualities)
    ]


class World:
    """A learner whose split reads the states it learnt, on a clock the test moves."""

    def __init__(self, reg: Registry, seed: int = 0) -> None:
        self.reg, self.clock, self.view = reg, [0.0], StateView()
        self.table: dict[str, bytes] = {}
        self.split = BudgetSplit(
            self.view.items,
            np.random.default_rng(seed),
            state=self.view.get,
            clock=lambda: self.clock[0],
            timer=lambda: 0.0,  # a computation slowed by a loaded machine must not skip the next one
        )
        self.learn = LearnLogic(self.table, reg, self.view.offer, split=self.split)
        self.offset = 0

    def teach(self, key: str, model: str, qualities: list[float]) -> None:
        self.learn.apply(outcomes(key, model, qualities, self.offset), 1.7e9)
        self.offset += len(qualities)

    def state(self, key: str) -> TaskState:
        state = self.view.get(key)
        assert state is not None
        return state

    def expected(self) -> dict[str, float]:
        """What ``core.budget`` gives on the states the worker holds now (tenants apart, ``~shared`` left out)."""
        states = {k: s for k, s in self.view.items() if k != "~shared"}
        policies = {k: self.reg.snapshot.route(task_type_of(k)).policy for k in states}
        return split_offsets(states, policies, group_of=lambda k: k.partition("|")[0] if "|" in k else "")


def teach_flat_and_steep(world: World, flat: str, steep: str) -> None:
    """``flat``: the cheap model is as good as the dear one; ``steep``: the dear one is far better. Both spend
    less than the budget (0.024 USD over 42 calls)."""
    world.teach(flat, "cheap", [0.9] * 40)
    world.teach(flat, "dear", [0.9] * 2)
    world.teach(steep, "cheap", [0.2] * 40)
    world.teach(steep, "dear", [0.95] * 2)


def test_the_budget_goes_where_it_buys_quality(tmp_path: Path) -> None:
    """Two task types share one budget: after the split is computed, the next batch of each takes its offset
    (exactly core.budget's on the states the worker holds), which the state topic's record carries, and the
    task type where money buys quality may spend more than the budget while the other spends less."""
    world = World(registry(tmp_path))
    teach_flat_and_steep(world, "flat", "steep")
    world.clock[0] = 5.0
    expected = world.expected()
    world.teach("flat", "cheap", [0.9])  # the first key learnt after the split: the others are as they were
    assert world.state("flat").budget_offset_usd == pytest.approx(expected["flat"])
    world.teach("steep", "dear", [0.95])
    assert world.state("steep").budget_offset_usd == pytest.approx(world.expected()["steep"])
    policy = world.reg.policy("flat")
    for key in ("flat", "steep"):
        assert decode_state(world.table[key]).budget_offset_usd == world.state(key).budget_offset_usd
    assert (
        effective_budget(world.state("flat"), policy) < 0.001 < effective_budget(world.state("steep"), policy)
    )


def test_the_others_slack_is_read_when_a_key_is_learnt(tmp_path: Path) -> None:
    """Between two computations of the split, a learnt key's offset follows what the group's other keys have
    spent since (as the worker holds their states): slack frozen for a second drifts, since a task type paced
    below the budget gains slack with every call."""
    world = World(registry(tmp_path))
    teach_flat_and_steep(world, "flat", "steep")
    world.clock[0] = 5.0
    world.teach("flat", "cheap", [0.9])
    before, computed = world.state("flat").budget_offset_usd, world.split.computed
    world.teach("steep", "dear", [0.95] * 5)  # 5 calls at 0.01: 0.045 USD over the budget
    world.teach("flat", "cheap", [0.9])  # within the same second: no new split
    assert world.split.computed == computed
    assert world.state("flat").budget_offset_usd == pytest.approx(before - 5 * (0.01 - 0.001))


def test_recomputed_at_most_once_a_second(tmp_path: Path) -> None:
    world = World(registry(tmp_path))
    teach_flat_and_steep(world, "flat", "steep")
    computed = world.split.computed
    world.clock[0] = 0.5
    world.teach("flat", "cheap", [0.9])
    assert world.split.computed == computed
    world.clock[0] = 1.0
    world.teach("flat", "cheap", [0.9])
    assert world.split.computed == computed + 1


def test_one_tenant_s_spending_never_moves_another_tenant_s_pacing(tmp_path: Path) -> None:
    """A tenant's keys share a budget with that tenant's keys only: tenant a's offsets are the same whether or
    not tenant b (with other evidence and another slack) is there; a tenantless task type alone keeps its own
    budget."""
    policy = MEAN + "per_tenant: [flat, steep]\n"
    offsets = []
    for with_b in (False, True):
        world = World(registry(tmp_path / str(with_b), policy))
        teach_flat_and_steep(world, "a|flat", "a|steep")
        if with_b:
            teach_flat_and_steep(world, "b|steep", "b|flat")  # the other way round
            world.teach("b|flat", "dear", [1.0] * 30)
        world.teach("solo", "dear", [0.9] * 20)
        world.clock[0] = 5.0
        expected = world.expected()
        for key in ("a|flat", "a|steep", "solo"):
            world.teach(key, "cheap", [0.5])
        offsets.append({k: world.state(k).budget_offset_usd for k in ("a|flat", "a|steep", "solo")})
        assert offsets[-1]["a|flat"] == pytest.approx(expected["a|flat"])
    assert offsets[0] == offsets[1]
    assert offsets[0]["a|flat"] != 0.0 and offsets[0]["solo"] == 0.0


def test_the_shared_state_of_capped_task_types_neither_gives_nor_takes(tmp_path: Path) -> None:
    offsets = []
    for with_shared in (False, True):
        world = World(registry(tmp_path / str(with_shared)))
        teach_flat_and_steep(world, "flat", "steep")
        if with_shared:
            world.teach("~shared", "dear", [1.0] * 100)  # overspent by ~0.9 USD
        world.clock[0] = 5.0
        for key in ("flat", "steep", "~shared"):
            world.teach(key, "cheap", [0.5])
        offsets.append({k: world.state(k).budget_offset_usd for k in ("flat", "steep")})
        if with_shared:
            assert world.state("~shared").budget_offset_usd == 0.0
    assert offsets[0] == offsets[1] and offsets[0]["flat"] != 0.0


def test_turning_the_split_off_gives_learnt_keys_their_own_budget_back(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    world = World(reg)
    teach_flat_and_steep(world, "flat", "steep")
    world.clock[0] = 5.0
    world.teach("flat", "cheap", [0.9])
    assert world.state("flat").budget_offset_usd != 0.0
    registry(tmp_path / "off", BUDGET + "budget_split: off\n")
    reg.apply_config(RouterConfig.load(tmp_path / "off"))
    assert reg.snapshot.budget_split == "off"
    world.teach("flat", "cheap", [0.9])
    assert world.state("flat").budget_offset_usd == 0.0
    assert world.table["flat"][2] == 1  # an unshared budget is written in the state format every worker reads


def test_the_sampled_split_is_seeded(tmp_path: Path) -> None:
    """The default split solves on a Beta draw of the posteriors: the same seed gives the same offsets, another
    seed others (one observation per model: the draws disagree on which task type the dear model helps)."""
    runs = []
    for seed in (4, 4, 5):
        world = World(registry(tmp_path / str(len(runs)), BUDGET), seed=seed)
        for key in ("flat", "steep"):
            world.teach(key, "cheap", [0.5])
            world.teach(key, "dear", [0.6])
        offsets = []
        for step in range(1, 20):
            world.clock[0] = float(step)
            world.teach("flat", "cheap", [0.5])
            offsets.append(world.state("flat").budget_offset_usd)
        runs.append(offsets)
    assert runs[0] == runs[1] != runs[2]


def test_budget_split_settings(tmp_path: Path) -> None:
    assert RouterConfig.load(PACKAGED_CONFIG).budget_split == "sampled"
    assert registry(tmp_path / "default", BUDGET).snapshot.budget_split == "sampled"
    assert registry(tmp_path / "off", BUDGET + "budget_split: off\n").snapshot.budget_split == "off"
    for bad in ("none", "1", "[sampled]", "true"):
        with pytest.raises(ConfigError, match="budget_split"):
            registry(tmp_path / "bad", BUDGET + f"budget_split: {bad}\n")


def test_a_slow_split_is_recomputed_less_often(tmp_path: Path) -> None:
    """A computation that takes long (here: reading the states takes 0.1 s) waits at least 1 / MAX_CPU_SHARE
    times as long before the next one, so the split never takes more than that share of the learner."""
    world = World(registry(tmp_path))
    teach_flat_and_steep(world, "flat", "steep")

    def slow_states() -> list[tuple[str, TaskState]]:
        time.sleep(0.1)
        return world.view.items()

    split = BudgetSplit(slow_states, np.random.default_rng(0), clock=lambda: world.clock[0])
    world.learn.split = split
    world.clock[0] = 10.0
    world.teach("flat", "cheap", [0.9])
    assert split.computed == 1
    world.clock[0] = 10.0 + 0.1 / MAX_CPU_SHARE - 0.01
    world.teach("flat", "cheap", [0.9])
    assert split.computed == 1
    world.clock[0] = 100.0  # long after, however slow this machine was
    world.teach("flat", "cheap", [0.9])
    assert split.computed == 2


def without(state: TaskState, model: str) -> TaskState:
    keep = [i for i, name in enumerate(state.names) if name != model]
    return replace_state(state, names=tuple(state.names[i] for i in keep), stats=state.stats[keep])


@pytest.mark.parametrize("change", ["retired", "disabled", "removed"])
def test_a_model_that_cannot_be_served_buys_nothing_in_the_split(tmp_path: Path, change: str) -> None:
    """Once the dear model is retired, disabled or gone from the catalog, the states keep its row, but the split
    is the one of states without it: ``steep`` can no longer buy quality with the budget."""
    world = World(registry(tmp_path))
    teach_flat_and_steep(world, "flat", "steep")
    if change == "retired":
        world.reg.apply_catalog({"model": "dear", "action": "retired"})
    elif change == "disabled":
        (tmp_path / "models.yaml").write_text(MODELS.replace("0.01}", "0.01, enabled: false}"))
        world.reg.apply_config(RouterConfig.load(tmp_path))
    else:
        (tmp_path / "models.yaml").write_text(MODELS.split("  - {name: dear")[0])
        world.reg.apply_config(RouterConfig.load(tmp_path))
    states = {k: s for k, s in world.view.items()}
    policies = {k: world.reg.snapshot.route(task_type_of(k)).policy for k in states}
    served = split_offsets({k: without(s, "dear") for k, s in states.items()}, policies)
    with_dear = split_offsets(states, policies)
    assert served["steep"] < with_dear["steep"] - 0.01  # it mattered: dear made steep worth the budget
    world.clock[0] = 5.0
    world.teach("steep", "cheap", [0.2])  # the first key learnt after the split: the others are as they were
    assert "dear" in world.state("steep").names
    assert world.state("steep").budget_offset_usd == pytest.approx(served["steep"])
