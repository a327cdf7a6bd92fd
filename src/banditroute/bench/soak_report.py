"""What a soak run found: its samples, the RSS trend fitted over its tail, the result with its checks, the plot.

:class:`~banditroute.bench.soak.Soak` fills a :class:`SoakResult`; :func:`plot_soak` draws RSS (with the fit),
consumer lag and decision rate over time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TAIL_MINUTES = 15.0
"""The RSS trend is fitted over the last this many minutes (the last half of a shorter soak)."""


@dataclass
class Sample:
    t_s: float
    rss_kb: int
    join_in_flight: int
    lag: int
    decided: int
    learned: int
    rate_per_s: float = 0.0


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``(slope, intercept)`` of ``ys`` over ``xs`` (slope 0 for fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0, (ys[0] if ys else 0.0)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0, my
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def tail_trend(samples: list[Sample], minutes: float) -> dict[str, float]:
    """RSS trend over the last ``TAIL_MINUTES`` (or the last half of a shorter run): the fitted slope in KiB per
    minute and the growth it implies over that window, relative to the fitted RSS at the window's start."""
    end = samples[-1].t_s if samples else 0.0
    window_min = min(TAIL_MINUTES, minutes / 2.0)
    start = end - window_min * 60.0
    tail = [s for s in samples if s.t_s >= start]
    slope_per_s, intercept = linear_fit([s.t_s for s in tail], [float(s.rss_kb) for s in tail])
    at_start = intercept + slope_per_s * start
    return {
        "window_minutes": window_min,
        "points": float(len(tail)),
        "slope_kb_per_min": slope_per_s * 60.0,
        "rss_at_window_start_kb": at_start,
        "growth": slope_per_s * window_min * 60.0 / at_start if at_start > 0 else 0.0,
    }


@dataclass
class SoakResult:
    max_rate_per_s: float
    target_rate_per_s: float
    minutes: float
    sent: int = 0
    decided: int = 0
    feedback_sent: int = 0
    learned: int = 0
    late_feedback: int = 0
    """Feedback that arrived after its decision's reward wait window (dead-lettered, not learnt, by design)."""
    dead_letters: dict[str, int] = field(default_factory=dict)
    """Dead letters of the soak phase, by reason (the worker's counters, end minus start)."""
    rss_baseline_kb: int = 0
    rss_final_kb: int = 0
    rss_max_kb: int = 0
    rss_growth: float = 0.0
    rss_tail: dict[str, float] = field(default_factory=dict)
    """The fitted RSS trend over the last minutes (see :func:`tail_trend`)."""
    rss_by_minute_kb: list[int] = field(default_factory=list)
    join_max: int = 0
    join_bound: int = 0
    lag_max: int = 0
    drain_s: float | None = None
    worker_alive: bool = True
    checks: dict[str, bool] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(self.checks.values())

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("samples")
        out["ok"] = self.ok
        out["samples_n"] = len(self.samples)
        return out


def plot_soak(result: SoakResult, path: Path) -> Path:
    """RSS (with the fitted trend of the tail window), consumer lag and decision rate over time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.t_s / 60.0 for s in result.samples]
    fig, (rss, lag, rate) = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    rss.plot(minutes, [s.rss_kb / 1024.0 for s in result.samples], lw=1, label="RSS")
    tail = result.rss_tail
    if tail and result.samples:
        end = result.samples[-1].t_s
        start = end - tail["window_minutes"] * 60.0
        y0 = tail["rss_at_window_start_kb"]
        y1 = y0 + tail["slope_kb_per_min"] * tail["window_minutes"]
        rss.plot(
            [start / 60.0, end / 60.0],
            [y0 / 1024.0, y1 / 1024.0],
            "r--",
            lw=1.5,
            label=f"fit of the last {tail['window_minutes']:g} min: {tail['growth'] * 100:+.2f} %",
        )
    rss.set_ylabel("worker RSS (MiB)")
    rss.legend(loc="lower right", fontsize=8)
    rss.set_title(
        f"soak at {result.target_rate_per_s:.0f} requests/s ({result.minutes:g} min), "
        f"{result.decided:,} decided, {result.learned:,} learnt",
        fontsize=10,
    )
    lag.plot(minutes, [s.lag for s in result.samples], lw=1, color="tab:orange")
    lag.set_ylabel("consumer lag (records)")
    rate.plot(minutes, [s.rate_per_s for s in result.samples], lw=1, color="tab:green")
    rate.set_ylabel("decisions/s")
    rate.set_xlabel("minutes")
    for ax in (rss, lag, rate):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["TAIL_MINUTES", "Sample", "SoakResult", "linear_fit", "plot_soak", "tail_trend"]
