"""learn23 (docs/benchmarks.md "The change detector's false alarms"). Detector alone: one model gets every event, Bernoulli(p) or Beta quality; firings per 10k observations."""

import numpy as np

from banditroute.core import ModelSpec, Outcome, TaskPolicy, learn, new_state, update_many

count = [0]
orig = learn._observe


def obs(row, consts, outcome, scale):
    new, paced = orig(row, consts, outcome, scale)
    if new[3] < row[3]:
        count[0] += 1
    return new, paced


learn._observe = obs


def run(p, window, thr, n=200_000, seed=0, kind="bern", test="normal"):
    rng = np.random.default_rng(seed)
    models = (ModelSpec("m0", cost_per_call_usd=0.001),)
    pol = TaskPolicy(change_window=window, change_threshold=thr, change_test=test)
    st = new_state(models, pol)
    count[0] = 0
    q = (rng.random(n) < p).astype(float) if kind == "bern" else rng.beta(p * 4, (1 - p) * 4, n)
    for i in range(0, n, 1000):
        st = update_many(st, models, pol, [Outcome("m0", quality=float(x)) for x in q[i : i + 1000]])
    return count[0] / n * 10_000


for window, thr, test in [
    (25, 4.0, "normal"),
    (25, 5.0, "normal"),
    (25, 6.0, "normal"),
    (50, 4.0, "normal"),
    (100, 4.0, "normal"),
    (25, 4.0, "bernoulli"),
]:
    print(
        window,
        thr,
        test,
        " ".join(f"p={p}:{run(p, window, thr, test=test):.2f}" for p in (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)),
        flush=True,
    )
