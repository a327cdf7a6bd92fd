"""lead24 (docs/benchmarks.md "The half-life's default"): upward drift, a model gets better where it was not
chosen; how long until it has half its task type's traffic (trailing 100 requests).

    python benchmarks/lead24_upward_drift.py REQUESTS SEEDS default,hl5000,hl20000,hl_inf
"""

import sys
import time
from pathlib import Path

import numpy as np

from banditroute.sim.scenario import Scenario, SyntheticWorld
from banditroute.sim.simulator import simulate_in_process

C = {
    "default": {"half_life": 2000.0, "change_test": "normal"},
    "hl5000": {"half_life": 5000.0, "change_test": "bernoulli"},
    "hl20000": {"half_life": 20000.0, "change_test": "bernoulli"},
    "hl_inf": {"half_life": 1e9, "change_test": "bernoulli"},
    # lead25: the default's learning with Thompson draws of 0.8 / 0.7 times the posterior sd
    "explore80": {"half_life": 20000.0, "change_test": "bernoulli", "exploration": 0.8},
    "explore70": {"half_life": 20000.0, "change_test": "bernoulli", "exploration": 0.7},
    # lead26: 0.6, and the previous default pinned ("hl20000" follows the default exploration, 0.8 since lead25)
    "explore60": {"half_life": 20000.0, "change_test": "bernoulli", "exploration": 0.6},
    "explore100": {"half_life": 20000.0, "change_test": "bernoulli", "exploration": 1.0},
}
sc = Scenario.load(Path(__file__).with_name("lead24_upward_drift.yaml"))
n, seeds = int(sys.argv[1]), int(sys.argv[2])
for cand in sys.argv[3].split(","):
    t0 = time.time()
    out = {}
    for ev in sc.drift:
        out[(ev.model, ev.task_type)] = []
    for seed in range(seeds):
        world = SyntheticWorld(sc)
        sim = simulate_in_process(
            world, "thompson", n=n, seed=seed, feedback_delay=50, task_policy=sc.task_policy(**C[cand])
        )
        for ev in sc.drift:
            ti, mj = sim.task_types.index(ev.task_type), sim.models.index(ev.model)
            rows = np.flatnonzero(sim.task == ti)
            after = rows[rows >= ev.at]
            fl = (sim.model[after] == mj).astype(float)
            c = np.concatenate([[0.0], np.cumsum(fl)])
            hit = next(
                (after[k - 1] - ev.at for k in range(100, len(fl) + 1) if (c[k] - c[k - 100]) / 100 >= 0.5),
                None,
            )
            out[(ev.model, ev.task_type)].append(hit)
    for k, v in out.items():
        got = [x for x in v if x is not None]
        print(
            f"{cand:9s} {k}: reached 50% share in {len(got)}/{len(v)} seeds; median {np.median(got) if got else float('nan'):.0f} requests after; max {max(got) if got else float('nan')}",
            flush=True,
        )
    print(f"  ({time.time() - t0:.0f}s)", flush=True)
