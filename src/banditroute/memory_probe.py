"""Debug hook: where the worker's memory goes (``BANDITROUTE_MEMORY_PROBE=<file>``; off by default).

Appends, every ``PROBE_INTERVAL_S``, one JSON line to the file: RSS, glibc's heap figures, and the sizes of the
worker's structures that grow with traffic (join entries, deadline index, priority lane...). With
``BANDITROUTE_MEMORY_PROBE_TRACE=1`` it also starts :mod:`tracemalloc` when the worker is built and adds the
allocation sites that grew most since the first probe; that costs CPU (every allocation is hooked, the
worker decides ~5x slower) and memory of its own: for investigations, never in production.

Every line has the time the collector took per generation since the probe started (:class:`GcTimer`). With
``BANDITROUTE_MEMORY_PROBE_GC=N`` every N-th probe (1: every one) also takes a census of the cyclic garbage
(:class:`GarbageCensus`): by type and age, with what it holds, a few cycles spelled out, and what vanished
during the collection (cycles a finalizer broke, e.g. a generator's: never in ``gc.garbage``). The census
collects, so it changes what it watches: a census every probe hides a sawtooth that waits for the worker's own
rare collections (gc_tuning.py). This is how aiokafka's dropped fetches were found (kafka/fetch_cycles.py).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("banditroute.memory")

PROBE_ENV = "BANDITROUTE_MEMORY_PROBE"
PROBE_INTERVAL_S = 10.0
TOP = 25


def probe_path() -> Path | None:
    value = os.environ.get(PROBE_ENV)
    return Path(value) if value else None


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@cache
def _libc() -> ctypes.CDLL | None:
    """glibc with ``mallinfo2`` typed, loaded once (a ``CDLL`` is cyclic garbage once dropped)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    return libc


def _used_kib() -> int:
    m = mallinfo()
    return m.get("uordblks", 0) + m.get("hblkhd", 0)


