"""A seeded family of outcome tables shaped like a typical routing set: 11 models x 3 task types.

Each member (``family:<seed>``) draws what the two fixed synthetic tables hold constant, so that defaults can be
checked on tables nobody tuned them to:

- per-call cost from tokens: a prompt's input tokens (lognormal, shared by all models) times the model's input
  price, plus the model's own output tokens (lognormal, with a per-model verbosity) times its output price;
  prices span about two orders of magnitude;
- quality 0/1 (correctness), graded in [0, 1] (a judge's probability) or in tenths (a judge's grade / 10), the
  same kind for every task type or a kind per task type;
- task types of different difficulty, that agree (no specialist) or disagree (a specialist in some or all task
  types, cheap or dear), with a drawn between-task spread: the per-task oracle's gain over the best single
  model ranges from nearly nothing to large;
- uneven task mixes, and 1,000-4,000 prompts per task type.

The draws were fixed before any policy was run on a member; members are taken in seed order, never picked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import expit, logit

from banditroute.sim.table import OutcomeTable, TaskOutcomes

FloatArray = npt.NDArray[np.float64]
PREFIX = "family:"
QUALITY_KINDS = ("binary", "graded", "tenths")


@dataclass(frozen=True)
class FamilyDraw:
    """What one member drew (its description in reports)."""

    seed: int
    quality_kinds: tuple[str, ...]  # per task type
    specialists: int  # task types with a specialist
    task_spread: float  # sd of a model's quality between task types, before specialists
    price_span: float  # dearest / cheapest output price
    quality_price_slope: float  # how much dearer models are better on average


def parse_member(name: str) -> int:
    """``"family:3"`` -> 3; ``ValueError`` for anything else."""
    seed = name.removeprefix(PREFIX)
    if not name.startswith(PREFIX) or not (seed.isascii() and seed.isdigit()):  # isdigit alone takes "²", "١"
        raise ValueError(f"a family member is named {PREFIX}<seed> (a non-negative integer), got {name!r}")
    return int(seed)


def _quality(rng: np.random.Generator, latent: FloatArray, kind: str) -> FloatArray:
    p: FloatArray = expit(latent)
    if kind == "binary":
        return (rng.random(p.shape) < p).astype(np.float64)
    if kind == "tenths":
        return np.asarray(np.clip(np.round(10.0 * p), 1.0, 10.0) / 10.0, dtype=np.float64)
    return p


def draw(seed: int, models: int = 11, task_types: int = 3) -> tuple[FamilyDraw, OutcomeTable]:
    """Member ``seed``: what it drew and its complete table (every prompt answered by every model)."""
    rng = np.random.default_rng([seed, 1913])
    k = models
    style = rng.choice(["binary", "graded", "mixed"])
    kinds = tuple(
        str(rng.choice(QUALITY_KINDS)) if style == "mixed" else ("binary" if style == "binary" else "graded")
        for _ in range(task_types)
    )
    span = float(10 ** rng.uniform(1.5, 2.5))
    cheapest_out = float(np.exp(rng.uniform(np.log(0.1e-6), np.log(0.8e-6))))  # USD per output token
    price_out = cheapest_out * span ** rng.uniform(0.0, 1.0, k)
    price_out[rng.permutation(k)[:2]] = cheapest_out * np.array([1.0, span])  # the span is attained
    price_in = price_out / rng.uniform(2.0, 5.0, k)
    verbosity = np.exp(rng.normal(0.0, 0.35, k))
    slope = float(rng.uniform(0.0, 0.12))
    z = (np.log(price_out) - np.log(price_out).mean()) / max(float(np.log(price_out).std()), 1e-9)
    base = np.clip(rng.uniform(0.45, 0.7) + slope * z + rng.normal(0.0, 0.07, k), 0.08, 0.92)
    spread = float(rng.uniform(0.01, 0.12))
    n_special = int(rng.integers(0, task_types + 1))
    special_tasks = rng.permutation(task_types)[:n_special]
    tasks: dict[str, TaskOutcomes] = {}
    for t in range(task_types):
        offset = rng.normal(0.0, 0.1)  # some task types are harder for every model
        mean = np.clip(base + offset + rng.normal(0.0, spread, k), 0.05, 0.95)
        if t in special_tasks:
            j = int(rng.integers(k))
            mean[j] = min(0.97, mean[j] + rng.uniform(0.08, 0.3))
        n = int(rng.integers(1000, 4001))
        difficulty = rng.normal(0.0, 1.0, (n, 1))
        latent = logit(mean)[None, :] - 0.9 * difficulty + rng.normal(0.0, 0.6, (n, k))
        tokens_in = np.exp(rng.normal(np.log(rng.uniform(100, 1000)), 0.8, (n, 1)))
        tokens_out = np.exp(rng.normal(np.log(250.0), 0.5, (n, 1)) + rng.normal(0.0, 0.4, (n, k))) * verbosity
        tasks[f"task{t}"] = TaskOutcomes(
            prompts=tuple(f"f{seed}-{t}-{i:05d}" for i in range(n)),
            quality=np.ascontiguousarray(_quality(rng, latent, kinds[t])),
            cost=np.ascontiguousarray(tokens_in * price_in[None, :] + tokens_out * price_out[None, :]),
            latency=np.full((n, k), np.nan),
        )
    described = FamilyDraw(seed, kinds, n_special, round(spread, 4), round(span, 1), round(slope, 4))
    names = tuple(f"m{j:02d}" for j in range(k))
    return described, OutcomeTable(models=names, tasks=tasks, source=f"synthetic:{PREFIX}{seed}")
