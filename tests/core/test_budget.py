"""A budget shared by several task types: each paces against the slack of all of them together."""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt
import pytest
from scipy.optimize import linprog

from banditroute.core import (
    ModelSpec,
    Outcome,
    TaskPolicy,
    TaskState,
    decode_state,
    encode_state,
    new_state,
    update_many,
)
from banditroute.core.budget import _split, allocate_budget, best_mix, share_budget, slack_usd, split_offsets
from banditroute.core.objective import effective_budget
from banditroute.core.state import N_COLUMNS, replace_state

MODELS = (ModelSpec("cheap", 0.0001), ModelSpec("dear", 0.01))
POLICY = TaskPolicy(objective="budget", budget_mean_cost_usd=0.001, pacing_horizon=100.0)
FloatArray = npt.NDArray[np.float64]


def test_shared_slack_is_the_sum_of_all_task_types() -> None:
    saver = update_many(new_state(MODELS, POLICY), MODELS, POLICY, [Outcome("cheap", 1.0, 0.0001)] * 100)
    spender = update_many(new_state(MODELS, POLICY), MODELS, POLICY, [Outcome("dear", 1.0, 0.0015)] * 100)
    policies = {"saver": POLICY, "spender": POLICY, "other": TaskPolicy()}
    shared = share_budget({"saver": saver, "spender": spender}, policies)
    total = slack_usd(saver, POLICY) + slack_usd(spender, POLICY)
    assert total == pytest.approx(0.09 - 0.05)
    for name in ("saver", "spender"):
        own = slack_usd(shared[name], POLICY)
        assert own + shared[name].budget_offset_usd == pytest.approx(total)
        assert effective_budget(shared[name], POLICY) == pytest.approx(0.001 + total / 100.0)
    # learning keeps the offset until the next share
    later = update_many(shared["spender"], MODELS, POLICY, [Outcome("dear", 1.0, 0.001)])
    assert later.budget_offset_usd == shared["spender"].budget_offset_usd


def test_task_types_with_other_budgets_do_not_share() -> None:
    other = TaskPolicy(objective="budget", budget_mean_cost_usd=0.002)
    a = update_many(new_state(MODELS, POLICY), MODELS, POLICY, [Outcome("cheap", 1.0, 0.0001)] * 10)
    b = update_many(new_state(MODELS, other), MODELS, other, [Outcome("cheap", 1.0, 0.0001)] * 10)
    shared = share_budget({"a": a, "b": b}, {"a": POLICY, "b": other})
    assert shared["a"].budget_offset_usd == 0.0 and shared["b"].budget_offset_usd == 0.0


def _learnt(outcomes: dict[str, tuple[float, float]], slack: float, n: int = 400) -> TaskState:
    """A state that has seen ``n`` calls of each model with (quality, cost), its spend set to ``slack`` USD under
    the budget (what the pacing has not spent yet)."""
    events = [Outcome(m, q, c) for m, (q, c) in outcomes.items() for _ in range(n)]
    state = update_many(new_state(MODELS, POLICY), MODELS, POLICY, events)
    budget = POLICY.budget_mean_cost_usd or 0.0
    return replace_state(state, spend_total_usd=budget * state.spend_calls - slack)


def test_allocation_spends_where_money_buys_quality() -> None:
    # "flat": the cheap model is as good as the dear one; "steep": the dear one is far better
    flat = _learnt({"cheap": (0.9, 0.0001), "dear": (0.9, 0.01)}, slack=0.002)
    steep = _learnt({"cheap": (0.2, 0.0001), "dear": (0.95, 0.01)}, slack=-0.001)
    policies = {"flat": POLICY, "steep": POLICY}
    allocated = allocate_budget({"flat": flat, "steep": steep}, policies)
    slack = slack_usd(flat, POLICY) + slack_usd(steep, POLICY)
    # flat needs only the cheap model; steep gets the rest of twice the budget (equal traffic)
    assert effective_budget(allocated["flat"], POLICY) == pytest.approx(0.0001 + slack / 100.0)
    assert effective_budget(allocated["steep"], POLICY) == pytest.approx(2 * 0.001 - 0.0001 + slack / 100.0)
    # the same slack as with share_budget, so the group's pacing is unchanged
    shared = share_budget({"flat": flat, "steep": steep}, policies)
    for name in ("flat", "steep"):
        moved = allocated[name].budget_offset_usd - shared[name].budget_offset_usd
        gap = effective_budget(allocated[name], POLICY) - effective_budget(shared[name], POLICY)
        assert moved == pytest.approx(POLICY.pacing_horizon * gap)


