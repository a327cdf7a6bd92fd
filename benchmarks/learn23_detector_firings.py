"""learn23 (docs/benchmarks.md). Detector firings per 10,000 requests in stationary replays (thompson, half_life 2000, detector default)."""

import json
import sys
import time
from pathlib import Path

import numpy as np

from banditroute.core import learn
from banditroute.sim import suite
from banditroute.sim.suite import Cell, Variant, dataset_sources, load_source

fired = []
orig = learn._observe


def obs(row, consts, outcome, scale):
    new, paced = orig(row, consts, outcome, scale)
    if new[3] < row[3]:  # a cut: quality evidence (Q_N) went down
        fired.append((outcome.model, row[2] / row[3] if row[3] else 0.0, new[2] / new[3]))
    return new, paced


learn._observe = obs

seeds = int(sys.argv[1])
names = sys.argv[2:]
fams = [f"family:{i}" for i in range(8)]
src = dataset_sources([], [Path("../shared/data")], ["synthetic_disagree", "synthetic_specialists", *fams])
if names:
    src = {k: v for k, v in src.items() if k in names}
var = Variant("hl", "thompson", setup={"half_life": 2000.0})
out = {}
for name, source in src.items():
    table = load_source(source)
    q = table.mean_quality()
    for lam in (5.0, 20.0, 50.0):
        cell = Cell(name, "utility", lam)
        n = []
        t0 = time.time()
        best_hits = 0
        for seed in range(seeds):
            fired.clear()
            suite.run_seed(source, cell, seed, [var], 20000, 50)
            n.append(len(fired))
            u = table.mean_quality() - lam * table.mean_cost()
            best_models = {table.models[int(j)] for j in u.argmax(axis=1)}
            best_hits += sum(1 for m, _, _ in fired if m in best_models)
        per10k = np.array(n) / 2.0
        out[f"{name} λ={lam:g}"] = dict(
            mean=float(per10k.mean()), max=float(per10k.max()), on_best=best_hits / max(1, sum(n))
        )
        print(
            f"{name:24s} λ={lam:<3g} firings/10k req: mean {per10k.mean():5.1f} max {per10k.max():5.1f}  share on a task's best model {best_hits / max(1, sum(n)):.2f}  ({time.time() - t0:.0f}s)",
            flush=True,
        )
print(json.dumps(out))
