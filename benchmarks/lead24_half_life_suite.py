"""lead24 (docs/benchmarks.md "The half-life's default"): the half-life candidates with the Bernoulli change test
against the stationary replay, the earlier default and the naive sampler, over every dataset.

    python benchmarks/lead24_half_life_suite.py SEEDS OUT.json [VARIANT,...] [FIRST_SEED]

lead25 chose the Thompson draws' spread with it on seeds 0-5; lead28 checked that choice on seeds 6-17
(FIRST_SEED 6).
"""

import json
import sys
import time
from pathlib import Path

from banditroute.sim import suite

names = (
    sys.argv[3].split(",")
    if len(sys.argv) > 3
    else [
        "thompson",
        "thompson_drift",
        "thompson_hl_inf",
        "thompson_hl20000",
        "thompson_hl5000",
        "thompson_naive",
    ]
)
synth = ["synthetic_disagree", "synthetic_specialists"] + [f"family:{i}" for i in range(8)]
sources = suite.dataset_sources([], [Path("../shared/data")], synth)
t = time.time()
res = suite.evaluate(
    sources,
    lams=(5.0, 20.0, 50.0),
    seeds=int(sys.argv[1]),
    variants=names,
    priors=False,
    jobs=2,
    first_seed=int(sys.argv[4]) if len(sys.argv) > 4 else 0,
)
Path(sys.argv[2]).write_text(json.dumps(res.to_json()))
print("seconds", round(time.time() - t), flush=True)
