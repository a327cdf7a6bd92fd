"""bench/record_size.py and the relay's padding flag, without a broker: the padded relay's arguments reach the relay
process as ``--pad-bytes=N`` and are parsed back, and the medians are per side."""

from __future__ import annotations

import pytest

from banditroute.bench.record_size import PAD_BYTES, SIDES, round_order, side_args, summarise
from banditroute.bench.relay import parse_argv


def test_the_padded_relay_gets_its_padding_and_the_others_none() -> None:
    assert side_args("padded_relay", 123) == (
        "relay",
        ("banditroute.bench.relay", "--pad-bytes=123", "{relay}"),
    )
    assert side_args("relay", 123) == ("relay", ("banditroute.bench.relay", "{relay}"))
    assert side_args("router", 123) == ("router", ("banditroute", "worker"))
    # measure_side puts the bootstrap and the prefix where "{relay}" is: what the relay process then reads
    kind, args = side_args("padded_relay", PAD_BYTES)
    assert parse_argv([*args[1:-1], "127.0.0.1:9092", "bench-x"]) == (
        "relay",
        PAD_BYTES,
        "127.0.0.1:9092",
        "bench-x",
    )


def test_the_relays_arguments() -> None:
    assert parse_argv(["127.0.0.1:9092", "p"]) == ("relay", 0, "127.0.0.1:9092", "p")
    assert parse_argv(["decide", "127.0.0.1:9092", "p"]) == ("decide", 0, "127.0.0.1:9092", "p")
    assert parse_argv(["--pad-bytes=0", "127.0.0.1:9092", "p"]) == ("relay", 0, "127.0.0.1:9092", "p")
    for bad in ("-1", "abc", ""):
        with pytest.raises(ValueError, match="whole number"):
            parse_argv([f"--pad-bytes={bad}", "127.0.0.1:9092", "p"])
    with pytest.raises(ValueError, match="usage"):
        parse_argv(["127.0.0.1:9092"])
    with pytest.raises(ValueError, match="unknown mode 'relya'"):
        parse_argv(["relya", "127.0.0.1:9092", "p"])
    with pytest.raises(ValueError, match="pads the relay's records"):
        parse_argv(["--pad-bytes=5", "decide", "127.0.0.1:9092", "p"])


def test_six_rounds_balance_position_and_predecessor() -> None:
    orders = [round_order(n) for n in range(6)]
    assert all(sorted(order) == sorted(SIDES) for order in orders)
    assert len({tuple(order) for order in orders}) == 6
    for side in SIDES:
        assert sum(order[0] == side for order in orders) == 2  # first twice, last twice
        assert sum(order[-1] == side for order in orders) == 2
        for before in SIDES:  # right after each other side twice
            if before != side:
                follows = sum(order[k - 1] == before and order[k] == side for order in orders for k in (1, 2))
                assert follows == 2
    assert round_order(6) == round_order(0)


def test_medians_per_side() -> None:
    runs = {
        "relay": [{"p50": 20.0, "p99": 40.0}, {"p50": 30.0, "p99": 90.0}, {"p50": 25.0, "p99": 60.0}],
        "padded_relay": [{"p50": 28.0, "p99": 110.0}],
        "router": [],
    }
    assert summarise(runs) == {
        "relay": {"p50": 25.0, "p99": 60.0},
        "padded_relay": {"p50": 28.0, "p99": 110.0},
    }
