"""The join's and learner's staged changelog writes (:class:`banditroute.kafka.staged.StagedTable`)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from banditroute.kafka.staged import StagedTable, flush_acknowledged


class _Topic:
    def get_topic_name(self) -> str:
        return "t-changelog"


class _Table:
    """What StagedTable reads of a faust table: its local store and changelog topic."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.changelog_topic = _Topic()
        self.key_serializer = "json"


def _flush(view: StagedTable, sent: list[tuple[Any, ...]]) -> list[str]:
    async def send(topic: str, key: bytes, value: bytes | None, partition: int) -> None:
        sent.append((topic, orjson.loads(key), value, partition))

    return asyncio.run(view.flush(send))


def test_writes_whose_acknowledgement_failed_are_sent_again_with_their_current_values() -> None:
    view = StagedTable(_Table(), lambda key: len(key) % 2)
    view["a"] = b"1"
    view["b"] = b"2"
    view["c"] = b"5"
    sent: list[tuple[Any, ...]] = []
    keys = _flush(view, sent)
    assert sorted(keys) == ["a", "b", "c"] and len(sent) == 3 and not view.staged
    # the drain failed; meanwhile "a" changed and "b" was deleted: the current values go again ("c" unchanged)
    view["a"] = b"3"
    del view["b"]
    view.restage(keys)
    assert view.staged == {"a": b"3", "b": None, "c": b"5"}
    sent.clear()
    assert sorted(_flush(view, sent)) == ["a", "b", "c"]
    assert sorted(sent, key=lambda s: s[1]) == [
        ("t-changelog", "a", b"3", 1),
        ("t-changelog", "b", None, 1),
        ("t-changelog", "c", b"5", 1),
    ]


def test_restage_keeps_a_newer_staged_write() -> None:
    view = StagedTable(_Table(), lambda key: 0)
    view["a"] = b"1"
    keys = _flush(view, [])
    view["a"] = b"2"  # staged again by a later batch before the failure is seen
    view.restage(keys)
    assert view.staged == {"a": b"2"}
    assert _flush(view, []) == ["a"]
    assert _flush(view, []) == []


def test_a_learnt_batch_whose_states_were_not_acknowledged_is_sent_with_the_next_batch(tmp_path: Any) -> None:
    """The learn reader's handler fails at the drain, restarts in the same process and reads the batch again:
    the watermarks in memory skip it, but its states must still reach the state topic before the commit."""
    from banditroute.agents.learn import LearnLogic
    from banditroute.config import Registry, RouterConfig

    (tmp_path / "models.yaml").write_text(
        "models:\n  - {name: a1, cost_per_call_usd: 0.001}\n  - {name: a2, cost_per_call_usd: 0.002}\n"
    )
    (tmp_path / "policy.yaml").write_text("defaults: {lam: 10.0}\n")
    view = StagedTable(_Table(), lambda key: 0)
    learn = LearnLogic(view, Registry(RouterConfig.load(tmp_path)))
    batch = [{"task_key": "chat", "model": "a1", "quality": 0.9, "cost_usd": 0.001, "src": 0, "off": 7}]
    acknowledged: list[tuple[Any, ...]] = []
    handed: list[tuple[Any, ...]] = []
    fail = [True]

    async def send(topic: str, key: bytes, value: bytes | None, partition: int) -> None:
        handed.append((orjson.loads(key), value))

    async def drain() -> None:
        if fail.pop() if fail else False:
            handed.clear()  # lost with the failed request
            raise RuntimeError("broker unavailable past the request timeout")
        acknowledged.extend(handed)
        handed.clear()

    async def handler() -> int:  # what app._learn_records does with a decoded batch
        stats = learn.apply(batch, 1.7e9)
        await flush_acknowledged((view,), send, drain)
        return stats.learned

    async def main() -> tuple[int, int]:
        try:
            await handler()
        except RuntimeError:
            pass
        return await handler(), len(acknowledged)

    learned_again, states_sent = asyncio.run(main())
    assert learned_again == 0  # skipped by its watermark, as it must be
    assert states_sent == 1 and acknowledged[0][0] == "chat" and acknowledged[0][1] == view.table.data["chat"]


def test_contains_follows_writes_and_deletions_in_a_faust_memory_store() -> None:
    """``contains()`` reaches into faust's memory store (a dict behind its mapping): it sees what the view
    writes and deletes, as ``in`` does; a plain mapping as store is asked directly; and a PendingStore's
    covers its held entries and its durable ones."""
    from faust.stores.memory import Store
    from mode.utils.collections import FastUserDict

    from banditroute.agents.pending import PendingStore

    class _Store(FastUserDict[str, bytes]):  # faust's memory store, without its service machinery
        def __init__(self) -> None:
            self.data: dict[str, bytes] = {}

    assert FastUserDict in Store.__mro__  # what the worker's tables keep their data in ("memory://")
    table = _Table()
    table.data = _Store()  # type: ignore[assignment]
    for view in (StagedTable(table, lambda _k: 0), StagedTable(_Table(), lambda _k: 0)):
        view["a"] = b"1"
        view["b"] = b"2"
        del view["a"]
        contains = view.contains()
        assert [contains(k) for k in ("a", "b", "c")] == [False, True, False] == [k in view for k in "abc"]
    store = PendingStore(view)
    store.hold("h", b"3")
    contains = store.contains()
    assert [contains(k) for k in ("a", "b", "h")] == [False, True, True]
    del store["h"]
    assert not store.contains()("h")


