"""A normal workload at a fixed rate, each request timed on its own (``test_flood.py``).

The flood test compares the normal workload's p99 under a flood with a quiet run's. A closed loop of rounds
(send 20, await their decisions, send their feedback) gives one figure per round: its sample of 15 quiet
rounds had its p99 at its worst round, and the rate differed between the phases (fast rounds when quiet,
slow ones under the flood). Here requests are sent at the same fixed rate in both phases, whatever came back,
and each one's round trip is its own: sent, until the client has read its decision. Feedback follows each
decision at once, as a client's would. Wall-clock times (``time.time()``), so that they line up with the
records' timestamps.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson

from tests.kafka.router_world import Loop, feedback_for, request


@dataclass(slots=True)
class Trip:
    """One normal request's way (wall-clock seconds)."""

    sent: float
    """When the client called ``send``."""
    acked: float = float("nan")
    """When the broker acknowledged the request."""
    decided: float = float("nan")
    """The decision record's timestamp: when the worker appended it to its record batch."""
    read: float = float("nan")
    """When the client read its decision."""

    @property
    def round_trip_ms(self) -> float:
        return (self.read - self.sent) * 1000.0

    @property
    def parts_ms(self) -> tuple[float, float, float]:
        """The request until acknowledged (client and broker); until its decision was made (the router's share:
        reading, queueing, deciding); the decision until the client read it (its produce and the fetch)."""
        return (
            (self.acked - self.sent) * 1000.0,
            (self.decided - self.sent) * 1000.0,
            (self.read - self.decided) * 1000.0,
        )


async def paced(
    loop: Loop,
    rng: np.random.Generator,
    rate: float,
    *,
    count: int | None = None,
    until: Callable[[], bool] | None = None,
    timeout_s: float = 180.0,
) -> dict[str, Trip]:
    """Send ``chat`` requests at ``rate`` per second, ``count`` of them or until ``until()`` holds, read each
    one's decision (recorded in ``loop.decisions`` and ``loop.order``) and send its feedback; returns each
    request's :class:`Trip` once every decision was read. A late send is made at once: the rate holds."""
    assert loop.producer is not None and (count is not None or until is not None)
    trips: dict[str, Trip] = {}
    sending_done = asyncio.Event()
    reader = asyncio.create_task(_read_decisions(loop, rng, trips, sending_done))
    try:
        start, i = time.monotonic(), 0
        while (count is None or i < count) and (until is None or not until()):
            wait = start + i / rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            req = request()
            trip = trips[req["request_id"]] = Trip(time.time())
            sent = await loop.producer.send(
                f"{loop.prefix}.requests", key=req["request_id"].encode(), value=orjson.dumps(req)
            )
            sent.add_done_callback(lambda _f, trip=trip: setattr(trip, "acked", time.time()))
            i += 1
        sending_done.set()
        await asyncio.wait_for(asyncio.shield(reader), timeout_s)
    finally:
        if not reader.done():
            reader.cancel()
    missing = [r for r, t in trips.items() if math.isnan(t.read)]
    assert not missing, f"{len(missing)} of {len(trips)} normal requests got no decision in {timeout_s} s"
    return trips


async def _read_decisions(
    loop: Loop, rng: np.random.Generator, trips: dict[str, Trip], sending_done: asyncio.Event
) -> None:
    assert loop.consumer is not None and loop.producer is not None
    read = 0
    while not sending_done.is_set() or read < len(trips):
        batch = await loop.consumer.getmany(timeout_ms=50)
        now = time.time()
        for records in batch.values():
            for rec in records:
                skip = loop.skip_key_prefix
                if not rec.value or (skip and rec.key and rec.key.startswith(skip)):
                    continue
                d = orjson.loads(rec.value)
                rid = d["request_id"]
                if rid in loop.decisions:
                    continue
                loop.decisions[rid] = d
                loop.order.append(rid)
                trip = trips.get(rid)
                if trip is not None:
                    trip.read, trip.decided = now, rec.timestamp / 1000.0
                    read += 1
                await loop.send("feedback", feedback_for(d, rng), rid)


def percentiles(values: list[float] | np.ndarray) -> str:
    """p50 / p90 / p99 / max (ms), as printed by the flood test."""
    if len(values) == 0:
        return "none"
    p = np.percentile(np.asarray(values, dtype=float), [50, 90, 99, 100])
    return " / ".join(f"{v:.0f}" for v in p)
