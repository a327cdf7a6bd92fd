"""The policy evaluation suite: every policy over several datasets, objectives and seeds, mean and worst case.

A *cell* is one dataset under one objective: utility with a λ, a mean-cost budget, or a one-pass replay.
Each cell is replayed with every seed, and all policies of a seed see the same request stream. Per cell and
policy the suite reports the mean and the worst seed of ``captured`` (the share of the per-task oracle's gain
over the best single model), realised and on expected utility (the mean utility of the chosen model, less
noisy); in budget mode the quality as a share of the budget oracle (the best per-task mix with mean cost at
most B, a linear program over the table's means) and mean cost / B.

Defaults of the router are chosen by this suite's mean *and* worst case over all datasets, never by one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from banditroute.core.budget import best_mix
from banditroute.core.models import TaskPolicy
from banditroute.sim import family
from banditroute.sim.priors import FittedPriors, fit_priors
from banditroute.sim.replay import ReplayResult, RouterSetup, default_setup, replay
from banditroute.sim.synthetic import SPECS, generate
from banditroute.sim.table import OutcomeTable, load_outcomes

FloatArray = npt.NDArray[np.float64]
CURVE_POINTS = 50
BUDGET_FRACTIONS = (0.1, 0.25, 0.5)


@dataclass(frozen=True)
class Variant:
    """A named policy configuration: a replay policy plus changes to the replay's router setup."""

    name: str
    policy: str
    setup: Mapping[str, Any] = field(default_factory=dict)  # keyword arguments of ``default_setup``
    task_policy: Mapping[str, Any] = field(default_factory=dict)  # fields of TaskPolicy to replace


_WORKER = TaskPolicy()
_NORMAL = {"change_test": "normal"}
_BERNOULLI = {"change_test": "bernoulli"}


def _at_exploration(level: float) -> Variant:
    """The worker's settings with Thompson draws at ``level`` times the posterior's standard deviation,
    named ``thompson_explore<percent>``."""
    return Variant(
        f"thompson_explore{round(level * 100)}",
        "thompson",
        setup={"half_life": _WORKER.half_life},
        task_policy={"exploration": level},
    )


