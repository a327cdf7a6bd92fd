"""DONE-WHEN of issue 13, small configuration: the evaluation suite runs end to end, and the default policy
is never below the naive Thompson reference by more than the seeds' noise, captures most of the oracle's gain
where task types disagree, and holds a shared budget.

Runs on the synthetic table whose task types rank models differently (always there) and on the shared MMLU-Pro
outcomes when ``../shared/data`` is beside the repo. Fixed seeds; margins well below the suite's figures (README).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from banditroute.sim.suite import evaluate

SHARED = Path(__file__).parents[2] / ".." / "shared" / "data" / "mmlupro_5shot_cot" / "outcomes.csv"


@pytest.mark.slow
def test_suite_small_configuration() -> None:
    sources = {"synthetic_disagree": "synthetic:synthetic_disagree"}
    if SHARED.exists():
        sources["mmlupro_5shot_cot"] = str(SHARED)
    result = evaluate(
        sources,
        lams=(20.0,),
        seeds=4,
        requests=8000,
        variants=("thompson", "thompson_naive"),
        budget_fractions=(0.25,),
        priors=False,
        jobs=2,
    )
    for cell in result.cells:
        vs = cell["policies"]["thompson"]["vs_naive"]
        assert not vs["worse"], (cell["label"], vs)
    by_label = {c["label"]: c["policies"]["thompson"] for c in result.cells}
    disagree = by_label["synthetic_disagree λ=20"]
    # 8,000 requests, a shorter horizon than the suite's 20,000 (where the README gives its figures)
    assert disagree["captured"]["mean"] >= 0.45, disagree["captured"]
    assert disagree["captured"]["worst"] >= 0.2, disagree["captured"]
    assert by_label["synthetic_disagree λ=20 one-pass"]["captured"]["mean"] >= 0.3
    for cell in result.cells:
        if cell["mode"] == "budget":
            figures = cell["policies"]["thompson"]
            assert abs(figures["cost_over_budget"]["mean"] - 1.0) <= 0.05, (cell["label"], figures)
            assert figures["quality_share"]["mean"] >= 0.85, (cell["label"], figures)
