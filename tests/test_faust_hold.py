"""faust's consumer leaves the worker's held topics (:mod:`banditroute.kafka.faust_hold`) out of its stall check."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from typing import Any

from banditroute.kafka import faust_hold

TP = namedtuple("TP", "topic partition")


class _Consumer:
    """What faust's stall check uses of its consumer."""

    def __init__(self, held: set[str], assigned: list[TP]) -> None:
        self.app = type("App", (), {"held_topics": held})()
        self.assigned = assigned
        self.should_stop = False
        self.checked: list[TP] = []

    def assignment(self) -> list[TP]:
        return self.assigned

    async def sleep(self, _s: float) -> None:
        await asyncio.sleep(0)

    def verify_event_path(self, _now: float, tp: Any) -> None:
        self.checked.append(tp)


def test_held_partitions_are_not_checked_for_stalled_streams() -> None:
    assigned = [TP("p.feedback", 0), TP("p.catalog", 0), TP("p.outcomes", 1), TP("p.catalog", 1)]
    consumer = _Consumer({"p.feedback", "p.outcomes"}, assigned)
    asyncio.run(faust_hold.verify_all_partitions_active(consumer))
    assert consumer.checked == [TP("p.catalog", 0), TP("p.catalog", 1)]


def test_install_puts_it_on_fausts_consumer() -> None:
    from faust.transport.consumer import Consumer

    faust_hold.install()
    assert Consumer.verify_all_partitions_active is faust_hold.verify_all_partitions_active
