"""kafka/fetch_double.py reads a fetch response as ``consumer.getmany`` hands it over: ``max_records`` over all
partitions (aiokafka's ``Fetcher.fetched_records``), none empty; and the bench that reads through it refuses a poll
larger than the decide loop's."""

from __future__ import annotations

import pytest

from banditroute.bench import decide_path
from banditroute.kafka import decide_service
from banditroute.kafka.fetch_double import read, record_batch


def test_max_records_counts_over_every_partition_and_no_partition_is_empty() -> None:
    fetched = {
        ("t", p): (0, record_batch(0, [(b"k", b"v%d" % i) for i in range(n)], 1_796_000_000_000))
        for p, n in enumerate([1500, 1500, 10])
    }
    fetched[("t", 3)] = (0, b"")  # nothing fetched for it
    got = read(fetched, max_records=2000)
    # before: 1500 + 1500 + 10 and an empty list for partition 3 (the decide loop's step reads records[-1])
    assert [(tp.partition, len(records)) for tp, records in got.items()] == [(0, 1500), (1, 500)]
    assert [r.offset for r in got[next(iter(got))]] == list(range(1500))


async def test_the_decide_path_bench_refuses_a_poll_the_decide_loop_never_reads() -> None:
    # before: 3,000 requests a partition were read 2,000 a partition and the CPU per request divided by 3,000
    too_many = 2000 // decide_path.PARTITIONS + 1
    ship_slice_s = decide_service.SHIP_SLICE_S
    with pytest.raises(SystemExit, match="--per-partition must be at most 500"):
        await decide_path.run(steps=1, per_partition=too_many, cpu=False, rounds=1, made=3)
    with pytest.raises(SystemExit, match="--made must be at least 3"):
        await decide_path.run(steps=1, per_partition=1, cpu=False, rounds=1, made=2)
    # refused before anything process-wide is set: the tests after this one keep the worker's slices (the
    # refusals came after the bench's one ship per step, SHIP_SLICE_S = inf, for the rest of the test run)
    assert decide_service.SHIP_SLICE_S == ship_slice_s