VARIANTS: dict[str, Variant] = {
    "thompson": Variant("thompson", "thompson"),
    "thompson_v0": Variant(
        "thompson_v0",
        "thompson",
        setup={"pooling": "fixed", "pooled_prior_strength": 500.0, "shared_budget": False},
        task_policy={"sampler": "normal", "pacing": "dual"},
    ),
    "thompson_nopool": Variant("thompson_nopool", "thompson", setup={"pooled_prior_strength": 0.0}),
    "thompson_clipped": Variant("thompson_clipped", "thompson", task_policy={"sampler": "clipped"}),
    "thompson_normal": Variant("thompson_normal", "thompson", task_policy={"sampler": "normal"}),
    "thompson_dual": Variant("thompson_dual", "thompson", task_policy={"pacing": "dual"}),
    "thompson_task_budget": Variant("thompson_task_budget", "thompson", setup={"shared_budget": False}),
    "thompson_split_mean": Variant("thompson_split_mean", "thompson", setup={"budget_split": "mean"}),
    "thompson_split_slack": Variant("thompson_split_slack", "thompson", setup={"budget_split": "slack"}),
    # the worker splits about once a second (agents/budget_split.py): every 20 blocks (1,000 requests at delay 50)
    "thompson_split_every20": Variant("thompson_split_every20", "thompson", setup={"budget_split_every": 20}),
    # the between-task variance for groups of few task types (core.pooling.TAU2_METHODS)
    "thompson_pool_posterior": Variant(
        "thompson_pool_posterior", "thompson", setup={"pooling": "eb:posterior"}
    ),
    "thompson_pool_dl_k": Variant("thompson_pool_dl_k", "thompson", setup={"pooling": "eb:dl_k"}),
    "thompson_pool_dl": Variant("thompson_pool_dl", "thompson", setup={"pooling": "eb:dl"}),
    # pooled priors corrected for task types that are easier or harder for every model (family members)
    "thompson_pool_offset": Variant("thompson_pool_offset", "thompson", setup={"pooling": "eb:dl_offset"}),
    # each model's tau² moderated towards the common tau² of all models (core.pooling "dl_shared")
    "thompson_pool_shared": Variant("thompson_pool_shared", "thompson", setup={"pooling": "eb:dl_shared"}),
    "thompson_pool_shared2": Variant(
        "thompson_pool_shared2", "thompson", setup={"pooling": "eb:dl_shared", "pool_shared_df": 2.0}
    ),
    "thompson_pool_shared10": Variant(
        "thompson_pool_shared10", "thompson", setup={"pooling": "eb:dl_shared", "pool_shared_df": 10.0}
    ),
    # each model's tau² its posterior mean under a half-Cauchy prior scaled by the common tau (learn20)
    "thompson_pool_posterior_shared": Variant(
        "thompson_pool_posterior_shared", "thompson", setup={"pooling": "eb:posterior_shared"}
    ),
    # task types' offsets out of the means and into the centres, the interaction moderated (learn20)
    "thompson_pool_offset_shared": Variant(
        "thompson_pool_offset_shared", "thompson", setup={"pooling": "eb:dl_offset_shared"}
    ),
    # each model's tau² drawn from posterior_shared's posterior each time the priors are pooled (learn21)
    "thompson_pool_sampled_shared": Variant(
        "thompson_pool_sampled_shared", "thompson", setup={"pooling": "eb:sampled_shared"}
    ),
    "thompson_pool_sampled": Variant("thompson_pool_sampled", "thompson", setup={"pooling": "eb:sampled"}),
    # sampled_shared's draw only where the pooled prior outweighs the task type's own evidence, DL elsewhere
    "thompson_pool_sampled_thin": Variant(
        "thompson_pool_sampled_thin", "thompson", setup={"pooling": "eb:sampled_thin"}
    ),
    # tau² at least what the task type's own evidence shows against its pooled centre (core.pooling "dl_conflict")
    "thompson_pool_conflict": Variant(
        "thompson_pool_conflict", "thompson", setup={"pooling": "eb:dl_conflict"}
    ),
    "thompson_pool_shared_conflict": Variant(
        "thompson_pool_shared_conflict", "thompson", setup={"pooling": "eb:dl_shared_conflict"}
    ),
    # pooled strength scaled by h / (h + the task type's own observations), h fixed a priori (issue #13)
    "thompson_pool_decay500": Variant(
        "thompson_pool_decay500", "thompson", setup={"pool_traffic_half": 500.0}
    ),
    "thompson_pool_decay2000": Variant(
        "thompson_pool_decay2000", "thompson", setup={"pool_traffic_half": 2000.0}
    ),
    # each pooled prior a robust mixture: w on the pooled prior, 1 - w on the catalog's (core.robust)
    "thompson_pool_robust80": Variant(
        "thompson_pool_robust80", "thompson", setup={"pool_robust_weight": 0.8}
    ),
    "thompson_pool_robust95": Variant(
        "thompson_pool_robust95", "thompson", setup={"pool_robust_weight": 0.95}
    ),
    "thompson_pool_robust50": Variant(
        "thompson_pool_robust50", "thompson", setup={"pool_robust_weight": 0.5}
    ),
    "thompson_pool50": Variant("thompson_pool50", "thompson", setup={"pooled_prior_strength": 50.0}),
    "thompson_pool1000": Variant("thompson_pool1000", "thompson", setup={"pooled_prior_strength": 1000.0}),
    # the worker's learning as it ships: TaskPolicy's defaults for the half-life and the change detector, which the
    # suite's stationary `thompson` leaves off (half_life null)
    "thompson_worker": Variant("thompson_worker", "thompson", setup={"half_life": _WORKER.half_life}),
    # the worker's earlier settings (half-life 2000 events, the normal change test) and detector candidates
    # around them (learn23); the half-life candidates that lead24 compared with the Bernoulli test
    "thompson_drift": Variant("thompson_drift", "thompson", setup={"half_life": 2000.0}, task_policy=_NORMAL),
    "thompson_drift_t5": Variant(
        "thompson_drift_t5",
        "thompson",
        setup={"half_life": 2000.0},
        task_policy={**_NORMAL, "change_threshold": 5.0},
    ),
    "thompson_drift_t6": Variant(
        "thompson_drift_t6",
        "thompson",
        setup={"half_life": 2000.0},
        task_policy={**_NORMAL, "change_threshold": 6.0},
    ),
    "thompson_drift_w50": Variant(
        "thompson_drift_w50",
        "thompson",
        setup={"half_life": 2000.0},
        task_policy={**_NORMAL, "change_window": 50},
    ),
    "thompson_drift_bernoulli": Variant(
        "thompson_drift_bernoulli", "thompson", setup={"half_life": 2000.0}, task_policy=_BERNOULLI
    ),
    "thompson_drift_off": Variant(
        "thompson_drift_off", "thompson", setup={"half_life": 2000.0}, task_policy={"change_window": None}
    ),
    "thompson_hl5000": Variant(
        "thompson_hl5000", "thompson", setup={"half_life": 5000.0}, task_policy=_BERNOULLI
    ),
    "thompson_hl20000": Variant(
        "thompson_hl20000", "thompson", setup={"half_life": 20000.0}, task_policy=_BERNOULLI
    ),
    # no decay, the detector alone (a half-life so long that its discount is below float precision per event)
    "thompson_hl_inf": Variant(
        "thompson_hl_inf", "thompson", setup={"half_life": 1e9}, task_policy=_BERNOULLI
    ),
    # the worker's settings with Thompson draws of 0.8 and 0.7 times the posterior sd (lead25; 0.8 is TaskPolicy's
    # default since, so every variant above that does not set "exploration" replays with it: their figures in
    # docs/benchmarks.md were measured at 1.0, the posterior itself)
    # lead26 added 1.0 (the previous default, the posterior itself, pinned) and 0.6, for fresh seeds
    **{v.name: v for v in map(_at_exploration, (0.8, 0.7, 1.0, 0.6))},
    "thompson_naive": Variant("thompson_naive", "thompson_naive"),
    "thompson_top_two": Variant("thompson_top_two", "thompson_top_two"),
    "epsilon_greedy": Variant("epsilon_greedy", "epsilon_greedy"),
    "ucb1": Variant("ucb1", "ucb1"),
}
DEFAULT_VARIANTS = ("thompson", "thompson_v0", "thompson_naive", "epsilon_greedy", "ucb1")


