"""Synthetic outcome tables whose task types rank the models differently.

The recorded datasets all have a few models that lead most task types, so sharing evidence across task types
only ever helps on them. These tables are the opposite case: each task type has its own specialist, so a
pooling or prior scheme that drags task types toward the average shows what it costs here.

Outcomes are generated per prompt: a prompt's difficulty is shared by all models (hard prompts are hard for
everyone, as in real benchmarks), and a prompt's length scales every model's cost alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit

from banditroute.sim.table import OutcomeTable, TaskOutcomes


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate: counts, how task types disagree, and the kind of quality score."""

    name: str
    models: int = 11
    task_types: int = 3
    prompts_per_task: int = 3000
    graded: bool = False  # True: quality in [0, 1] (a judge's score); False: 0/1 correctness
    specialist_gain: float = 0.25  # quality a task type's specialist gains there
    task_noise: float = 0.08  # spread of every other model's quality between task types
    seed: int = 7


SPECS = {
    "synthetic_disagree": SyntheticSpec("synthetic_disagree"),
    "synthetic_specialists": SyntheticSpec(
        "synthetic_specialists", models=8, task_types=6, prompts_per_task=1500, graded=True, seed=11
    ),
}


def generate(spec: SyntheticSpec) -> OutcomeTable:
    """A complete outcome table (every prompt answered by every model), deterministic for the spec."""
    rng = np.random.default_rng(spec.seed)
    k, tasks = spec.models, spec.task_types
    names = tuple(f"m{j:02d}" for j in range(k))
    base_quality = rng.uniform(0.35, 0.75, k)
    price = np.exp(rng.uniform(np.log(5e-5), np.log(1.5e-2), k))  # USD per call of a typical prompt
    # expensive models are somewhat better on average, as in practice
    base_quality = np.clip(base_quality + 0.08 * (np.log(price) - np.log(price).mean()) / 2.0, 0.1, 0.9)
    specialists = rng.choice(k, size=tasks, replace=k < tasks)
    out: dict[str, TaskOutcomes] = {}
    for t in range(tasks):
        mean = np.clip(base_quality + rng.normal(0.0, spec.task_noise, k), 0.05, 0.95)
        mean[specialists[t]] = min(0.97, mean[specialists[t]] + spec.specialist_gain)
        n = spec.prompts_per_task
        difficulty = rng.normal(0.0, 1.0, (n, 1))
        latent = logit(mean)[None, :] - 0.9 * difficulty + rng.normal(0.0, 0.6, (n, k))
        if spec.graded:
            quality = expit(latent)
        else:
            quality = (rng.random((n, k)) < expit(latent)).astype(np.float64)
        length = np.exp(rng.normal(0.0, 0.5, (n, 1)))
        cost = price[None, :] * length * np.exp(rng.normal(0.0, 0.15, (n, k)))
        prompts = tuple(f"s{t}-{i:05d}" for i in range(n))
        out[f"task{t}"] = TaskOutcomes(
            prompts=prompts,
            quality=np.ascontiguousarray(quality),
            cost=np.ascontiguousarray(cost),
            latency=np.full((n, k), np.nan),
        )
    return OutcomeTable(models=names, tasks=out, source=f"synthetic:{spec.name}")
