"""join21 (issue #16): the main thread's per-decision work in process, reproducibly under callgrind.

``python benchmarks/join21_replay.py N [join|count|enc|both]``: bench.decide_path's decide loop makes 13 steps of
1,000 decisions (4 partitions x 250) once; their handoffs then go through a fresh ``JoinLogic.on_served``
(``join``), their batches through ``Router._on_decisions`` (``count``, at a fixed clock), or only
``encode_fresh_many`` (``enc``): the first step unmeasured, then N steps inside ``operator.call`` so that
``valgrind --tool=callgrind --toggle-collect=_operator_call`` counts only them. Per decision:
(Collected(N=12) - Collected(N=4)) / 8,000 (``benchmarks/join21_replay.sh SRC TAG WHAT``). Repeats to ~0.1 %.
"""
import asyncio, sys
from collections import Counter
from types import SimpleNamespace

from banditroute.bench import decide_path as dp
from banditroute.agents.join import TAG_WORKER, JoinLogic, JoinResult
from banditroute.agents.pending import PendingStore
from banditroute.app import Router
from banditroute.kafka import decide_service, fetch_cycles
from banditroute.kafka.handoff import build_handoff
from banditroute.kafka.staged import StagedTable
from banditroute.config import PACKAGED_CONFIG, Registry, RouterConfig
from banditroute.limits import CAPS
from banditroute.web.top import TopTaskTypes
from banditroute import memory
from banditroute.gc_tuning import tune_for_worker

N = int(sys.argv[1]); WHAT = sys.argv[2] if len(sys.argv) > 2 else "both"
MADE = 14

async def gen():
    decide_service.SHIP_SLICE_S = float("inf")
    memory.limit_arenas(); memory.fix_mmap_threshold(); fetch_cycles.install()
    path = dp.DecidePath()
    counted = []
    path.service.on_decisions = lambda b: counted.append(list(b))
    handoffs = []
    batches = [dp.request_batch("p.requests", s, 250) for s in range(MADE)]
    async def step(fetched, draining=False):
        queue = asyncio.Queue(); committer = asyncio.ensure_future(asyncio.sleep(0))
        batch = dp.read(fetched, getattr(decide_service, "raw_records", None))
        await path.service._step(batch, path.producer, queue, committer, draining)
        _f, _o, args = queue.get_nowait()
        handoffs.append(build_handoff(*args))
        await committer
    await step(batches[0])
    while path.service.lane:
        await step({}, draining=True)
    n0 = len(handoffs)
    for b in batches[1:]:
        await step(b)
    return handoffs[n0:], counted[n0:]

handoffs, counted = asyncio.run(gen())
import banditroute.app as _app
_app.time = SimpleNamespace(time=lambda: dp.CLOCK_S)
tune_for_worker()
registry = Registry(RouterConfig.load(PACKAGED_CONFIG))
pending = PendingStore(StagedTable(SimpleNamespace(data={}), lambda _key: 0))
join = JoinLogic(pending, {}, registry.join_policy)
dash = SimpleNamespace(top=TopTaskTypes(), decisions_by_model=Counter(), capped=Counter({c: 0 for c in CAPS}), recent_decisions=[])
owned = set(range(dp.PARTITIONS))
# warm: the first recorded step always
def one(i):
    if WHAT in ("join", "both"):
        join.on_served([d for d in handoffs[i].decisions if d[0] in owned], dp.CLOCK_S, TAG_WORKER, JoinResult())
    if WHAT == "enc":
        from banditroute.agents.pending import encode_fresh_many
        encode_fresh_many(handoffs[i].decisions, {"bench": 1796000060000})
    if WHAT == "dumps":
        from banditroute.agents.pending import encode_fresh_many
        import orjson
        orjson.dumps([d[2] for d in handoffs[i].decisions])
    if WHAT in ("count", "both"):
        Router._on_decisions(dash, counted[i])
one(0)
import operator
def measured():
    for i in range(1, 1 + N):
        one(i)
operator.call(measured)
print(len(handoffs), sum(len(h.decisions) for h in handoffs[1:1+N]), "decisions;", len(pending.held), "held")