@dataclass(frozen=True)
class Cell:
    """One dataset under one objective: ``mode`` is "utility", "budget" or "one_pass"."""

    dataset: str
    mode: str
    lam: float
    budget: float | None = None
    budget_fraction: float | None = None

    @property
    def label(self) -> str:
        if self.mode == "budget":
            fraction = "USD" if self.budget_fraction is None else f"{self.budget_fraction:g}"
            return f"{self.dataset} budget {self.budget:.6g} ({fraction})"
        suffix = {"one_pass": " one-pass", "priors": " held-out task types"}.get(self.mode, "")
        return f"{self.dataset} λ={self.lam:g}{suffix}"


def dataset_sources(
    data: Sequence[Path], data_dirs: Sequence[Path], synthetic: Sequence[str]
) -> dict[str, str]:
    """Dataset name -> source ("path" of a CSV or "synthetic:NAME"), in a stable order."""
    out: dict[str, str] = {}
    for folder in data_dirs:
        if not folder.is_dir():
            raise ValueError(f"data folder {folder} does not exist")
        for csv_path in sorted(folder.glob("*/outcomes.csv")):
            out[csv_path.parent.name] = str(csv_path)
    for csv_path in data:
        out[csv_path.stem if csv_path.stem != "outcomes" else csv_path.parent.name] = str(csv_path)
    for name in synthetic:
        if name.startswith(family.PREFIX):
            family.parse_member(name)
        elif name not in SPECS:
            known = ", ".join([*SPECS, f"{family.PREFIX}<seed>"])
            raise ValueError(f"unknown synthetic dataset {name!r}; known: {known}")
        out[name] = f"synthetic:{name}"
    if not out:
        raise ValueError("no dataset: give --data, --data-dir or --synthetic")
    return out


@lru_cache(maxsize=8)
def load_source(source: str) -> OutcomeTable:
    """The table behind a source string (cached per process: workers load each dataset once)."""
    if source.startswith("synthetic:"):
        name = source.split(":", 1)[1]
        if name.startswith(family.PREFIX):
            return family.draw(family.parse_member(name))[1]
        return generate(SPECS[name])
    return load_outcomes(source)


def budget_levels(
    table: OutcomeTable, fractions: Iterable[float] = BUDGET_FRACTIONS
) -> list[tuple[float, float]]:
    """Budgets between the cheapest model's mean cost and the best-quality model's, as (fraction, USD)."""
    weights = np.array(list(table.mix().values()))
    cost = weights @ table.mean_cost()
    quality = weights @ table.mean_quality()
    low, high = float(cost.min()), float(cost[int(quality.argmax())])
    if high <= low:
        high = float(cost.max())
    return [(f, low + f * (high - low)) for f in fractions]


