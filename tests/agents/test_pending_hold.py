"""``PendingStore.hold_new``: a handoff's fresh entries held at once, or none of them when one is there already
(in C, ``_native.hold_new``, and in Python, alike; no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from banditroute.agents import pending
from banditroute.agents.pending import PendingStore


@pytest.fixture(params=["native", "python"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> PendingStore:
    if request.param == "native":
        if pending._NATIVE_HOLD is None:
            pytest.skip("the C extension was not built (no compiler)")
    else:
        monkeypatch.setattr(pending, "_NATIVE_HOLD", None)
    durable: dict[str, bytes] = {"resolved": b"r"}
    held = PendingStore(durable)
    held.hold("old", b"o")
    return held


def values(n: int) -> list[bytes]:
    return [b"entry %d" % i for i in range(n)]


def test_new_keys_are_all_held(store: PendingStore) -> None:
    keys = ["a", "b", "c"]
    made = values(3)
    assert store.hold_new(keys, set(keys), made)
    assert store.held == {"old": b"o", "a": made[0], "b": made[1], "c": made[2]}
    assert store.durable == {"resolved": b"r"}


@pytest.mark.parametrize("there", ["old", "resolved"])
@pytest.mark.parametrize("at", [0, 2, 4])
def test_a_key_there_already_holds_none_of_them(store: PendingStore, there: str, at: int) -> None:
    keys = ["a", "b", "c", "d", "e"]
    keys[at] = there
    before_held, before_durable = dict(store.held), dict(store.durable)
    assert not store.hold_new(keys, set(keys), values(5))
    assert store.held == before_held  # the keys before it, put in by the C loop, taken out again
    assert store.held["old"] == b"o"
    assert store.durable == before_durable


def test_an_empty_handoff_holds_nothing(store: PendingStore) -> None:
    assert store.hold_new([], set(), [])
    assert store.held == {"old": b"o"}


def test_native_hold_refuses_a_repeated_key_and_bad_arguments() -> None:
    native_hold: Any = pending._NATIVE_HOLD
    if native_hold is None:
        pytest.skip("the C extension was not built (no compiler)")
    held: dict[str, bytes] = {"x": b"1"}
    assert not native_hold(held, ["a", "b", "a"], values(3))
    assert held == {"x": b"1"}
    with pytest.raises(ValueError, match="as many values as keys"):
        native_hold(held, ["a"], [])
    with pytest.raises(TypeError):
        native_hold(held, ("a",), [b"v"])
    assert held == {"x": b"1"}


class Key(str):
    """A str subclass whose comparison runs Python code (which could change the lists or the dict)."""

    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other)


@pytest.mark.parametrize("odd", [Key("b"), ["unhashable"], 3])
def test_native_hold_leaves_keys_not_all_exact_strs_to_the_python_path(odd: Any) -> None:
    native_hold: Any = pending._NATIVE_HOLD
    if native_hold is None:
        pytest.skip("the C extension was not built (no compiler)")
    held: dict[Any, bytes] = {"x": b"1"}
    assert native_hold(held, ["a", odd], values(2)) is None
    assert held == {"x": b"1"}  # nothing put in, not even the keys before it
    store = PendingStore({})
    store.hold("x", b"1")
    assert store.hold_new(["a", Key("b")], {"a", Key("b")}, values(2))  # the Python path holds them
    assert list(store.held) == ["x", "a", "b"]