def test_split_spends_as_the_budget_oracle() -> None:
    """Each task type's share, spent on its own best mix, reaches the quality of the linear program over all of
    them (brute force per task type; the LP written out here independently, dense)."""
    rng = np.random.default_rng(3)
    for _ in range(40):
        tasks, k = int(rng.integers(1, 5)), int(rng.integers(2, 6))
        weight = rng.dirichlet(np.ones(tasks))
        quality = [rng.random(k) for _ in range(tasks)]
        cost = [rng.random(k) * 0.01 for _ in range(tasks)]
        cheapest = float(weight @ np.array([c.min() for c in cost]))
        budget = cheapest + float(rng.uniform(0.0, 0.006))
        spend = _split(weight, quality, cost, budget)
        assert float(weight @ np.array(spend)) <= budget * (1 + 1e-9)
        got = sum(w * _task_quality(q, c, s) for w, q, c, s in zip(weight, quality, cost, spend, strict=True))
        x = linprog(
            -np.concatenate([w * q for w, q in zip(weight, quality, strict=True)]),
            A_ub=np.concatenate([w * c for w, c in zip(weight, cost, strict=True)])[None, :],
            b_ub=[budget],
            A_eq=np.kron(np.eye(tasks), np.ones(k)),
            b_eq=np.ones(tasks),
            bounds=(0, None),
        )
        assert got == pytest.approx(-x.fun, abs=1e-7)
        # and each task type's share is the solver's (random costs and qualities: one optimum)
        mix = best_mix(weight, quality, cost, budget)
        assert mix is not None
        assert spend == pytest.approx([float(p @ c) for p, c in zip(mix, cost, strict=True)], abs=1e-9)


def _task_quality(quality: FloatArray, cost: FloatArray, spend: float) -> float:
    """The best mean quality of one task type's mixes with mean cost <= ``spend`` (its vertices, brute force)."""
    best = -1.0
    for i in range(len(quality)):
        if cost[i] <= spend * (1 + 1e-9):
            best = max(best, float(quality[i]))
        for j in range(len(quality)):
            if cost[i] <= spend < cost[j]:
                w = (spend - cost[i]) / (cost[j] - cost[i])
                best = max(best, float(quality[i] + w * (quality[j] - quality[i])))
    return best


def test_split_offsets_is_allocate_budget_within_each_group() -> None:
    """The worker's split: each group (here two tenants) divides its budget as ``allocate_budget`` divides it over
    that group's states alone, whatever the other groups hold."""
    flat = _learnt({"cheap": (0.9, 0.0001), "dear": (0.9, 0.01)}, slack=0.002)
    steep = _learnt({"cheap": (0.2, 0.0001), "dear": (0.95, 0.01)}, slack=-0.001)
    dear = _learnt({"cheap": (0.1, 0.0001), "dear": (0.99, 0.01)}, slack=0.05)
    states = {"a|flat": flat, "a|steep": steep, "b|flat": steep, "b|steep": dear}
    policies = dict.fromkeys(states, POLICY)
    offsets = split_offsets(states, policies, group_of=lambda key: key.split("|")[0])
    for tenant in ("a", "b"):
        own = {k: s for k, s in states.items() if k.startswith(tenant)}
        alone = allocate_budget(own, dict.fromkeys(own, POLICY))
        for key in own:
            assert offsets[key] == pytest.approx(alone[key].budget_offset_usd)
    assert offsets["a|flat"] != 0.0  # not a vacuous comparison: the split moved the targets
    # without groups, all four share one budget: tenant b's slack would move tenant a's pacing
    together = split_offsets(states, policies)
    assert together["a|flat"] != pytest.approx(offsets["a|flat"])


def test_split_offsets_leaves_alone_who_shares_with_nobody() -> None:
    """Keys not in budget mode, keys alone with their budget and states with non-finite statistics get 0.0 and
    do not move the others' split."""
    flat = _learnt({"cheap": (0.9, 0.0001), "dear": (0.9, 0.01)}, slack=0.002)
    steep = _learnt({"cheap": (0.2, 0.0001), "dear": (0.95, 0.01)}, slack=-0.001)
    corrupt = replace_state(steep, spend_total_usd=float("nan"))
    other = TaskPolicy(objective="budget", budget_mean_cost_usd=0.002)
    states = {"flat": flat, "steep": steep, "utility": flat, "lonely": steep, "corrupt": corrupt}
    policies = {"flat": POLICY, "steep": POLICY, "utility": TaskPolicy(), "lonely": other, "corrupt": POLICY}
    offsets = split_offsets(states, policies)
    assert offsets["utility"] == offsets["lonely"] == offsets["corrupt"] == 0.0
    pair = allocate_budget({"flat": flat, "steep": steep}, {"flat": POLICY, "steep": POLICY})
    assert offsets["flat"] == pytest.approx(pair["flat"].budget_offset_usd)
    assert offsets["steep"] == pytest.approx(pair["steep"].budget_offset_usd)
    assert split_offsets({"flat": flat}, {"flat": POLICY}) == {"flat": 0.0}


