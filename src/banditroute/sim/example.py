"""Generate the small example outcomes file shipped as ``banditroute/data/example_outcomes.csv``.

Synthetic, with per-task accuracy and cost per call loosely shaped like the RouteLLM evaluation data (a large model
that is better everywhere but ~20x dearer, six task types, with clearer per-task winners than the real data, one of them scored 0-1 instead of 0/1), so that
``banditroute replay`` works out of the box. Regenerate with ``python -m banditroute.sim.example PATH``.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

# task type: (prompts, P(correct) large, small, mean cost large, small, scored)
TASKS: dict[str, tuple[int, float, float, float, float, bool]] = {
    "gsm8k": (130, 0.86, 0.64, 0.0133, 0.00065, False),
    "mmlu-humanities": (450, 0.81, 0.63, 0.0111, 0.00067, False),
    "mmlu-other": (310, 0.88, 0.74, 0.0044, 0.00026, False),
    "mmlu-social-sciences": (300, 0.93, 0.78, 0.0052, 0.00031, False),
    "mmlu-stem": (290, 0.70, 0.55, 0.0042, 0.00025, False),
    "mt-bench": (20, 0.92, 0.83, 0.0154, 0.00034, True),
}
MODELS = ("large-model", "small-model")


def generate(path: str | Path, seed: int = 7) -> Path:
    rng = np.random.default_rng(seed)
    file = Path(path)
    with file.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle, lineterminator="\n")
        out.writerow(["task_type", "prompt_id", "model", "quality", "cost_usd", "latency_ms"])
        for task, (n, q_large, q_small, c_large, c_small, scored) in TASKS.items():
            length = rng.lognormal(0.0, 0.5, size=n)  # shared prompt length drives both costs
            length /= length.mean()
            for i in range(n):
                for model, q, c, lat in (
                    (MODELS[0], q_large, c_large, 2500.0),
                    (MODELS[1], q_small, c_small, 900.0),
                ):
                    if scored:
                        quality = float(np.clip(rng.beta(q * 8, (1 - q) * 8), 0, 1))
                    else:
                        quality = float(rng.random() < q)
                    cost = c * length[i] * rng.lognormal(0.0, 0.1)
                    latency = lat * length[i] ** 0.5 * rng.lognormal(0.0, 0.3)
                    out.writerow(
                        [task, f"{task}/{i:04d}", model, f"{quality:.3g}", f"{cost:.3g}", f"{latency:.0f}"]
                    )
    return file


if __name__ == "__main__":  # pragma: no cover
    print(generate(sys.argv[1] if len(sys.argv) > 1 else "example_outcomes.csv"))