def budget_oracle(
    table: OutcomeTable, budget: float, mix: Mapping[str, float] | None = None
) -> dict[str, float]:
    """The best per-task mix of models with mean cost <= ``budget``: max sum_t w_t sum_j p_tj q_tj subject to
    sum_t w_t sum_j p_tj c_tj <= B and each task's p a distribution (a linear program over the table's means)."""
    shares = table.mix() if mix is None else dict(mix)
    w = np.array([shares[t] for t in table.task_types])
    q, c = table.mean_quality(), table.mean_cost()
    best = best_mix(w, list(q), list(c), budget)
    if best is None:  # the budget is below every mix: the cheapest model per task type
        p = np.zeros_like(q)
        p[np.arange(len(w)), c.argmin(axis=1)] = 1.0
    else:
        p = np.array(best)
    return {
        "mean_quality": float(w @ (p * q).sum(axis=1)),
        "mean_cost_usd": float(w @ (p * c).sum(axis=1)),
        "feasible": best is not None,
    }


def _setup(
    table: OutcomeTable, cell: Cell, variant: Variant, fitted: FittedPriors | None = None
) -> RouterSetup:
    options = dict(variant.setup)
    if options.pop("priors", None) == "fitted":
        options["priors"] = fitted
    setup = default_setup(table, cell.lam, cell.budget, **options)
    if variant.task_policy:
        policies = {t: dataclasses.replace(p, **dict(variant.task_policy)) for t, p in setup.policies.items()}
        setup = dataclasses.replace(setup, policies=policies)
    return setup


def _curve(result: ReplayResult, expected_utility: FloatArray) -> list[float]:
    """Cumulative expected regret against the per-task oracle at CURVE_POINTS evenly spaced requests."""
    best = result.task_utility.max(axis=1)[result.stream.task]
    regret = np.cumsum(best - expected_utility)
    at = np.linspace(0, len(regret) - 1, CURVE_POINTS).astype(int)
    return [float(x) for x in regret[at]]


PRIORS_VARIANTS = (
    Variant("thompson", "thompson"),
    Variant("thompson_priors", "thompson", setup={"priors": "fitted"}),
    Variant("thompson_naive", "thompson_naive"),
)
PRIORS_NAMES = frozenset(v.name for v in PRIORS_VARIANTS)


def split_tasks(table: OutcomeTable, seed: int) -> tuple[OutcomeTable, OutcomeTable]:
    """The table's task types in two halves (seeded): priors are fitted on the first, evaluated on the second."""
    order = np.random.default_rng([seed, 5]).permutation(len(table.task_types))
    half = len(order) // 2
    names = table.task_types
    fit = {names[i]: table.tasks[names[i]] for i in sorted(order[:half])}
    held = {names[i]: table.tasks[names[i]] for i in sorted(order[half:])}
    return (
        OutcomeTable(table.models, fit, table.source + " (fit half)"),
        OutcomeTable(table.models, held, table.source + " (held-out half)"),
    )


def run_seed(
    source: str, cell: Cell, seed: int, variants: Sequence[Variant], requests: int, delay: int
) -> dict[str, dict[str, Any]]:
    """Every variant on one seed of one cell: the figures the suite aggregates, per variant.

    A "priors" cell fits priors on half of the task types and replays the other half with and without them,
    and with every other variant asked for (without the fitted priors).
    """
    table = load_source(source)
    out: dict[str, dict[str, Any]] = {}
    oracle_b = budget_oracle(table, cell.budget) if cell.budget is not None else None
    fitted = None
    if cell.mode == "priors":
        fit_half, table = split_tasks(table, seed)
        fitted = fit_priors(fit_half)
        variants = [*PRIORS_VARIANTS, *(v for v in variants if v.name not in PRIORS_NAMES)]
    for variant in variants:
        setup = _setup(table, cell, variant, fitted)
        result = replay(
            table,
            lam=cell.lam,
            budget=cell.budget,
            requests=requests,
            seed=seed,
            policies=[variant.policy],
            delay=delay,
            setup=setup,
            one_pass=cell.mode == "one_pass",
        )
        run = result.runs[0]
        summary = result.summary(run)
        figures: dict[str, Any] = {
            "captured": summary["captured"],
            "captured_expected": summary["captured_expected"],
            "regret": summary["regret"],
            "mean_quality": summary["mean_quality"],
            "mean_cost_usd": summary["mean_cost_usd"],
            "curve": _curve(result, run.expected_utility),
        }
        if oracle_b is not None and cell.budget is not None:
            figures["quality_share"] = summary["mean_quality"] / max(oracle_b["mean_quality"], 1e-12)
            figures["cost_over_budget"] = summary["mean_cost_usd"] / cell.budget
        out[variant.name] = figures
    return out


