"""The worker's decide path in process, for counting its work per request: ``python -m
banditroute.bench.decide_path [--steps N] [--per-partition N] [--made N] [--cpu]``.

Request records (bytes, as ``bench e2e`` writes them, in one record batch per partition and poll) are read
through aiokafka's fetch path as the worker's consumer reads a fetch response (``PartitionRecords``,
``FetchResult.getall``, with the worker's patches of them) and go through the worker's :class:`DecideService`
step (``_step``: validation, deciding, appending to record batches, the step's handoff) against a producer double
that acknowledges each record batch at once; the handoff then goes to the join (``JoinLogic.on_served``, as
``JoinIO._take_handoffs`` calls it) and the step's decisions to the dashboard's count (``Router._on_decisions``).
No broker, and little work that depends on time: the step sizes are set and the decide clock is the system
clock (the worker's: the decide loop's C lane reads it), whose only other work is a new millisecond's text, so
the instructions per request (``valgrind --tool=callgrind``, the difference of two step counts) repeat to a few
instructions whatever the machine's load. ``--cpu`` prints the thread's CPU time per request instead (median
of rounds). Packaged config, empty state view (priors), task type ``bench``, seed 1; malloc and the garbage
collector set up as the worker sets them.

``--canned-decide`` answers every request after the first with the first's decision (its summary, text and join
entry, with the request's own ids in the join entry): the decide path without the decide step's work. It
estimates the most a faster decide step (the policy core's draws, the decision's text) could save, while
reading, checks, record batches and the join stay; not a strict bound: the canned answer still costs a call
and a tuple, and leaves the rest of the path warmer caches.

``--python-loop`` decides every request in the decide loop's Python loop (no C lane, ``_native.lane``): the
same decisions, for comparing the two in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson

from banditroute import memory
from banditroute.agents.decide import DecideLogic, StateView
from banditroute.agents.join import TAG_WORKER, JoinLogic, JoinResult
from banditroute.agents.pending import PendingStore
from banditroute.app import Router
from banditroute.codec import DeadLetterCounter
from banditroute.config import PACKAGED_CONFIG, Registry, RouterConfig
from banditroute.gc_tuning import tune_for_worker
from banditroute.kafka import decide_service, fetch_cycles
from banditroute.kafka.decide_service import Decider, DecideService, Request
from banditroute.kafka.fetch_double import Fetched, read, record_batch
from banditroute.kafka.handoff import build_handoff
from banditroute.kafka.producer_double import AckingProducer
from banditroute.kafka.staged import StagedTable
from banditroute.limits import CAPS
from banditroute.served import Decided, Served
from banditroute.web.top import TopTaskTypes

PARTITIONS = 4
CLOCK_S = 1_796_000_000.0
"""The decide clock (2026-11-30): fixed, so blocks and the clock's text are made the same way every run."""
CREATED_AT = "2026-11-30T00:00:00.000000+00:00"
MAX_POLL: int = inspect.signature(DecideService).parameters["max_batch"].default
"""The most requests one poll of the decide loop holds (the worker's: it leaves ``max_batch`` at its default)."""


def request_batch(topic: str, step: int, per_partition: int) -> Fetched:
    """One poll's records: ``per_partition`` requests in each partition (``bench e2e``'s request text, keyed by
    the request id), one record batch per partition as the broker returns it."""
    fetched: Fetched = {}
    for partition in range(PARTITIONS):
        base = step * per_partition
        records = []
        for i in range(per_partition):
            rid = f"r{partition}-{base + i}"
            value = orjson.dumps(
                {"schema_version": 1, "request_id": rid, "task_type": "bench", "created_at": CREATED_AT}
            )
            records.append((rid.encode(), value))
        fetched[(topic, partition)] = (base, record_batch(base, records, int(CLOCK_S * 1000)))
    return fetched


class CannedDecide:
    """A decide step that answers each request with the first request's decision (``--canned-decide``): the
    summary and the text are the first's, the join entry the first's with the request's own ids."""

    def __init__(self, logic: Decider) -> None:
        self.decide = logic.decide_encoded  # the real step, bound before the logic's is replaced
        self.first: tuple[Decided, Served | None] | None = None

    def __call__(self, request: Request) -> tuple[Decided, Served | None]:
        first = self.first
        if first is None:
            first = self.first = self.decide(request)
            if first[1] is None:  # every later request would skip the join: the figure would leave it out
                raise SystemExit("--canned-decide: the first request served no model (no join entry to copy)")
            return first
        decided, served = first
        assert served is not None  # checked at the first
        request_id = request.request_id
        return decided, (request_id, "d:" + request_id, *served[2:])


