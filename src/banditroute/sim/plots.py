"""Plots of a replay (matplotlib with the Agg backend, imported only when plotting)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from banditroute.sim.replay import ReplayResult


def _window(n: int) -> int:
    return max(50, n // 100)


def plot_replay(result: ReplayResult, out_dir: str | Path) -> list[Path]:
    """Write traffic share over time per task type (one file per policy), cumulative cost against the best
    single model, and quality against cost; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    tasks = result.stream.task_types
    for run in result.runs:
        fig, axes = plt.subplots(len(tasks), 1, figsize=(8, 1.8 * len(tasks)), sharex=True, squeeze=False)
        for ax, (i, t) in zip(axes[:, 0], enumerate(tasks), strict=True):
            steps = np.flatnonzero(result.stream.task == i)
            picks = run.chosen[steps]
            w = min(_window(len(picks)), max(1, len(picks)))
            kernel = np.ones(w) / w
            for j, m in enumerate(result.models):
                if len(picks):
                    share = np.convolve((picks == j).astype(float), kernel, mode="valid")
                    ax.plot(steps[w - 1 :], share, label=m)
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel(t, fontsize=7)
        axes[0, 0].legend(fontsize=7, loc="upper right")
        axes[0, 0].set_title(f"traffic share per model over time: {run.name}")
        axes[-1, 0].set_xlabel("request")
        fig.tight_layout()
        path = out / f"traffic_share_{run.name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)

    single = result.best_single()
    j = result.models.index(single["name"])
    single_cost = np.zeros(len(result.stream.task))
    for i in range(len(tasks)):
        rows = result.stream.task == i
        single_cost[rows] = result.task_cost[i, j]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(np.cumsum(single_cost), "k--", label=f"best single ({single['name']}, expected)")
    for run in result.runs:
        ax.plot(np.cumsum(run.cost), label=run.name)
    ax.set_xlabel("request")
    ax.set_ylabel("cumulative cost (USD)")
    ax.legend(fontsize=7)
    ax.set_title(f"cumulative cost, λ = {result.lam:g}")
    fig.tight_layout()
    path = out / "cumulative_cost.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    paths.append(path)

    fig, ax = plt.subplots(figsize=(6.5, 5))
    for run in result.runs:
        ax.scatter(run.cost.mean(), run.quality.mean(), label=run.name)
    oracle = result.oracle()
    ax.scatter(oracle["mean_cost_usd"], oracle["mean_quality"], marker="*", s=150, c="k", label="oracle")
    ax.scatter(single["mean_cost_usd"], single["mean_quality"], marker="x", s=80, c="k", label="best single")
    ax.set_xlabel("mean cost per request (USD)")
    ax.set_ylabel("mean quality")
    ax.legend(fontsize=7)
    ax.set_title("quality vs cost")
    fig.tight_layout()
    path = out / "quality_vs_cost.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    paths.append(path)
    return paths