def _stats(values: list[float], *, lower_is_better: bool = False) -> dict[str, float]:
    """Mean, worst seed (the lowest, or the highest where lower is better, as for regret) and sd."""
    arr = np.array(values, dtype=np.float64)
    return {
        "mean": float(arr.mean()),
        "worst": float(arr.max() if lower_is_better else arr.min()),
        "sd": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
    }


@dataclass
class SuiteResult:
    cells: list[dict[str, Any]]
    overall: dict[str, dict[str, float]]
    settings: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"settings": self.settings, "cells": self.cells, "overall": self.overall}


def _aggregate(cell: Cell, seeds: list[dict[str, dict[str, Any]]], table: OutcomeTable) -> dict[str, Any]:
    names = list(seeds[0])
    entry: dict[str, Any] = {
        "label": cell.label,
        "dataset": cell.dataset,
        "mode": cell.mode,
        "lam": cell.lam,
        "budget": cell.budget,
        "budget_fraction": cell.budget_fraction,
        "policies": {},
    }
    if cell.budget is not None:
        entry["budget_oracle"] = budget_oracle(table, cell.budget)
    for name in names:
        rows = [s[name] for s in seeds]
        figures: dict[str, Any] = {"regret": _stats([r["regret"] for r in rows], lower_is_better=True)}
        for key in ("captured", "captured_expected", "quality_share", "cost_over_budget"):
            values = [r[key] for r in rows if r.get(key) is not None]
            if values:  # cost over B: the worst seed overspends the most
                figures[key] = _stats(values, lower_is_better=key == "cost_over_budget")
        figures["curve"] = np.mean([r["curve"] for r in rows], axis=0).round(3).tolist()
        entry["policies"][name] = figures
    if "thompson_naive" in names:
        naive = np.array([s["thompson_naive"]["regret"] for s in seeds])
        for name in names:
            diff = np.array([s[name]["regret"] for s in seeds]) - naive  # > 0: more regret than naive
            se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
            entry["policies"][name]["vs_naive"] = {
                "regret_diff": float(diff.mean()),
                "se": se,
                "worse": bool(diff.mean() > 2.0 * se and diff.mean() > 0),
            }
    return entry