def test_each_task_type_pays_the_group_slack_back_over_its_own_horizon() -> None:
    """Task types with different ``pacing_horizon`` share one budget: each paces to its own share of it plus the
    group's slack spread over its own horizon."""
    slow = TaskPolicy(objective="budget", budget_mean_cost_usd=0.001, pacing_horizon=1000.0)
    flat = _learnt({"cheap": (0.9, 0.0001), "dear": (0.9, 0.01)}, slack=0.002)
    steep = _learnt({"cheap": (0.2, 0.0001), "dear": (0.95, 0.01)}, slack=-0.001)
    states, policies = {"flat": flat, "steep": steep}, {"flat": POLICY, "steep": slow}
    offsets = split_offsets(states, policies)
    slack = slack_usd(flat, POLICY) + slack_usd(steep, slow)
    split = {k: replace_state(s, budget_offset_usd=offsets[k]) for k, s in states.items()}
    assert effective_budget(split["flat"], POLICY) == pytest.approx(0.0001 + slack / 100.0)
    assert effective_budget(split["steep"], slow) == pytest.approx(2 * 0.001 - 0.0001 + slack / 1000.0)


def test_sampled_split_is_seeded() -> None:
    # one observation each: which task type the dear model helps more is for the draw to say
    flat = _learnt({"cheap": (0.5, 0.0001), "dear": (0.6, 0.01)}, slack=0.0, n=1)
    steep = _learnt({"cheap": (0.5, 0.0001), "dear": (0.6, 0.01)}, slack=0.0, n=1)
    states = {"flat": flat, "steep": steep}
    policies = dict.fromkeys(states, POLICY)
    draws = [split_offsets(states, policies, np.random.default_rng(seed)) for seed in (7, 7, *range(8, 16))]
    assert draws[0] == draws[1]
    assert len({d["flat"] for d in draws}) > 1  # few observations: the draws disagree on the split


def _decode_before_the_split(data: bytes) -> tuple[tuple[str, ...], dict[int, int], np.ndarray]:
    """How workers and local-mode clients released before the budget split read a state record (the header,
    names, watermarks and matrix of format 1, nothing else accepted): names, watermarks, statistics."""
    header = struct.Struct("<2sBHBQQdddddQH")
    magic, fmt, k, columns, *_scalars, n_applied = header.unpack_from(data)
    assert magic == b"BR" and fmt == 1 and columns == N_COLUMNS
    pos, names, applied = header.size, [], {}
    for _ in range(k):
        names.append(data[pos + 1 : pos + 1 + data[pos]].decode())
        pos += 1 + data[pos]
    for _ in range(n_applied):
        partition, offset = struct.unpack_from("<iq", data, pos)
        applied[partition] = offset
        pos += 12
    assert len(data) - pos == k * N_COLUMNS * 8, "the length check earlier readers make"
    stats = np.frombuffer(data, dtype="<f8", offset=pos).reshape(k, N_COLUMNS)
    return tuple(names), applied, stats


def test_the_budget_offset_travels_with_the_state_and_earlier_readers_still_read_it() -> None:
    """A shared budget's offset is encoded with the state so every worker's decisions read it, as a watermark
    pair under a reserved (negative) source: readers of earlier releases take the record as before (a rolling
    upgrade or a rollback does not stall their learners), ignore the offset and keep the pair."""
    state = _learnt({"cheap": (0.9, 0.0001), "dear": (0.9, 0.01)}, slack=0.002)
    state = replace_state(state, applied={0: 17, 5: 3})
    plain = encode_state(state)
    assert decode_state(plain).budget_offset_usd == 0.0 and decode_state(plain).applied == {0: 17, 5: 3}
    split = replace_state(state, budget_offset_usd=-0.0425)
    raw = encode_state(split)
    assert raw[2] == 1 and len(raw) == len(plain) + 12
    decoded = decode_state(raw)
    assert decoded.budget_offset_usd == -0.0425 and decoded.applied == {0: 17, 5: 3}
    assert np.array_equal(decoded.stats, state.stats) and decoded.spend_calls == state.spend_calls
    assert effective_budget(decoded, POLICY) == effective_budget(split, POLICY)
    names, applied, stats = _decode_before_the_split(raw)
    assert names == state.names and np.array_equal(stats, state.stats)
    assert {k: v for k, v in applied.items() if k >= 0} == {0: 17, 5: 3}  # its sources are never negative
    # an earlier learner keeps the pair it does not know (it encodes its watermarks as they are, as this
    # version's encoder does for a state whose offset is zero); this version reads the offset back from it
    again = replace_state(decode_state(plain), applied=applied)
    assert decode_state(encode_state(again)).budget_offset_usd == -0.0425
    with pytest.raises(ValueError, match="corrupt state blob"):
        decode_state(raw[:-8])


def test_a_state_written_with_the_offset_in_the_header_still_decodes() -> None:
    """Format 2 (the offset in the header) was written by main for a few hours on 2026-12-01: still read."""
    state = replace_state(_learnt({"cheap": (0.9, 0.0001)}, slack=0.0), applied={2: 9})
    one = encode_state(state)
    header = struct.Struct("<2sBHBQQdddddQH").size
    two = one[:2] + bytes([2]) + one[3:header] + struct.pack("<d", 0.0125) + one[header:]
    decoded = decode_state(two)
    assert decoded.budget_offset_usd == 0.0125 and decoded.applied == {2: 9}
    assert np.array_equal(decoded.stats, state.stats)
