"""Keep faust from fetching the topics the worker reads with its own loops (``kafka/partition_reader.py``).

The worker's faust agents still subscribe to ``feedback`` and ``outcomes``: faust's assignment of their
partitions says which partitions of the join and state tables this worker owns, and faust recovers those
tables. The records themselves are read by :class:`PartitionReader` loops, so faust must never fetch them (it
would decode and queue every record for nothing, and commit offsets nobody uses). faust pauses every assigned
partition at a rebalance and resumes them all once the tables are recovered; :func:`install` makes its
consumer leave the partitions of the app's ``held_topics`` out whenever it resumes partitions or sets its
active ones, so they stay paused from their assignment on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from faust.transport.consumer import Consumer

_RESUME = Consumer.resume_partitions
_SET_ACTIVE = Consumer._set_active_tps


def _held(consumer: Any) -> frozenset[str]:
    return frozenset(getattr(consumer.app, "held_topics", ()))


def resume_partitions(self: Any, tps: Iterable[Any]) -> None:
    """faust's ``resume_partitions`` without the partitions of held topics."""
    held = _held(self)
    _RESUME(self, {tp for tp in tps if tp.topic not in held})


def set_active_tps(self: Any, tps: Any) -> Any:
    """faust's ``_set_active_tps`` without the partitions of held topics."""
    active = _SET_ACTIVE(self, tps)
    held = _held(self)
    if held:
        active.difference_update([tp for tp in active if tp.topic in held])
    return active


def install() -> None:
    """Give faust's consumer (every transport's) the held topics; idempotent."""
    Consumer.resume_partitions = resume_partitions  # type: ignore[method-assign]
    Consumer._set_active_tps = set_active_tps  # type: ignore[method-assign]
