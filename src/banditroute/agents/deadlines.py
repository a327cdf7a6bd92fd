"""When the join's entries of one partition are due: a heap with one entry per run of a handoff, not per decision.

A handoff's run (the decisions of one record batch, in one partition) shares one deadline per task type, so the
join keeps one heap entry for all of them: ``(deadline_s, "", seq, ids)`` where ``ids`` is the run's request ids
in offset order joined into one string, until the run comes due; then the entry is replaced by one holding them
as a list, last first, to take from its end (same deadline, ``""`` and ``seq``: the heap's order holds). The first
decided is taken first. Anything else (a decision on the per-decision path, a resolved entry written again, a
retry) is ``(deadline_s, request_id)`` as before.

Ties never compare a run: two runs with the same deadline compare by ``seq`` (the order they were pushed), and a
single entry against a run compares its request id with ``""`` (a request id is not empty; were it empty, the
shorter tuple is the smaller). A run is only ever shortened at the top of the heap, and what decides the heap's
order (the deadline, then ``""`` and ``seq``) does not change meanwhile.

Per decision a run costs its request id's characters and a separator (the string is a copy, not a reference to
the pending store's key) instead of a ``(float, str)`` tuple (56 bytes and the slot), and one C-level push per run
instead of one per decision (whose tuples compared by request id when deadlines tied).

Why one string and not a list of the ids (8 bytes a slot): the index holds every in-flight decision's request id
until its deadline (300 s by default), and the cyclic garbage collector walks every reference a list holds. As
lists, a young collection of the worker at 45,000 decisions/s walked each run pushed since the one before (up to
~476,000 request ids: 10-24 ms of CPU with the GIL held, 13-47 ms of wall time), and each collection of an older
generation walked them all again. A string is never tracked, and a tuple of untracked objects is untracked by the
first collection that meets it, so a waiting run leaves the collector nothing to walk whatever its length. Its ids
share one deadline, so the whole run comes due in one tick, and the list lives only while that tick expires it
(docs/benchmarks.md, "lead40"). A dict of the ids would also do on CPython 3.11-3.13, which never track a dict of
strings, but from 3.14 every dict is tracked.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

SEPARATOR = "\n"
"""Between a run's request ids: never in a request id (``events.Identifier``: ``[A-Za-z0-9._:/@+=-]``); a run
whose ids hold it anyway is kept as a list (:func:`_run`)."""


def _run(request_ids: list[str]) -> str | list[str]:
    """What a run of two or more ids holds while it waits: the ids joined by :data:`SEPARATOR`, or, were one of
    them to hold it (not a valid request id), the ids last first as a list (tracked, but taken in the same
    order)."""
    text = SEPARATOR.join(request_ids)
    if text.count(SEPARATOR) == len(request_ids) - 1:
        return text
    return request_ids[::-1]


def _ids_of(ids: str | list[str]) -> list[str]:
    """A run's ids not taken yet, in order."""
    if isinstance(ids, str):
        return ids.split(SEPARATOR)
    return ids[::-1]


class Deadlines:
    """The deadlines of one partition's join entries (see the module docstring)."""

    __slots__ = ("heap", "_seq", "_ids")

    def __init__(self) -> None:
        self.heap: list[Any] = []
        """``(deadline_s, request_id)``, or ``(deadline_s, "", seq, ids)`` for a run (``ids``: a string while it
        waits, a list last first once it is due)."""
        self._seq = 0
        self._ids = 0
        """Request ids in :attr:`heap` (``len``: the join's compaction asks at every decision given up)."""

    def push(self, deadline_s: float, request_id: str) -> None:
        """``request_id`` is due at ``deadline_s``."""
        heapq.heappush(self.heap, (deadline_s, request_id))
        self._ids += 1

    def push_run(self, deadline_s: float, request_ids: list[str]) -> None:
        """Each of ``request_ids`` is due at ``deadline_s``; taken in their order when due. ``request_ids`` is
        not kept (their text is: see the module docstring)."""
        n = len(request_ids)
        if n > 1:
            self._seq += 1
            heapq.heappush(self.heap, (deadline_s, "", self._seq, _run(request_ids)))
            self._ids += n
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
            single: str = top[1]
            return single
        ids = top[3]
        if type(ids) is str:  # the run's first id to come due: all of them are (one deadline)
            ids = ids.split(SEPARATOR)
            ids.reverse()
            heap[0] = (top[0], "", top[2], ids)  # the same sort keys: the heap's order holds
        request_id: str = ids.pop()
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
            ids = [request_id for request_id in _ids_of(item[3]) if held(request_id)]
            if len(ids) > 1:
                kept.append((item[0], "", item[2], _run(ids)))
            elif ids:
                kept.append((item[0], ids[0]))
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
                for request_id in _ids_of(item[3]):
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
