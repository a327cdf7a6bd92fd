"""The decide loop's low-priority lane: requests of new or capped task types, parked so that requests of
established task types read after them are decided first (:class:`~banditroute.kafka.decide_service.DecideService`
with ``priority_lane``).

Bounded by count and by payload bytes; while it is full the loop reads no further. Each parked request keeps its
partition and offset, so the loop commits a partition only up to its oldest parked request (:meth:`LowLane.oldest`):
a crash re-decides from there, it never skips a parked request.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from banditroute.events import RoutingRequest
from banditroute.kafka.fast_request import FastRequest

LOW_LANE_MAX = 20_000
"""Requests parked at most (about 1.5 KB of memory each besides the payload)."""
LOW_LANE_BYTES = 8 * 1024 * 1024
"""Payload bytes parked at most."""


class Parked(NamedTuple):
    """A request read and validated, waiting for its decision (with what a dead letter of it needs)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    request: RoutingRequest | FastRequest


class LowLane:
    """FIFO of parked requests; per partition, the offsets still parked (oldest first)."""

    def __init__(self, max_requests: int = LOW_LANE_MAX, max_bytes: int = LOW_LANE_BYTES) -> None:
        if max_requests < 1 or max_bytes < 1:
            raise ValueError("the low lane needs room for at least one request")
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self._queue: deque[Parked] = deque()
        self._offsets: dict[int, deque[int]] = {}
        self.bytes = 0
        self.parked_total = 0
        """Requests parked since this lane was made (for the counters)."""

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def full(self) -> bool:
        return len(self._queue) >= self.max_requests or self.bytes >= self.max_bytes

    def park(self, parked: Parked) -> None:
        """Append; the caller stops reading once :attr:`full` (one poll may overfill it by its own size)."""
        offsets = self._offsets.get(parked.partition)
        if offsets is None:
            offsets = self._offsets[parked.partition] = deque()
        if offsets and offsets[-1] >= parked.offset:
            raise ValueError(f"offset {parked.offset} parked out of order in partition {parked.partition}")
        offsets.append(parked.offset)
        self._queue.append(parked)
        self.bytes += len(parked.value)
        self.parked_total += 1

    def take(self) -> Parked:
        """The oldest parked request (IndexError when empty)."""
        parked = self._queue.popleft()
        offsets = self._offsets[parked.partition]
        offsets.popleft()
        if not offsets:
            del self._offsets[parked.partition]
        self.bytes -= len(parked.value)
        return parked

    def oldest(self, partition: int) -> int | None:
        """The offset of the oldest request parked from ``partition``, or None."""
        offsets = self._offsets.get(partition)
        return offsets[0] if offsets else None

    def partitions(self) -> set[int]:
        return set(self._offsets)

    def clear(self) -> None:
        self._queue.clear()
        self._offsets.clear()
        self.bytes = 0
