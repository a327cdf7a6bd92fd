"""perf22 (issue #16): the decide thread's per-request work in process, reproducibly under callgrind.

``python benchmarks/perf22_replay.py N``: bench.decide_path's decide loop (``DecideService._step``: the fetched
records' reading, validation, deciding, the record batches, the step's handoff built) on steps of 1,000 requests
(4 partitions x 250), no join and no dashboard count (the main thread's: benchmarks/join21_replay.py): a warm-up
step and the priority lane emptied unmeasured, then N steps inside ``operator.call`` so that ``valgrind
--tool=callgrind --toggle-collect=_operator_call`` counts only them. Per request: (Collected(N=20) -
Collected(N=4)) / 16,000 (``benchmarks/perf22_replay.sh SRC TAG``: N = 4 and 20, address space layout
randomisation off). Runs of one tree still differ by a few hundred instructions per request (59,876 / 60,042 /
62,023 for main 3a95b22; the cause was not found): take several runs of each side and compare medians.
"""

import asyncio, operator, sys, time

from banditroute.bench import decide_path as dp
from banditroute.kafka import decide_service, fetch_cycles
from banditroute.kafka.handoff import build_handoff
from banditroute import memory
from banditroute.gc_tuning import tune_for_worker

N = int(sys.argv[1])
MADE = max(14, N + 2)

decide_service.SHIP_SLICE_S = float("inf")
memory.limit_arenas()
memory.fix_mmap_threshold()
fetch_cycles.install()
path = dp.DecidePath()
path.service.on_decisions = lambda b: None
batches = [dp.request_batch("p.requests", s, 250) for s in range(MADE)]
loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)


async def step(fetched, draining=False):
    queue = asyncio.Queue()
    committer = asyncio.ensure_future(asyncio.sleep(0))
    batch = dp.read(fetched, getattr(decide_service, "raw_records", None))
    await path.service._step(batch, path.producer, queue, committer, draining)
    _f, _o, args = queue.get_nowait()
    build_handoff(*args)
    await committer


async def warm():
    await step(batches[0])
    while path.service.lane:
        await step({}, draining=True)
    await step(batches[1])


async def steps():
    for b in batches[2 : 2 + N]:
        await step(b)


loop.run_until_complete(warm())
# decision_ms (its text's length) and nothing else reads perf_counter once SHIP_SLICE_S is infinite: a constant
# clock (a C callable: float() is 0.0) keeps two runs of the same code to the same instructions
time.perf_counter = float
tune_for_worker()
operator.call(lambda: loop.run_until_complete(steps()))
print(path.producer.records, "records")