def test_writes_outside_the_held_partitions_stay_staged_until_dropped_after_a_rebalance() -> None:
    view = StagedTable(_Table(), lambda key: int(key[-1]))
    for key in ("a0", "b1", "c2", "d3"):
        view[key] = key.encode()
    sent: list[tuple[Any, ...]] = []

    async def send(topic: str, key: bytes, value: bytes | None, partition: int) -> None:
        sent.append((orjson.loads(key), partition))

    # the join holds partitions 0 and 1 (the others moved): only theirs go to the changelog
    assert asyncio.run(view.flush(send, frozenset({0, 1}))) == ["a0", "b1"]
    assert sent == [("a0", 0), ("b1", 1)] and view.staged == {"c2": b"c2", "d3": b"d3"}
    # the next assignment holds 0-2: partition 3's write is its new owner's to make, dropped here (and its entry)
    assert view.drop_outside(frozenset({0, 1, 2})) == (1, ["d3"])
    assert view.staged == {"c2": b"c2"} and sorted(view.table.data) == ["a0", "b1", "c2"]
    sent.clear()
    assert asyncio.run(view.flush(send, frozenset({0, 1, 2}))) == ["c2"] and sent == [("c2", 2)]
    assert not view.staged


def test_entries_of_partitions_that_moved_leave_faust_s_memory_store_written_or_recovered() -> None:
    """faust's memory store drops, once a recovery completes, only the entries it recovered of partitions no
    longer assigned: those the join or the learner wrote stayed until a restart. ``drop_outside`` drops both
    kinds, taking a recovered entry's partition from faust (an unreadable key's hash says nothing of it)."""
    from faust.stores.memory import Store

    class _Store(Store):  # faust's memory store, without its service machinery
        def __init__(self) -> None:
            self.__post_init__()

    table = _Table()
    table.data = _Store()  # type: ignore[assignment]
    store: Any = table.data
    store.data["r1"] = b"recovered in partition 1"
    store.data["\x00unreadable key 0102"] = b"recovered in partition 0"
    store._key_partition.update({"r1": 1, "\x00unreadable key 0102": 0, "gone": 0})  # "gone": deleted since
    view = StagedTable(table, lambda key: int(key[-1]) if key[-1].isdigit() else 3)
    for key in ("w0", "w1", "w2"):
        view[key] = key.encode()  # written here: faust does not know their partitions
    writes, entries = view.drop_outside(frozenset({0}))
    assert writes == 2 and sorted(entries) == ["r1", "w1", "w2"]
    assert sorted(store.data) == ["\x00unreadable key 0102", "w0"] and store._key_partition == {
        "\x00unreadable key 0102": 0
    }
    assert view.staged == {"w0": b"w0"}


def test_writes_staged_before_a_recovery_read_newer_records_of_their_keys_are_let_go() -> None:
    """faust's memory store, recovering a partition, replaces what the view staged for a key the changelog has a
    newer record of (or deletes it): ``drop_replaced`` lets those staged writes go, and keeps the others,
    tombstones included."""
    from types import SimpleNamespace

    from faust.stores.memory import Store

    class _Store(Store):  # faust's memory store, without its service machinery
        def __init__(self) -> None:
            self.__post_init__()

    table = _Table()
    table.data = _Store()  # type: ignore[assignment]
    view = StagedTable(table, lambda _key: 0)
    for key in ("kept", "replaced", "deleted", "gone"):
        view[key] = b"staged"
    del view["gone"]  # a tombstone staged
    recovered = [("replaced", b"newer"), ("deleted", None)]
    events = [
        SimpleNamespace(key=k, value=v, message=SimpleNamespace(value=v, partition=0)) for k, v in recovered
    ]
    table.data.apply_changelog_batch(events, lambda k: k, lambda v: v)  # type: ignore[attr-defined]
    assert sorted(view.drop_replaced()) == ["deleted", "replaced"]
    assert view.staged == {"kept": b"staged", "gone": None} and view["replaced"] == b"newer"
    assert view.drop_replaced() == []


def test_a_views_writes_are_sent_only_once_the_earlier_views_are_acknowledged() -> None:
    """The join flushes its table, then the early-feedback table: the removal of parked feedback (a tombstone in
    the second) must not reach its changelog while the entry that joined it (in the first) is refused. Before,
    both views went in one drain, and the second's writes landed whatever became of the first's."""
    pending, early = StagedTable(_Table(), lambda _key: 0), StagedTable(_Table(), lambda _key: 0)
    pending["r1"] = b"joined"
    early.table.data["r1"] = b"parked"
    del early["r1"]
    sent: list[tuple[Any, ...]] = []
    acknowledged: list[tuple[Any, ...]] = []
    refusing = True

    async def send(topic: str, key: bytes, value: bytes | None, partition: int) -> None:
        sent.append((orjson.loads(key), value))

    async def drain() -> None:  # as Kafka does: each changelog takes or refuses its own records
        batch, sent[:] = list(sent), []
        refused = [r for r in batch if refusing and r[1] == b"joined"]
        acknowledged.extend(r for r in batch if r not in refused)
        if refused:
            raise RuntimeError("the join table's changelog refuses")

    async def main() -> None:
        nonlocal refusing
        try:
            await flush_acknowledged((pending, early), send, drain)
        except RuntimeError:
            pass
        assert acknowledged == []  # the tombstone did not go with the refused write
        assert pending.staged == {"r1": b"joined"} and early.staged == {"r1": None}
        refusing = False
        await flush_acknowledged((pending, early), send, drain)

    asyncio.run(main())
    assert acknowledged == [("r1", b"joined"), ("r1", None)]
