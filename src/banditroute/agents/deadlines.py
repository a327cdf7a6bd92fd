"""When the join's entries of one partition are due: a heap with one entry per run of a handoff, not per decision.

A handoff's run (the decisions of one record batch, in one partition) shares one deadline per task type, so the
join keeps one heap entry for all of them: ``(deadline_s, "", seq, ids)`` with the run's request ids in reverse
offset order as the keys of a dict (taken from the end with ``popitem``, so the first decided is due first). Anything else (a decision on the
per-decision path, a resolved entry written again, a retry) is ``(deadline_s, request_id)`` as before.

Ties never compare a run's list: two runs with the same deadline compare by ``seq`` (the order they were pushed),
and a single entry against a run compares its request id with ``""`` (a request id is not empty; were it empty,
the shorter tuple is the smaller). A run's list is only ever shortened at the top of the heap, and what decides
the heap's order (the deadline, then ``""`` and ``seq``) does not change meanwhile.

Per decision a run costs one dict entry (~26 bytes in a large run) instead of a ``(float, str)`` tuple (56 bytes
and the slot), and one C-level push per run instead of one per decision (whose tuples compared by request id when
deadlines tied).

Why a dict and not a list (8 bytes a slot): a dict whose keys and values are strings and None is never tracked by
the cyclic garbage collector, and a list always is. The index holds every in-flight decision's request id until its
deadline; as lists, a young collection walked each run pushed since the one before (at 45,000 decisions/s one of
them walked ~476,000 request ids: 15-24 ms of the worker's CPU with the GIL held, 18-47 ms of wall time; each
collection of an older generation walked all of them again). As dicts the collector sees one object per run and
does not look inside it (docs/benchmarks.md, "lead40").
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any


class Deadlines:
    """The deadlines of one partition's join entries (see the module docstring)."""

    __slots__ = ("heap", "_seq", "_ids")

    def __init__(self) -> None:
        self.heap: list[Any] = []
        """``(deadline_s, request_id)`` or ``(deadline_s, "", seq, {request id: None} in reverse order)``."""
        self._seq = 0
        self._ids = 0
        """Request ids in :attr:`heap` (``len``: the join's compaction asks at every decision given up)."""

    def push(self, deadline_s: float, request_id: str) -> None:
        """``request_id`` is due at ``deadline_s``."""
        heapq.heappush(self.heap, (deadline_s, request_id))
        self._ids += 1

    def push_run(self, deadline_s: float, request_ids: list[str]) -> None:
        """Each of ``request_ids`` is due at ``deadline_s``; taken in their order when due. ``request_ids`` is
        not kept (a dict of it in reverse order is: see the module docstring)."""
        if len(request_ids) > 1:
            self._seq += 1
            run = dict.fromkeys(reversed(request_ids))
            heapq.heappush(self.heap, (deadline_s, "", self._seq, run))
            self._ids += len(run)
        elif request_ids:
            heapq.heappush(self.heap, (deadline_s, request_ids[0]))
            self._ids += 1

    def pop_due(self, now_s: float) -> str | None:
        """The request id due first if it is due by ``now_s`` (taken off the index), else None."""
        heap = self.heap
        if not heap:
            return None
        top = heap[0]
        if top[0] > now_s:
            return None
        self._ids -= 1
        if len(top) == 2:
            heapq.heappop(heap)
            request_id: str = top[1]
            return request_id
        ids: dict[str, None] = top[3]
        request_id = ids.popitem()[0]
        if not ids:
            heapq.heappop(heap)
        return request_id

    def keep(self, held: Callable[[str], bool]) -> None:
        """Drop every request id for which ``held`` is false (decisions given up)."""
        kept: list[Any] = []
        count = 0
        for item in self.heap:
            if len(item) == 2:
                if held(item[1]):
                    kept.append(item)
                    count += 1
                continue
            ids = {request_id: None for request_id in item[3] if held(request_id)}  # untracked, as pushed
            if len(ids) > 1:
                kept.append((item[0], "", item[2], ids))
            elif ids:
                kept.append((item[0], next(iter(ids))))
            count += len(ids)
        heapq.heapify(kept)
        self.heap = kept
        self._ids = count

    def scheduled(self) -> Iterator[tuple[float, str]]:
        """``(deadline_s, request_id)`` of every request id in the index, in no particular order."""
        for item in self.heap:
            if len(item) == 2:
                yield item
            else:
                deadline_s = item[0]
                for request_id in item[3]:
                    yield deadline_s, request_id

    def __len__(self) -> int:
        """Request ids in the index (one per entry pushed and not yet due, given up ones until dropped): a count
        kept as they come and go, not a walk over the heap (the join's compaction asks at every decision given
        up, and a walk made a flood of capped decisions quadratic in the entries held: review22)."""
        return self._ids

    def __eq__(self, other: object) -> bool:
        """The same request ids due at the same deadlines (however they were pushed)."""
        if not isinstance(other, Deadlines):
            return NotImplemented
        return sorted(self.scheduled()) == sorted(other.scheduled())

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Deadlines({sorted(self.scheduled())!r})"