def mallinfo() -> dict[str, int]:
    """glibc's heap figures in KiB: arena (from the system, main arena), hblkhd (mmapped), in use, free."""
    libc = _libc()
    if libc is None:
        return {}
    m = libc.mallinfo2()
    return {k: getattr(m, k) // 1024 for k in ("arena", "hblkhd", "uordblks", "fordblks")}


class MemoryProbe:
    """Appends one line per :meth:`probe` call to ``path``."""

    def __init__(self, path: Path, sizes: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self.sizes = sizes
        self.trace = bool(os.environ.get(PROBE_ENV + "_TRACE"))
        if self.trace and not tracemalloc.is_tracing():
            tracemalloc.start(3)
        self._base: tracemalloc.Snapshot | None = None
        self._t0 = time.monotonic()
        self.gc_timer = GcTimer().install()
        every = os.environ.get(PROBE_ENV + "_GC", "")
        self.garbage = GarbageCensus() if every else None
        self.census_every = max(1, int(every)) if every.isdigit() else 1
        self._probes = 0

    async def run(self) -> None:
        """A timer's body (never raises: a probe must not stop the worker)."""
        try:
            self.probe()
        except Exception as exc:  # noqa: BLE001 - a debug hook
            log.warning("memory probe failed: %s", exc)

    def probe(self) -> None:
        top: list[Any] = []
        if self.trace:
            snap = tracemalloc.take_snapshot()
            if self._base is None:
                self._base = snap
            top = snap.compare_to(self._base, "traceback")[:TOP]
        line = {
            "malloc": mallinfo(),
            "t": round(time.monotonic() - self._t0, 1),
            "rss_kib": rss_kib(),
            "traced_kib": tracemalloc.get_traced_memory()[0] // 1024,
            "sizes": self.sizes(),
            "gc": self.gc_timer.report(),
            "garbage": self._census(),
            "grew": [
                {
                    "kib": s.size_diff // 1024,
                    "n": s.count_diff,
                    "at": [f"{f.filename}:{f.lineno}" for f in s.traceback],
                }
                for s in top
            ],
        }
        with self.path.open("ab") as f:
            f.write(orjson.dumps(line) + b"\n")

    def _census(self) -> dict[str, Any] | None:
        self._probes += 1
        if self.garbage is None or self._probes % self.census_every:
            return None
        self.gc_timer.paused = True
        try:
            return self.garbage.census()
        finally:
            self.gc_timer.paused = False


class GcTimer:
    """The collector's time per generation since :meth:`install` (a ``gc.callbacks`` pair; ~1 µs per
    collection)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.runs = [0, 0, 0]
        self.collected = [0, 0, 0]
        self.longest = [0.0, 0.0, 0.0]
        self._t0 = 0.0
        self._since = time.monotonic()
        self.paused = False
        """While set (a census collects on purpose), collections are not counted."""

    def install(self) -> GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if self.paused:
            return
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        elapsed = time.perf_counter() - self._t0
        generation = info["generation"]
        self.seconds[generation] += elapsed
        self.runs[generation] += 1
        self.collected[generation] += info["collected"]
        self.longest[generation] = max(self.longest[generation], elapsed)

    def report(self) -> dict[str, Any]:
        wall = time.monotonic() - self._since
        return {
            "wall_s": round(wall, 1),
            "runs": list(self.runs),
            "seconds": [round(s, 4) for s in self.seconds],
            "share": [round(s / wall, 5) if wall > 0 else 0.0 for s in self.seconds],
            "longest_ms": [round(s * 1000.0, 2) for s in self.longest],
            "collected": list(self.collected),
        }


def _held_bytes(garbage: list[object]) -> int:
    """What the objects take, with the objects only they refer to that the collector does not track (bytes,
    strings...: what is tracked and only reachable from garbage is garbage too, hence in the list)."""
    seen: set[int] = set()
    total = 0
    for obj in garbage:
        for o in (obj, *gc.get_referents(obj)):
            if id(o) not in seen and (o is obj or not gc.is_tracked(o)):
                seen.add(id(o))
                total += sys.getsizeof(o, 0)
    return total


def _by_type(garbage: list[object], top: int) -> dict[str, list[int]]:
    """``{type: [count, KiB held]}`` of the ``top`` types by memory held."""
    counts: Counter[str] = Counter()
    held: Counter[str] = Counter()
    for obj in garbage:
        name = _type_name(obj)
        counts[name] += 1
        held[name] += _held_bytes([obj])
    return {name: [counts[name], size // 1024] for name, size in held.most_common(top)}


def _named(obj: object) -> str:
    """The type's name, with the code's name for a generator, coroutine, frame or function."""
    code = None
    for attribute in ("gi_code", "cr_code", "ag_code", "f_code", "__code__"):
        code = getattr(obj, attribute, None)
        if code is not None:
            break
    name = _type_name(obj)
    return f"{name}:{code.co_filename.rsplit('/', 1)[-1]}:{code.co_qualname}" if code is not None else name


def _type_name(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _edge(holder: object, held: object) -> str:
    """How ``holder`` refers to ``held``, as far as it can be named (an attribute, key, index, local...)."""
    if isinstance(holder, dict):
        for k, v in holder.items():
            if v is held:
                return f"[{k!r}]"[:60]
        return "[key]"
    if isinstance(holder, list | tuple):
        for i, v in enumerate(holder):
            if v is held:
                return f"[{i}]"
    try:
        attributes = vars(holder)
    except TypeError:
        attributes = {}
    for k, v in attributes.items():
        if v is held:
            return f".{k}"
    if hasattr(holder, "f_locals"):  # a frame
        for k, v in holder.f_locals.items():
            if v is held:
                return f".{k}"
    for name in (
        "__dict__",
        "__closure__",
        "cell_contents",
        "__self__",
        "__func__",
        "tb_frame",
        "f_back",
        "tb_next",
        "__traceback__",
        "__context__",
        "__cause__",
        "_callbacks",
        "cr_frame",
        "gi_frame",
    ):
        try:
            if getattr(holder, name) is held:
                return f".{name}"
        except Exception:  # noqa: BLE001, S112 - any attribute may raise
            continue
    for name in getattr(type(holder), "__slots__", ()):
        if getattr(holder, name, None) is held:
            return f".{name}"
    return "->"


def _cycle(start: object, members: dict[int, object], limit: int = 12) -> list[str]:
    """The shortest path of references from ``start`` back to it through ``members`` (ids to objects)."""
    parent: dict[int, tuple[int, str]] = {}
    frontier = [start]
    seen = {id(start)}
    for _ in range(limit):
        nxt = []
        for obj in frontier:
            for ref in gc.get_referents(obj):
                if ref is start:
                    path = [f"{_type_name(obj)}{_edge(obj, ref)}"]
                    back = id(obj)
                    while back != id(start):
                        prev, _label = parent[back]
                        holder = members[prev] if prev in members else start
                        path.append(f"{_type_name(holder)}{_edge(holder, members[back])}")
                        back = prev
                    return list(reversed(path))
                rid = id(ref)
                if rid in members and rid not in seen:
                    seen.add(rid)
                    parent[rid] = (id(obj), "")
                    nxt.append(ref)
        frontier = nxt
        if not frontier:
            break
    return []


UNTRACKED_ALIVE = frozenset({"builtins.tuple", "builtins.dict"})
"""Types a collection may stop tracking while they are alive (CPython untracks tuples and dicts that can hold no
cycle): they leave ``gc.get_objects()`` without being freed."""


def cyclic_garbage() -> Counter[str]:
    """Collect everything; return, by type, how many objects only the collection freed (cyclic garbage, also
    what a finalizer freed on the way, which ``gc.garbage`` never shows), tuples and dicts left out."""
    before = Counter(_type_name(o) for o in gc.get_objects())
    gc.collect()
    after = Counter(_type_name(o) for o in gc.get_objects())
    freed = before - after
    for name in UNTRACKED_ALIVE:
        freed.pop(name, None)
    return freed


class GarbageCensus:
    """Cyclic garbage by age: collects the young generation, then the whole heap, both with
    ``gc.DEBUG_SAVEALL``, and counts what each found unreachable, by type. What the second finds had survived
    a young collection (alive then): the worker's own collections would free it only when the middle or the
    full collection runs, which the worker's thresholds make rare (:mod:`banditroute.gc_tuning`); a few of its
    cycles are spelled out."""

    def __init__(self, top: int = 15, cycles: int = 6) -> None:
        self.top = top
        self.cycles = cycles

    def census(self) -> dict[str, Any]:
        debug = gc.get_debug()
        sizes = [len(gc.get_objects(g)) for g in range(3)]
        used = [_used_kib()]
        before = {id(o): _named(o) for o in gc.get_objects(0)}
        gc.set_debug(debug | gc.DEBUG_SAVEALL)
        try:
            gc.collect(0)
            used.append(_used_kib())
            young = list(gc.garbage)
            # objects freed during the collection itself (their finalizer broke their cycle): not in gc.garbage
            alive = {id(o) for o in gc.get_objects()}
            alive.update(id(o) for o in young)
            vanished = Counter(name for key, name in before.items() if key not in alive)
            del before, alive
            del gc.garbage[:]
            gc.collect(2)
            used.append(_used_kib())
            old = list(gc.garbage)
            del gc.garbage[:]
        finally:
            gc.set_debug(debug)
        try:
            report = {
                "generations": sizes,
                "used_kib": used,
                "vanished": dict(vanished.most_common(self.top)),
                "young": len(young),
                "young_kib": _held_bytes(young) // 1024,
                "young_types": _by_type(young, self.top),
                "young_cycles": self._cycles(young),
                "old": len(old),
                "old_kib": _held_bytes(old) // 1024,
                "types": _by_type(old, self.top),
                "cycles": self._cycles(old),
            }
        except BaseException:
            young.clear()
            old.clear()
            gc.collect()
            raise
        held = _used_kib()
        young.clear()
        old.clear()
        gc.collect()  # now free them
        report["freed_malloc_kib"] = held - _used_kib()
        return report

    def _cycles(self, garbage: list[object]) -> list[list[str]]:
        counts = Counter(_type_name(o) for o in garbage)
        members = {id(o): o for o in garbage}
        spelled: list[list[str]] = []
        for name, _n in counts.most_common(self.cycles):
            sample = next(o for o in garbage if _type_name(o) == name)
            spelled.append(_cycle(sample, members))
        return spelled
