"""`banditroute demo` on the real broker: it learns the best model per task type and follows the drift."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
WORLD = Path(__file__).with_name("demo_world.yaml")
"""Wide gaps between the best model and the rest, so the claims below hold in every run (see the file)."""


def test_demo_learns_and_follows_drift(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "banditroute",
            "demo",
            "--bootstrap",
            kafka_bootstrap,
            "--format",
            "json",
            "--out",
            str(out),
            "--scenario",
            str(WORLD),
            "--requests",
            "6000",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for task, info in summary["task_types"].items():
        best = info["best_model"]
        assert info["final_share"][best] >= 0.8, (task, info["final_share"])
    degraded = [d for d in summary["drift"] if d["model"] == "mid-tier" and d["task_type"] == "summarise"]
    assert degraded and degraded[0]["at"] == 3000, summary["drift"]
    assert degraded[0]["share_before"] >= 0.5, degraded
    assert degraded[0]["share_at_end"] <= 0.1, degraded
    for path in summary["plots"]:
        assert Path(path).stat().st_size > 10_000
