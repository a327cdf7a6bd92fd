"""The memory probe's collector tools (banditroute.memory_probe): they find cyclic garbage, the kind a finalizer
frees during the collection (invisible in gc.garbage) included."""

from __future__ import annotations

import gc
from collections.abc import Iterator

from banditroute.memory_probe import GarbageCensus, GcTimer, cyclic_garbage


class Node:
    def __init__(self) -> None:
        self.other: object = None
        self.payload = b"x" * 10_000


def _holding(node: Node) -> Iterator[Node]:
    yield node


def _make_cycles(n: int) -> None:
    for _ in range(n):
        a, b = Node(), Node()
        a.other, b.other = b, a  # a plain cycle
        c = Node()
        gen = _holding(c)
        next(gen)
        c.other = gen  # node -> generator -> frame -> node: the generator's finalizer breaks it


def test_cyclic_garbage_counts_what_only_a_collection_frees() -> None:
    gc.collect()
    gc.disable()
    try:
        _make_cycles(20)
        freed = cyclic_garbage()
    finally:
        gc.enable()
    assert freed[f"{__name__}.Node"] == 60
    assert freed["builtins.generator"] == 20
    assert "builtins.tuple" not in freed


def test_census_sorts_garbage_by_age_and_spells_cycles() -> None:
    timer = GcTimer().install()
    gc.collect()
    gc.disable()
    try:
        keep: list[Node] = []
        for _ in range(3):
            a, b = Node(), Node()
            a.other, b.other = b, a
            keep.append(a)
        del a, b
        gc.collect(1)  # alive now: they move to the old generation
        keep.clear()  # and become garbage there
        _make_cycles(2)  # young garbage
        report = GarbageCensus().census()
    finally:
        gc.enable()
        timer.uninstall()
    # the total may hold another test's ending thread's cycles too; the Nodes are counted exactly
    assert report["old"] >= 6 and report["types"][f"{__name__}.Node"][0] == 6
    assert report["types"][f"{__name__}.Node"][1] >= 6 * 10_000 // 1024  # what they hold, in KiB
    assert [f"{__name__}.Node.other", f"{__name__}.Node.other"] in report["cycles"]
    # the generators' cycles are freed by their finalizer during the collection: seen as vanished
    assert report["vanished"].get("builtins.generator:test_memory_probe.py:_holding") == 2
    assert report["young_types"][f"{__name__}.Node"][0] == 4  # the plain cycles stay in gc.garbage
    assert timer.runs[1] >= 1 and timer.runs[2] >= 1  # the collections by hand and the census
    assert timer.report()["runs"] == timer.runs