class DecidePath:
    """A worker's decide loop, join and dashboard count, wired without Kafka."""

    def __init__(self, python_loop: bool = False) -> None:
        registry = Registry(RouterConfig.load(PACKAGED_CONFIG))
        logic = DecideLogic(registry, StateView(), np.random.default_rng(1), worker_id="w")
        self.dashboard = SimpleNamespace(
            top=TopTaskTypes(),
            decisions_by_model=Counter(),
            capped=Counter({cap: 0 for cap in CAPS}),
            recent_decisions=[],
        )
        self.service = DecideService(
            logic,
            bootstrap="in-process",
            requests_topic="p.requests",
            decisions_topic="p.decisions",
            deadletter_topic="p.deadletter",
            group_id="p.decide",
            security={},
            max_payload_bytes=1 << 20,
            dead_letters=DeadLetterCounter(),
            on_decisions=self._count,
            own_thread=False,
            follow=True,
            priority_lane=True,
        )
        service = self.service
        service._decision_partitions = PARTITIONS
        service.token = b"0123456789abcdef"
        service._headers = [("banditroute-decider", service.token)]
        service.assigned = frozenset(range(PARTITIONS))
        if python_loop:
            service.native_lane = None
        self.pending = PendingStore(StagedTable(SimpleNamespace(data={}), lambda _key: 0))
        self.join = JoinLogic(self.pending, {}, registry.join_policy)
        self.producer = AckingProducer()
        self.owned = set(range(PARTITIONS))

    def _count(self, batch: list[Decided]) -> None:
        Router._on_decisions(self.dashboard, batch)  # type: ignore[arg-type]  # the fields it reads

    async def warm_up(self, batch: Fetched) -> None:
        """A first step, then the priority lane emptied: the first requests of a task type the config does not
        list wait there until it holds state (how long the lane's time slices take would otherwise decide how
        many are left for the measured steps)."""
        await self.step(batch)
        while self.service.lane:
            await self.step({}, draining=True)

    async def step(self, fetched: Fetched, draining: bool = False) -> None:
        """One poll read and through the decide loop, then its handoff through the join (as the committer
        would)."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        committer: asyncio.Task[None] = asyncio.ensure_future(asyncio.sleep(0))
        # the consumer's deserializer as the decide loop sets it (none before kafka/raw_fetch.py)
        batch = read(fetched, getattr(decide_service, "raw_records", None))
        await self.service._step(batch, self.producer, queue, committer, draining)
        _futures, _offsets, handoff_args = queue.get_nowait()
        handoff = build_handoff(*handoff_args)
        owned = self.owned
        result = JoinResult()
        self.join.on_served([d for d in handoff.decisions if d[0] in owned], CLOCK_S, TAG_WORKER, result)
        await committer


async def run(
    steps: int,
    per_partition: int,
    cpu: bool,
    rounds: int,
    made: int,
    canned_decide: bool = False,
    python_loop: bool = False,
) -> None:
    # the arguments first: nothing process-wide is changed for a run that is refused
    if per_partition * PARTITIONS > MAX_POLL:  # a poll the worker never reads whole
        raise SystemExit(
            f"--per-partition must be at most {MAX_POLL // PARTITIONS}: the decide loop's polls hold at most "
            f"{MAX_POLL} requests over its {PARTITIONS} partitions"
        )
    # as many request records made whatever is measured: the difference of two counts is the steps' own work
    total = steps * (rounds if cpu else 1) + 2
    if total > made:
        raise SystemExit(f"--made must be at least {total}")
    # one ship per step, as a worker deciding at speed ships a 1,000-request step (~10 ms); under callgrind a
    # step takes ~50 times longer, and the wall clock would ship after every other slice of 32 requests, a
    # different number of times in every run
    decide_service.SHIP_SLICE_S = float("inf")
    memory.limit_arenas()  # as the worker (Router) does
    memory.fix_mmap_threshold()
    fetch_cycles.install()  # as the worker (Router) does
    path = DecidePath(python_loop)
    batches = [request_batch("p.requests", s, per_partition) for s in range(made)]
    await path.warm_up(batches[0])
    await path.step(batches[1])
    if canned_decide:  # the decide loop reads the bound method from its logic at every step
        path.service.logic.decide_encoded = CannedDecide(path.service.logic)  # type: ignore[method-assign]
    tune_for_worker()  # as the worker, once ready
    if not cpu:
        for batch in batches[2 : 2 + steps]:
            await path.step(batch)
        print(f"{steps * per_partition * PARTITIONS} requests, {path.producer.records} records")
        return
    per_step = per_partition * PARTITIONS
    times = []
    for r in range(rounds):
        t0 = time.thread_time()
        for batch in batches[2 + r * steps : 2 + (r + 1) * steps]:
            await path.step(batch)
        times.append((time.thread_time() - t0) / (steps * per_step) * 1e6)
    print(
        f"CPU per request: median {statistics.median(times):.2f} us, min {min(times):.2f} over {rounds} rounds"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10, help="polls decided (per round with --cpu)")
    parser.add_argument(
        "--per-partition",
        type=int,
        default=250,
        help=f"requests per partition and poll ({PARTITIONS} partitions; at most {MAX_POLL // PARTITIONS})",
    )
    parser.add_argument("--cpu", action="store_true", help="print the CPU time per request instead")
    parser.add_argument("--rounds", type=int, default=9, help="rounds with --cpu (the median is printed)")
    parser.add_argument(
        "--made",
        type=int,
        default=22,
        help="polls of request records made (>= steps + 2; with --cpu, >= steps x rounds + 2)",
    )
    parser.add_argument(
        "--canned-decide",
        action="store_true",
        help="answer every request with the first's decision: the path without the decide step's work",
    )
    parser.add_argument(
        "--python-loop",
        action="store_true",
        help="decide every request in the decide loop's Python loop (without its C lane)",
    )
    args = parser.parse_args()
    asyncio.run(
        run(
            args.steps,
            args.per_partition,
            args.cpu,
            args.rounds,
            args.made,
            args.canned_decide,
            args.python_loop,
        )
    )


if __name__ == "__main__":
    main()
