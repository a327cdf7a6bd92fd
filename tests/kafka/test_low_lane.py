"""The decide loop's low-priority lane without a broker: FIFO, the oldest parked offset per partition, bounds."""

from __future__ import annotations

import pytest

from banditroute.client import build_request
from banditroute.kafka.low_lane import LowLane, Parked


def parked(partition: int, offset: int, size: int = 10) -> Parked:
    request = build_request("junk", request_id=f"r{partition}-{offset}")
    return Parked("t.requests", partition, offset, None, b"x" * size, request)


def test_fifo_with_the_oldest_parked_offset_per_partition() -> None:
    lane = LowLane()
    for p, o in [(0, 5), (1, 3), (0, 9), (1, 4)]:
        lane.park(parked(p, o))
    assert len(lane) == 4 and lane.partitions() == {0, 1}
    assert (lane.oldest(0), lane.oldest(1), lane.oldest(2)) == (5, 3, None)
    assert [(x.partition, x.offset) for x in (lane.take(), lane.take())] == [(0, 5), (1, 3)]
    assert (lane.oldest(0), lane.oldest(1)) == (9, 4)
    lane.take()
    lane.take()
    assert not lane and lane.oldest(0) is None and lane.bytes == 0 and lane.parked_total == 4
    with pytest.raises(IndexError):
        lane.take()


def test_full_by_count_or_by_bytes() -> None:
    by_count = LowLane(max_requests=2, max_bytes=1000)
    by_count.park(parked(0, 0))
    assert not by_count.full
    by_count.park(parked(0, 1))
    assert by_count.full
    by_count.take()
    assert not by_count.full
    by_bytes = LowLane(max_requests=100, max_bytes=25)
    by_bytes.park(parked(0, 0, size=20))
    assert not by_bytes.full
    by_bytes.park(parked(1, 0, size=20))
    assert by_bytes.full and by_bytes.bytes == 40
    with pytest.raises(ValueError, match="room"):
        LowLane(max_requests=0)


def test_an_offset_parked_out_of_order_is_refused() -> None:
    """The commit of a partition stops at its oldest parked offset: that is only right if they are in order."""
    lane = LowLane()
    lane.park(parked(0, 7))
    with pytest.raises(ValueError, match="out of order"):
        lane.park(parked(0, 7))
    lane.clear()
    assert not lane and lane.oldest(0) is None
