"""What the decide loop hands the join in memory: the decisions of one acknowledged batch, with their offsets."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import Any

from banditroute.served import Served

DECIDER_HEADER = "banditroute-decider"
"""Header on every decision a worker's decide loop publishes: the token of the assignment that decided it."""


@dataclass(slots=True)
class Handoff:
    """The decisions of one acknowledged batch, for the join (``DecideService`` in ``follow`` mode)."""

    token: bytes
    """The assignment that decided them (``DecideService.token`` then)."""
    decisions: list[tuple[int, int, Served]] = field(default_factory=list)
    """(decisions partition, offset, what the join keeps of the decision) of the decisions that serve a model,
    in offset order."""
    upto: dict[int, int] = field(default_factory=dict)
    """Per decisions partition, the offset after the last record of the batch (joinable or not)."""
    seq: int = 0
    """``DecideService.shipped`` when this batch was submitted: the join has every handoff up to it."""
    ranges: list[tuple[int, int, int]] = field(default_factory=list)
    """(decisions partition, first offset, offset after the last) of each record batch the loop appended: every
    offset in such a range holds one of its own decisions (a record batch is stored contiguously)."""


def build_handoff(
    token: bytes,
    topic: str,
    shipped: list[tuple[str, int, int, asyncio.Future[Any]]],
    joinable: dict[int, list[Served | None]],
    seq: int = 0,
) -> Handoff:
    """The handoff of one acknowledged batch: ``shipped`` are its record batches in order (topic, partition,
    records, acknowledged future: its result's offset is the batch's base offset), ``joinable`` the decisions
    appended to ``topic`` per partition in order (None for a record the join does not need), ``seq`` its
    ``DecideService.shipped``."""
    handoff = Handoff(token, seq=seq)
    taken: dict[int, int] = {}
    for shipped_topic, partition, count, future in shipped:
        if shipped_topic != topic:
            continue
        base = future.result().offset
        start = taken.get(partition, 0)
        taken[partition] = start + count
        taken_here = joinable.get(partition, ())[start : start + count]
        # (partition, offset, decision) of each decision that is not None, by C-level iterators (a decision is
        # a non-empty tuple: true)
        rows: Iterator[tuple[int, int, Any]] = compress(
            zip(repeat(partition), range(base, base + count), taken_here), taken_here
        )
        handoff.decisions.extend(rows)
        handoff.upto[partition] = base + count
        handoff.ranges.append((partition, base, base + count))
    return handoff


def skip_own(ranges: deque[tuple[int, int]], at: int) -> int:
    """Where a reader at offset ``at`` may go on from, given ``ranges`` (first, end) of own record batches in
    offset order: past every range that starts at or before where it would be (a gap between two ranges holds
    someone else's record, which must be read). Ranges it passes are dropped from ``ranges``."""
    to = at
    while ranges and ranges[0][0] <= to:
        to = max(to, ranges.popleft()[1])
    return to


def ignore_handoff(_handoff: Handoff) -> None:
    pass
