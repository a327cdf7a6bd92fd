"""learn23 (docs/benchmarks.md). Drift recovery and stationary dips per detector candidate in the in-process simulator (simulate_in_process)."""

import sys
import time

import numpy as np

from banditroute.sim.scenario import Scenario, SyntheticWorld
from banditroute.sim.simulator import simulate_in_process

# learn23's candidates around the worker's earlier default (half-life 2000, the normal test), and lead24's
# half-lives with the Bernoulli test ("hl20000" is the default since lead24)
_OLD = {"half_life": 2000.0, "change_test": "normal"}
CANDIDATES = {
    "default": _OLD,
    "t5": {**_OLD, "change_threshold": 5.0},
    "t6": {**_OLD, "change_threshold": 6.0},
    "w50": {**_OLD, "change_window": 50},
    "bernoulli": {**_OLD, "change_test": "bernoulli"},
    "off": {**_OLD, "change_window": None},
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
WORLDS = {
    "default": ("config/scenarios/default.yaml", 10000),
    "demo_test": ("tests/kafka/demo_world.yaml", 6000),
}


def first_below(flags_idx, flags, level, width):
    """Global index of the first request (task's own stream) where the trailing `width` share < level."""
    c = np.cumsum(flags)
    for k in range(width, len(flags) + 1):
        if (c[k - 1] - (c[k - width - 1] if k > width else 0)) / width < level:
            return int(flags_idx[k - 1])
    return None


def one(world_name, cand, seed, delay):
    path, n = WORLDS[world_name]
    sc = Scenario.load(path)
    world = SyntheticWorld(sc)
    tp = sc.task_policy(**CANDIDATES[cand])
    sim = simulate_in_process(world, "thompson", n=n, seed=seed, feedback_delay=delay, task_policy=tp)
    ev = next(d for d in sc.drift if d.model == "mid-tier")
    at, ti = ev.at, sim.task_types.index(ev.task_type)
    mj = sim.models.index("mid-tier")
    rows = np.flatnonzero(sim.task == ti)
    after = rows[rows >= at]
    before = rows[rows < at][-500:]
    flags = (sim.model[after] == mj).astype(float)
    r50 = first_below(after, flags, 0.5, 50)
    r10 = first_below(after, flags, 0.1, 50)
    out = {
        "share_before": float(np.mean(sim.model[before] == mj)),
        "share_end": float(np.mean(sim.model[after[-500:]] == mj)),
        "rec50": None if r50 is None else r50 - at,
        "rec10": None if r10 is None else r10 - at,
        "regret_before": float((sim.best_expected_utility[:at] - sim.expected_utility[:at]).mean()),
        "regret_after": float((sim.best_expected_utility[at:] - sim.expected_utility[at:]).mean()),
    }
    # stationary dips: any task's best model with trailing-200 share < 0.5 in [at - 2500, at)
    dips, final_ok = 0, True
    for tj, t in enumerate(sim.task_types):
        trows = np.flatnonzero(sim.task == tj)
        b = sim.models.index(world.best_model(t, at - 1, sim.lam, sim.mu))
        pre = trows[(trows < at)]
        fl = (sim.model[pre] == b).astype(float)
        c = np.concatenate([[0.0], np.cumsum(fl)])
        idx = [k for k in range(200, len(fl) + 1) if pre[k - 1] >= at - 2500]
        if any((c[k] - c[k - 200]) / 200 < 0.5 for k in idx):
            dips += 1
        bend = sim.models.index(world.best_model(t, n - 1, sim.lam, sim.mu))
        if np.mean(sim.model[trows[-500:]] == bend) < 0.8:
            final_ok = False
    out["dips"] = dips
    out["claims_ok"] = bool(final_ok and out["share_before"] >= 0.5 and out["share_end"] <= 0.1)
    return out


if __name__ == "__main__":
    world_name, seeds, delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cands = sys.argv[4].split(",") if len(sys.argv) > 4 else list(CANDIDATES)
    res = {}
    for cand in cands:
        t0 = time.time()
        rs = [one(world_name, cand, s, delay) for s in range(seeds)]
        res[cand] = rs

        def q(key, f, rs=rs):
            v = [r[key] for r in rs if r[key] is not None]
            return f(v) if v else float("nan")

        never = sum(1 for r in rs if r["rec10"] is None)
        print(
            f"{world_name} delay={delay} {cand:10s} rec50 median {q('rec50', np.median):6.0f} p90 {q('rec50', lambda v: np.percentile(v, 90)):6.0f} max {q('rec50', max):6.0f} | "
            f"rec10 median {q('rec10', np.median):6.0f} p90 {q('rec10', lambda v: np.percentile(v, 90)):6.0f} never {never} | "
            f"regret before {q('regret_before', np.mean):.4f} after {q('regret_after', np.mean):.4f} | "
            f"seeds with a stationary dip {sum(1 for r in rs if r['dips'])} | claims missed {sum(1 for r in rs if not r['claims_ok'])} ({time.time() - t0:.0f}s)",
            flush=True,
        )