def _overall(cells: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    names = list(dict.fromkeys(n for c in cells if c["mode"] != "priors" for n in c["policies"]))
    for name in names:
        mine = [(c, c["policies"][name]) for c in cells if name in c["policies"] and c["mode"] != "priors"]
        util = [f["captured"] for c, f in mine if c["mode"] == "utility" and "captured" in f]
        one = [f["captured"] for c, f in mine if c["mode"] == "one_pass" and "captured" in f]
        bud = [f for c, f in mine if c["mode"] == "budget"]
        row: dict[str, float] = {}
        if util:
            row["captured_mean"] = float(np.mean([u["mean"] for u in util]))
            row["captured_worst_cell_mean"] = float(min(u["mean"] for u in util))
            row["captured_worst_seed"] = float(min(u["worst"] for u in util))
        if one:
            row["one_pass_mean"] = float(np.mean([u["mean"] for u in one]))
            row["one_pass_worst_cell_mean"] = float(min(u["mean"] for u in one))
        if bud:
            row["budget_quality_share_mean"] = float(np.mean([b["quality_share"]["mean"] for b in bud]))
            row["budget_quality_share_worst"] = float(min(b["quality_share"]["worst"] for b in bud))
            ratios = [b["cost_over_budget"]["mean"] for b in bud]
            row["budget_cost_ratio_worst_dev"] = float(max(abs(r - 1.0) for r in ratios))
        row["cells_worse_than_naive"] = float(sum(1 for _, f in mine if f.get("vs_naive", {}).get("worse")))
        out[name] = row
    gains = [
        c["policies"]["thompson_priors"]["regret"]["mean"] - c["policies"]["thompson"]["regret"]["mean"]
        for c in cells
        if c["mode"] == "priors"
    ]
    if gains and "thompson" in out:
        out.setdefault("thompson_priors", {})["regret_change_with_priors_mean"] = float(np.mean(gains))
    return out


def evaluate(
    sources: Mapping[str, str],
    *,
    lams: Sequence[float] = (5.0, 20.0, 50.0),
    seeds: int = 10,
    requests: int = 20000,
    delay: int = 50,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    budget_fractions: Sequence[float] = BUDGET_FRACTIONS,
    budgets_usd: Sequence[float] = (),
    one_pass: bool = True,
    priors: bool = True,
    jobs: int | None = None,
    first_seed: int = 0,
) -> SuiteResult:
    """Run the suite over seeds ``first_seed`` .. ``first_seed + seeds - 1``; ``jobs`` worker processes (default:
    the CPU count). A default chosen on seeds 0..n-1 is checked on seeds it was not chosen on with ``first_seed=n``.

    Budget cells are at ``budget_fractions`` of each dataset's cost range and at ``budgets_usd`` (the same
    budgets in USD per request for every dataset). Raises ValueError for a λ or budget that is not a finite
    number (NaN passes click's ranges) or a USD budget that is not positive."""
    for what, values in (
        ("lam", lams),
        ("budget fraction", budget_fractions),
        ("budget in USD", budgets_usd),
    ):
        if not all(np.isfinite(values)):
            raise ValueError(f"every {what} must be a finite number, got {list(values)}")
    if any(b <= 0.0 for b in budgets_usd):
        raise ValueError(f"every budget in USD must be above 0, got {list(budgets_usd)}")
    if first_seed < 0:
        raise ValueError(f"first_seed must be 0 or more, got {first_seed}")
    chosen = [VARIANTS[v] if v in VARIANTS else Variant(v, v) for v in variants]
    cells: list[tuple[Cell, str]] = []
    for name, source in sources.items():
        table = load_source(source)
        cells += [(Cell(name, "utility", lam), source) for lam in lams]
        cells += [
            (Cell(name, "budget", 0.0, budget, fraction), source)
            for fraction, budget in budget_levels(table, budget_fractions)
        ]
        cells += [(Cell(name, "budget", 0.0, budget, None), source) for budget in budgets_usd]
        if one_pass:
            cells.append((Cell(name, "one_pass", 20.0), source))
        if priors and len(table.task_types) >= 4:
            cells.append((Cell(name, "priors", 20.0), source))
    seed_range = range(first_seed, first_seed + seeds)
    tasks = [(source, cell, seed) for cell, source in cells for seed in seed_range]
    workers = jobs or os.cpu_count() or 1
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            futures = [pool.submit(run_seed, s, c, seed, chosen, requests, delay) for s, c, seed in tasks]
            results = [f.result() for f in futures]
    else:
        results = [run_seed(s, c, seed, chosen, requests, delay) for s, c, seed in tasks]
    entries = []
    for i, (cell, source) in enumerate(cells):
        entries.append(_aggregate(cell, results[i * seeds : (i + 1) * seeds], load_source(source)))
    settings = {
        "datasets": dict(sources),
        "lams": list(lams),
        "seeds": seeds,
        "first_seed": first_seed,
        "requests": requests,
        "delay": delay,
        "variants": [dataclasses.asdict(v) for v in chosen],
        "budget_fractions": list(budget_fractions),
        "budgets_usd": list(budgets_usd),
        "one_pass": one_pass,
        "priors": priors,
    }
    return SuiteResult(cells=entries, overall=_overall(entries), settings=settings)


def plot_suite(result: SuiteResult, out_dir: Path) -> list[Path]:
    """One PNG per cell: mean cumulative expected regret over requests, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for cell in result.cells:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for name, figures in cell["policies"].items():
            ax.plot(np.linspace(0, 1, len(figures["curve"])), figures["curve"], label=name)
        ax.set_xlabel("share of the replay")
        ax.set_ylabel("cumulative expected regret")
        ax.set_title(cell["label"], fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        slug = "".join(ch if ch.isalnum() else "_" for ch in cell["label"]).strip("_")
        path = out_dir / f"regret_{slug}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths
