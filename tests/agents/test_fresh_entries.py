"""The join's fresh entries written in C (``_native.fresh_entries``) against the Python path (``encode_fresh`` of
each decision), on generated handoffs (fixed seeds), and the values it leaves to the Python path."""

from __future__ import annotations

import math
import random
from typing import Any

import orjson
import pytest

from banditroute import native
from banditroute.agents.pending import encode_fresh, encode_fresh_many
from banditroute.served import DEFAULT_POLICY, Served
from tests.agents.test_join_served import POLICIES
from tests.agents.test_join_served_batch import handoff, uncapped

_module = native.loaded()
pytestmark = pytest.mark.skipif(_module is None, reason="the C extension is not built")

FLOATS = [0.0, 1.0, 0.5, 0.1, 1 / 3, 1e-05, 2.5e-07, 1e16, 1.5e300, 5e-324, -0.0, math.nan, math.inf]


def fresh_entries(decisions: list[Any], deadline_ms: Any) -> list[bytes] | None:
    assert _module is not None
    made: list[bytes] | None = _module.fresh_entries(decisions, deadline_ms, DEFAULT_POLICY, orjson.dumps)
    return made


def each(decisions: list[tuple[int, int, Served]], deadline_ms: dict[str, int]) -> list[bytes]:
    return [encode_fresh(s, deadline_ms[s[3]], offset) for _p, offset, s in decisions]


def ascii_only(served: Served) -> Served:
    """The generated fields with their strings' other characters as '?' (the generator writes some models so)."""

    def plain(value: Any) -> Any:
        if isinstance(value, str):
            return value.encode("ascii", "replace").decode("ascii")
        if isinstance(value, tuple):
            return tuple(map(plain, value))
        return value

    return tuple(map(plain, served))  # type: ignore[return-value]


def with_field(served: Served, at: int, value: Any) -> Served:
    fields = list(served)
    fields[at] = value
    return tuple(fields)  # type: ignore[return-value]


def test_generated_handoffs_are_written_as_the_python_path_writes_them() -> None:
    rng = random.Random(41)
    for n in (0, 1, 3, 64, 500):
        served = [ascii_only(s) for s in uncapped(rng, n)]
        served = [with_field(s, 7, rng.choice([*FLOATS, s[7]])) for s in served]  # odd floats among the usual
        decisions = handoff(rng, served, start=rng.randrange(10**12))
        deadline_ms = {t: rng.randrange(10**13) for t in POLICIES}
        made = fresh_entries(decisions, deadline_ms)
        assert made is not None, "plain values: written in C"
        assert made == each(decisions, deadline_ms)
        assert encode_fresh_many(decisions, deadline_ms) == made


def test_defaults_are_written_as_null_and_others_as_they_are() -> None:
    rng = random.Random(42)
    base = ascii_only(uncapped(rng, 1)[0])
    request_id, task_type = base[0], base[3]
    deadline_ms = {t: 1_733_380_000_000 for t in POLICIES}
    variants = [
        with_field(base, 1, "d:" + request_id),  # the derived decision id: null
        with_field(base, 1, "d:" + request_id + "x"),
        with_field(base, 1, "e:" + request_id),
        with_field(base, 2, task_type),  # the task key is the task type: null
        with_field(with_field(base, 2, task_type + "/tenant-a"), 4, "tenant-a"),
        with_field(base, 4, None),
        with_field(base, 6, ()),
        with_field(base, 6, ("a", "b", "c")),
        with_field(base, 9, DEFAULT_POLICY),  # null
        with_field(base, 9, "epsilon"),
        with_field(base, 8, 2**63 - 1),
        with_field(base, 8, -(2**63)),
    ]
    decisions = [(0, i, s) for i, s in enumerate(variants)]
    made = fresh_entries(decisions, deadline_ms)
    assert made is not None
    assert made == each(decisions, deadline_ms)
    assert made[0].startswith(b"[3,null,") and made[3].split(b",")[2] == b"null"


