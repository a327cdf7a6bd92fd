"""Which task types the metrics and the dashboard name: the configured ones plus the top N by traffic.

Every other task type is counted under ``other``, so the number of Prometheus label sets, dashboard series and
per-task counters does not depend on what clients put into ``task_type``. Traffic is counted per window
(60 s by default) in a bounded candidate table (lossy counting: when it is full, the entries with the lowest
count are dropped, so a flood of one-off names costs O(1) per request and never more than ``10 x n`` entries).
At the end of each window the named set becomes the ``n`` busiest task types of that window, the named ones
winning ties, so a named task type loses its name only to a busier one. While fewer than ``n`` are named, a
new task type is named at its first request.

A task type that loses its name drops its series (a counter that comes back starts again from 0, which
Prometheus treats as a reset); ``other`` only ever counts decisions made while their task type was unnamed,
so it never decreases.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from itertools import chain

OTHER = "other"
"""The label of every task type without a name of its own (a task type called ``other`` shares it)."""
CANDIDATES_PER_NAME = 10
NAMED_CLIENTS = 20
"""Local-mode clients named in the worker's local-decision counts (``Router.client_top``); the rest: ``other``."""


class TopTaskTypes:
    """Named task types for metrics and the dashboard; ``label`` runs once per decision (O(1) amortised)."""

    def __init__(self, n: int = 20, window_s: float = 60.0, pinned: Iterable[str] = ()) -> None:
        self.n = n
        self.window_s = window_s
        self.pinned = frozenset(pinned)
        self.named: set[str] = set()
        self._counts: dict[str, int] = {}
        self._window_end: float | None = None

    def configure(self, n: int, pinned: Iterable[str]) -> None:
        """New limits (a config reload); the named set shrinks at the next window end if ``n`` did."""
        self.n = n
        self.pinned = frozenset(pinned)

    def is_named(self, task_type: str) -> bool:
        return task_type in self.pinned or task_type in self.named

    def label_of(self, task_type: str) -> str:
        """The label ``task_type`` is shown under now (no counting)."""
        return task_type if self.is_named(task_type) else OTHER

    def label(self, task_type: str, now_s: float, n: int = 1) -> str:
        """Count ``n`` requests of ``task_type`` and return its label."""
        counts = self._counts
        if task_type in counts:
            counts[task_type] += n
        else:
            if len(counts) >= max(1, self.n) * CANDIDATES_PER_NAME:
                self._drop_least()  # a new dict: the task type goes into it
                counts = self._counts
            counts[task_type] = n
        if task_type in self.pinned or task_type in self.named:
            return task_type
        if len(self.named) < self.n:
            self.named.add(task_type)
            return task_type
        return OTHER

    def _drop_least(self) -> None:
        """Lossy counting: drop every unnamed candidate with the lowest count seen."""
        named, pinned = self.named, self.pinned
        low = min((c for t, c in self._counts.items() if t not in named and t not in pinned), default=None)
        if low is None:
            return
        self._counts = {t: c for t, c in self._counts.items() if c > low or t in named or t in pinned}

    def due(self, now_s: float) -> bool:
        """Whether the window has ended (the first call starts the first window)."""
        if self._window_end is None:
            self._window_end = now_s + self.window_s
            return False
        return now_s >= self._window_end

    def rerank(self, now_s: float) -> set[str]:
        """End the window: name the ``n`` busiest task types of it (named ones win ties); returns the task
        types that lost their name."""
        counts = self._counts
        ranked = sorted(
            {*counts, *self.named} - self.pinned,
            key=lambda t: (counts.get(t, 0), t in self.named),
            reverse=True,
        )
        top = set(ranked[: self.n])
        dropped = self.named - top
        self.named = top
        self._counts = {}
        self._window_end = now_s + self.window_s
        return dropped

    def count(
        self,
        counts: MutableMapping[tuple[str, str], int],
        task_type: str,
        model: str,
        now_s: float,
        n: int = 1,
    ) -> str:
        """Count ``n`` decisions into ``counts`` (keyed by (label, model)); at a window end, first drop the
        counters of task types that lost their name. Returns the label used."""
        self._end_window_if_due(counts, now_s)
        label = self.label(task_type, now_s, n)
        counts[(label, model)] = counts.get((label, model), 0) + n
        return label

    def _end_window_if_due(self, counts: MutableMapping[tuple[str, str], int], now_s: float) -> None:
        """At a window's end, rerank and drop the counters of the task types that lost their name."""
        if self.due(now_s):
            dropped = self.rerank(now_s)
            if dropped:
                for pair in [p for p in counts if p[0] in dropped]:
                    del counts[pair]

    def count_many(
        self,
        counts: MutableMapping[tuple[str, str], int],
        pairs: Iterable[tuple[tuple[str, str | None], int]],
        now_s: float,
        no_model: str = "<none>",
    ) -> None:
        """:meth:`count` of each ``((task type, model), n)`` in order, at one time (a polled batch's pairs; a
        model that is None or empty counted as ``no_model``): the window's end is checked once (at one time it
        can end only at the first), and the labels taken without a call per pair (a flood is a pair a decision)."""
        rest = iter(pairs)
        first = next(rest, None)
        if first is None:
            return  # no pair: no count(), not even its check of the window's end
        self._end_window_if_due(counts, now_s)
        candidates, named, pinned, n_named = self._counts, self.named, self.pinned, self.n
        full = max(1, n_named) * CANDIDATES_PER_NAME
        get = counts.get
        for (task_type, model), n in chain((first,), rest):
            if task_type in candidates:  # label(), inlined
                candidates[task_type] += n
            else:
                if len(candidates) >= full:
                    self._drop_least()  # as label(): a new dict, which the task type goes into
                    candidates = self._counts
                candidates[task_type] = n
            if task_type in pinned or task_type in named:
                label = task_type
            elif len(named) < n_named:
                named.add(task_type)
                label = task_type
            else:
                label = OTHER
            key = (label, model or no_model)
            counts[key] = get(key, 0) + n

    def size(self) -> int:
        """Named task types (pinned included): the bound on per-task-type series is ``size() + 1``."""
        return len(self.pinned | self.named)


__all__ = ["OTHER", "TopTaskTypes"]
