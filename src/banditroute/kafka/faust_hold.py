"""Keep faust from delivering the topics the worker reads with its own loops (``kafka/partition_reader.py``).

The worker's faust agents still subscribe to ``feedback`` and ``outcomes``: faust's assignment of their
partitions says which partitions of the join and state tables this worker owns, and faust recovers those
tables. The records themselves are read by :class:`PartitionReader` loops, so faust must never hand them to its
streams (it would decode and queue every record for nothing, and commit offsets nobody uses). faust pauses every
assigned partition at a rebalance and resumes them all once the tables are recovered; :func:`install` makes its
consumer leave the partitions of the app's ``held_topics`` out whenever it resumes partitions or sets its
active ones, so they stay paused from their assignment on, and out of its stall check. faust's pause is its own
bookkeeping: its aiokafka consumer may still prefetch a batch of each held partition in the background, which
faust drops (found in review; pausing them in aiokafka too, on faust's consumer thread, is not done).
"""

from __future__ import annotations

from collections.abc import Iterable
from time import monotonic
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


async def verify_all_partitions_active(self: Any) -> None:
    """faust's stall check without the partitions of held topics: faust never hands their records to a stream,
    so it would log "Stream has not started processing" for each of them every few seconds once the worker has
    run for ``stream_processing_timeout``."""
    held = _held(self)
    now = monotonic()
    for tp in self.assignment():
        await self.sleep(0)
        if not self.should_stop and tp.topic not in held:
            self.verify_event_path(now, tp)


def install() -> None:
    """Give faust's consumer (every transport's) the held topics; idempotent."""
    Consumer.resume_partitions = resume_partitions  # type: ignore[method-assign]
    Consumer._set_active_tps = set_active_tps  # type: ignore[method-assign]
    Consumer.verify_all_partitions_active = verify_all_partitions_active  # type: ignore[method-assign]