@pytest.mark.parametrize(
    ("at", "value"),
    [
        (0, "r\u00e9quest"),  # not ASCII
        (1, 'd"quote'),
        (2, "back\\slash"),
        (3, "tab\there"),
        (4, "\x7f"),
        (5, "mod\u00e8le"),
        (6, ("ok", "new\nline")),
        (6, ["a", "b"]),  # a list, not a tuple
        (7, 1),  # an int propensity
        (8, True),  # a bool, not an int
        (8, 2**63),  # beyond int64
        (9, "p\u00f6licy"),
    ],
)
def test_values_it_does_not_write_are_left_to_the_python_path(at: int, value: Any) -> None:
    rng = random.Random(43)
    served = [ascii_only(s) for s in uncapped(rng, 5)]
    served[3] = with_field(served[3], at, value)
    decisions = [(0, 100 + i, s) for i, s in enumerate(served)]
    deadline_ms = {t: 5 for t in {*POLICIES, *(s[3] for s in served)}}
    assert fresh_entries(decisions, deadline_ms) is None
    try:
        expected = each(decisions, deadline_ms)
    except TypeError:  # orjson's own refusal (an int beyond 64 bits): the same from the batch path
        with pytest.raises(TypeError):
            encode_fresh_many(decisions, deadline_ms)
        return
    assert encode_fresh_many(decisions, deadline_ms) == expected


def test_a_missing_task_type_or_a_mapping_not_a_dict_is_left_to_the_python_path() -> None:
    rng = random.Random(44)
    decisions = [(0, i, ascii_only(s)) for i, s in enumerate(uncapped(rng, 4))]
    deadline_ms = {t: 5 for t in POLICIES}
    others = {t + "-other": 5 for t in POLICIES}  # none of the decisions' task types
    assert fresh_entries(decisions, others) is None
    with pytest.raises(KeyError):
        encode_fresh_many(decisions, others)

    class Deadlines(dict[str, int]):
        pass

    assert fresh_entries(decisions, Deadlines(deadline_ms)) is None
    assert encode_fresh_many(decisions, Deadlines(deadline_ms)) == each(decisions, deadline_ms)
    assert fresh_entries([*decisions, (0, 9, ("short",))], deadline_ms) is None  # not a handoff's shape


def test_a_float_text_that_changes_the_list_or_raises() -> None:
    rng = random.Random(45)
    decisions = [(0, i, ascii_only(s)) for i, s in enumerate(uncapped(rng, 6))]
    deadline_ms = {t: 5 for t in POLICIES}
    assert _module is not None

    def clearing(value: float) -> bytes:
        decisions.clear()  # the list the call reads from
        return orjson.dumps(value)

    assert _module.fresh_entries(decisions, deadline_ms, DEFAULT_POLICY, clearing) is None

    def failing(value: float) -> bytes:
        raise ValueError("float_text failed")

    with pytest.raises(ValueError, match="float_text failed"):
        _module.fresh_entries([(0, 1, ascii_only(uncapped(rng, 1)[0]))], deadline_ms, DEFAULT_POLICY, failing)


def test_propensities_of_a_few_kinds_interleaved_are_written_each_as_float_text_writes_it() -> None:
    """Rows as a decision block makes them: a few distinct propensities in no runs, each its own float object or
    a shared one (the C loop keeps up to 16 texts by value and replaces the oldest past that), -0.0 beside 0.0."""
    rng = random.Random(43)
    texts: list[Any] = []

    def counted(value: Any) -> bytes:
        texts.append(value)
        return orjson.dumps(value)

    for kinds in (1, 3, 16, 17, 40):
        values = [rng.random() for _ in range(kinds - 2)] + [0.0, -0.0]
        served = [ascii_only(s) for s in uncapped(rng, 400)]
        # float(str(v)): the same value in another object for about half of the rows
        served = [
            with_field(s, 7, v if rng.random() < 0.5 else float(repr(v)))
            for s, v in zip(served, (rng.choice(values[:kinds]) for _ in served), strict=False)
        ]
        decisions = handoff(rng, served, start=rng.randrange(10**12))
        deadline_ms = {t: rng.randrange(10**13) for t in POLICIES}
        texts.clear()
        assert _module is not None
        made = _module.fresh_entries(decisions, deadline_ms, DEFAULT_POLICY, counted)
        assert made == each(decisions, deadline_ms)
        if kinds <= 16:
            assert len(texts) == len(set(map(repr, texts))) <= kinds  # one text per distinct value
