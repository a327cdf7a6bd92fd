"""The soak's report without a broker: the RSS trend fit and the plot (no timings asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from banditroute.bench.soak import Sample, SoakResult, linear_fit, plot_soak, tail_trend


def _samples(rss_of_minute: object, minutes: float) -> list[Sample]:
    out = []
    for i in range(int(minutes * 12) + 1):
        t = i * 5.0
        out.append(Sample(t, int(rss_of_minute(t / 60.0)), 100, 3, i * 500, i * 450, 100.0))  # type: ignore[operator]
    return out


def test_linear_fit_recovers_a_line() -> None:
    slope, intercept = linear_fit([0.0, 1.0, 2.0, 3.0], [5.0, 7.0, 9.0, 11.0])
    assert slope == pytest.approx(2.0)
    assert intercept == pytest.approx(5.0)
    assert linear_fit([1.0], [4.0]) == (0.0, 4.0)


def test_tail_trend_fits_only_the_last_fifteen_minutes() -> None:
    # 30 minutes: fast growth for 15 minutes (warm-up), then +100 KiB a minute from 150 MB
    def rss(minute: float) -> float:
        return 100_000 + minute * 3_333 if minute < 15 else 150_000 + (minute - 15) * 100

    trend = tail_trend(_samples(rss, 30), 30)
    assert trend["window_minutes"] == 15
    assert trend["slope_kb_per_min"] == pytest.approx(100, rel=0.02)
    assert trend["growth"] == pytest.approx(1_500 / 150_000, rel=0.03)


def test_tail_trend_of_a_short_run_uses_its_last_half() -> None:
    trend = tail_trend(_samples(lambda _m: 120_000, 6), 6)
    assert trend["window_minutes"] == 3
    assert trend["growth"] == pytest.approx(0.0, abs=1e-12)


def test_plot_is_written(tmp_path: Path) -> None:
    result = SoakResult(1000.0, 500.0, 4.0, decided=100, learned=90)
    result.samples = _samples(lambda m: 100_000 + 10 * m, 4)
    result.rss_tail = tail_trend(result.samples, 4)
    path = plot_soak(result, tmp_path / "soak.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
