"""review22: the join's give-ups of capped decisions while many joined entries are held (keep_joined_s).

Every capped decision past ``max_capped_in_flight`` is given up, and the join's compaction then asks the
partition's deadline index for its length (``JoinLogic._compact``). Since 16ab39e the length walked the heap
(``Deadlines.__len__``), so a flood of capped decisions cost O(entries held) each; review22 keeps a count.

    python benchmarks/review22_capped_give_up.py OLD_SRC NEW_SRC [PAIRS]

runs the same in-process scenario (JoinLogic only, one partition: ``JOINED`` decisions joined and held, then
``CAPPED`` capped decisions in handoffs of 10 with a bound of 2,000) under each ``src`` folder (PYTHONPATH), A/B
alternated, and prints the seconds of each run, the medians and the ratio new/old.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

JOINED, CAPPED, CAP = 30_000, 20_000, 2_000

SCENARIO = f"""
import time
from banditroute.agents.join import TAG_WORKER, JoinLogic, JoinPolicy, JoinResult
from banditroute.agents.pending import PendingStore
from banditroute.agents.pending import decision_id_for
from banditroute.served import served_fields
from banditroute.agents.join import FeedbackRecord

def served(rid, capped=False):
    event = {{"decision_id": decision_id_for(rid), "request_id": rid, "task_type": "chat", "tenant": None,
             "model": "m1", "fallbacks": ["m2"], "propensity": 0.7, "state_version": 3,
             "policy": {{"name": "thompson", "version": "1"}}}}
    if capped:
        event["reasons"] = {{"capped": "task_types"}}
    return served_fields(event)

policy = JoinPolicy(wait_s=30, keep_joined_s=60, on_timeout="default_reward")
join = JoinLogic(PendingStore({{}}), {{}}, lambda _t: policy, max_capped=lambda: {CAP})
offset = 0
for _ in range(0, {JOINED}, 100):
    join.on_served([(0, offset + i, served(f"j{{offset + i}}")) for i in range(100)], 0.0, TAG_WORKER, JoinResult())
    offset += 100
for i in range({JOINED}):
    fields = {{"request_id": f"j{{i}}", "model": "m1", "quality": 0.9, "idempotency_key": f"k{{i}}"}}
    join.on_feedback(FeedbackRecord(fields, b"{{}}", partition=0, offset=i), now_s=1.0)
start = time.perf_counter()
for _ in range(0, {CAPPED}, 10):
    join.on_served([(0, offset + i, served(f"c{{offset + i}}", True)) for i in range(10)], 2.0, TAG_WORKER,
                   JoinResult())
    offset += 10
assert join.given_up == {CAPPED} - {CAP}, join.given_up
print(time.perf_counter() - start)
"""


def run(src: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", SCENARIO],
        env={"PYTHONPATH": src, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def main() -> None:
    old_src, new_src = sys.argv[1], sys.argv[2]
    pairs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    old: list[float] = []
    new: list[float] = []
    for i in range(pairs):  # alternated, the order swapped every pair
        for which in ((old_src, old), (new_src, new))[:: 1 if i % 2 == 0 else -1]:
            which[1].append(run(which[0]))
    print("old s:", " ".join(f"{s:.3f}" for s in old))
    print("new s:", " ".join(f"{s:.3f}" for s in new))
    mo, mn = statistics.median(old), statistics.median(new)
    print(f"median old {mo:.3f} s, new {mn:.3f} s, new/old {mn / mo:.4f}")


if __name__ == "__main__":
    main()
