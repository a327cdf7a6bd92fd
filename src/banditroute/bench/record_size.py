"""What the decision record's size alone costs at one paced rate (issue #16, lead40).

``python -m banditroute.bench.record_size --bootstrap HOST:PORT [--rate R] [--seconds S] [--rounds N]
[--pad-bytes P] [--requests N] [--out FILE]``

Round by round (the sides' order cycling through all six orders), the same absolute rate for each side
(:func:`banditroute.bench.e2e.measure_side`: the pre-filled drain, then one paced level): the full router, the
raw relay (``bench e2e``'s reference), and the same relay with a ``"pad"`` field of ``P`` characters in each
record. The relay's record for a bench request is ~71-74 bytes; the router's decision ~770-800 bytes and a
35-byte header (795 with a ``fill-123456`` id), so the default ``P`` = 750 makes the padded relay write about as
many bytes a request as the router.

The router runs with the worker's defaults: since lead41 its record batches are snappy-compressed
(``BANDITROUTE_DECISIONS_COMPRESSION``), ~140 bytes a decision on the wire; set that variable to ``none`` in the
environment (the worker inherits it) for lead40's comparison of uncompressed records.

When the padded relay's p99 is as high as the router's, the record size alone is enough to make a tail like the
router's at that rate (the relay does not pipeline its acknowledgements as the router does, so it is the more
sensitive of the two to a slow one). Prints and writes (``--out``) every run's figures and, per side, the median
p50/p99 over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
from typing import Any

from banditroute.bench.common import machine
from banditroute.bench.e2e import DRAIN_REQUESTS, RELAY_ARGS, ROUTER_ARGS, measure_side
from banditroute.bench.relay import PAD_FLAG

PAD_BYTES = 750
"""Padding that brings the relay's record (~71 bytes) to the router's bench decision with its header (830)."""
PADDED = "padded_relay"
SIDES: dict[str, tuple[str, tuple[str, ...]]] = {
    "router": ("router", ROUTER_ARGS),
    "relay": ("relay", RELAY_ARGS),
    PADDED: ("relay", RELAY_ARGS),  # with the padding flag: side_args
}
"""Each side's ``measure_side`` kind and module arguments: those of ``bench e2e``'s router and relay."""
LEVEL_KEYS = ("p50", "p99", "process_cores", "driver_cores", "machine_busy_cores", "cpu_us_per_request")


def side_args(side: str, pad_bytes: int) -> tuple[str, tuple[str, ...]]:
    """``measure_side``'s kind and module arguments for ``side`` (the padded relay with ``pad_bytes``)."""
    kind, args = SIDES[side]
    if side == PADDED:  # the flag goes before the bootstrap and prefix measure_side puts at "{relay}"
        args = (*args[:-1], f"{PAD_FLAG}{pad_bytes}", args[-1])
    return kind, args


ORDERS = tuple(itertools.permutations(SIDES))
"""Every order of the sides: round ``n`` runs ``ORDERS[n % 6]``, so over six rounds each side runs first, last and
right after each other side equally often (what the run before leaves behind, such as the broker's collections
after large records, falls on each side alike)."""


def round_order(number: int) -> list[str]:
    """The sides in round ``number`` (from 0): see :data:`ORDERS`."""
    return list(ORDERS[number % len(ORDERS)])


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per side, the median p50 and p99 over its runs."""
    return {
        side: {key: statistics.median(run[key] for run in rows) for key in ("p50", "p99")}
        for side, rows in runs.items()
        if rows
    }


async def run(
    bootstrap: str, rate: float, seconds: float, rounds: int, pad_bytes: int, requests: int
) -> dict[str, Any]:
    """Every side once per round, in :func:`round_order`; see the module docstring."""
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for number in range(rounds):
        for side in round_order(number):
            kind, args = side_args(side, pad_bytes)
            out = await measure_side(
                bootstrap, kind, args, requests=requests, seconds=seconds, loads=(), rates=(rate,)
            )
            level = next(iter(out["latency_at_ms"].values()))
            runs[side].append({"per_s": out["per_s"], **{key: level[key] for key in LEVEL_KEYS}})
    return {
        "rate": rate,
        "seconds": seconds,
        "pad_bytes": pad_bytes,
        "runs": runs,
        "median": summarise(runs),
        "machine": machine(bootstrap),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m banditroute.bench.record_size", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--rate", type=float, default=50_000.0, help="Paced rate, the same for every side.")
    parser.add_argument("--seconds", type=float, default=10.0, help="Per paced level.")
    parser.add_argument(
        "--rounds", type=int, default=6, help="Rounds of the three sides (six cover every order)."
    )
    parser.add_argument("--pad-bytes", type=int, default=PAD_BYTES, help="Characters of padding per record.")
    parser.add_argument(
        "--requests", type=int, default=DRAIN_REQUESTS, help="The pre-filled drain (bench e2e's default)."
    )
    parser.add_argument("--out", default=None, help="Also write the result to this JSON file.")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.pad_bytes < 0 or args.rate <= 0 or args.seconds <= 0 or args.requests < 1:
        parser.error("--rounds and --requests must be >= 1, --pad-bytes >= 0, --rate and --seconds > 0")
    result = asyncio.run(
        run(args.bootstrap, args.rate, args.seconds, args.rounds, args.pad_bytes, args.requests)
    )
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
