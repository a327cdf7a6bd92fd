"""The dashboard in headless Chromium (Debian's ``chromium``, driven by Playwright) against a live worker.

The worker is fed by the closed loop on the real broker while the page polls; the test checks that the
charts render with data and that they move. Screenshots go to ``artifacts/`` (gitignored); the README's
``docs/img/dashboard.png`` is written when missing or when ``BANDITROUTE_UPDATE_SCREENSHOT=1``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.browser.live import drive, start_web_worker, wait_http
from tests.kafka.router_world import Loop

pytestmark = [pytest.mark.browser, pytest.mark.kafka]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
README_SHOT = ROOT / "docs" / "img" / "dashboard.png"
README_WARMUP_S = 35.0


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make test does it when root)")


async def snapshot(page: Any) -> dict[str, Any]:
    """The numbers the test watches, read from the DOM."""
    return dict(
        await page.evaluate(
            """() => {
              const num = (s) => Number(document.querySelector(s)?.dataset?.value ?? NaN);
              const q = (s) => Array.from(document.querySelectorAll(s));
              return {
                polls: Number(document.getElementById('status').dataset.polls),
                decided: num('#decided-count'),
                tasks: q('#tasks > .task').map((e) => e.dataset.task),
                areas: q('.share-chart path.area').length,
                areaShares: q('.share-chart path.area').map((p) => Number(p.dataset.share)),
                sharePoints: q('.share-chart').map((s) => Number(s.dataset.points)),
                costPoints: q('.cost-chart').map((s) => Number(s.dataset.points)),
                routedCostLines: q('.cost-chart path.routed-cost').length,
                means: q('.posterior-chart circle.posterior-mean').map((c) => Number(c.dataset.mean)),
                intervals: q('.posterior-chart line.interval').length,
                edges: q('#network path.edge').map((p) => Number(p.dataset.weight)),
                decisions: q('#decisions tbody tr').length,
                firstDecision: document.querySelector('#decisions tbody tr')?.dataset?.request ?? null,
                savings: q('.savings').map((e) => e.dataset.savings),
                circuitBadges: q('.badge.circuit').length,
                canaryBadges: q('.badge.canary').map((e) => e.textContent),
              };
            }"""
        )
    )


@pytest.mark.timeout(150)
async def test_dashboard_renders_live_data(kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    worker, port = start_web_worker(tmp_path, kafka_bootstrap, unique_prefix)
    url = f"http://127.0.0.1:{port}/"
    traffic: asyncio.Task[int] | None = None
    try:
        await wait_http(f"{url}healthz", worker)
        async with Loop(kafka_bootstrap, unique_prefix) as loop:
            await drive(loop, 300, np.random.default_rng(1))  # some history before the page opens
            traffic = asyncio.create_task(drive(loop, 3000, np.random.default_rng(2), pause_s=0.3, batch=30))
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page(viewport={"width": 1440, "height": 1000})
                    errors: list[str] = []
                    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
                    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                    requests: list[str] = []
                    page.on("request", lambda r: requests.append(r.url))
                    await page.goto(url, wait_until="load")
                    await page.wait_for_function(
                        "() => Number(document.getElementById('status').dataset.polls) >= 2"
                        " && document.querySelectorAll('.share-chart path.area').length > 0",
                        timeout=20_000,
                    )
                    first = await snapshot(page)
                    await page.screenshot(path=str(ARTIFACTS / "dashboard-first.png"), full_page=True)

                    update_readme = (
                        not README_SHOT.exists() or os.environ.get("BANDITROUTE_UPDATE_SCREENSHOT") == "1"
                    )
                    if update_readme:  # a longer history for the README picture
                        await asyncio.sleep(README_WARMUP_S)
                    await page.wait_for_function(
                        f"() => Number(document.getElementById('status').dataset.polls) >= {first['polls'] + 3}",
                        timeout=20_000,
                    )
                    second = await snapshot(page)
                    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
                    if update_readme:
                        README_SHOT.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(ARTIFACTS / "dashboard.png", README_SHOT)
                finally:
                    await browser.close()
            if traffic is not None:
                traffic.cancel()
                await asyncio.gather(traffic, return_exceptions=True)
    finally:
        if traffic is not None and not traffic.done():
            traffic.cancel()
        code = worker.terminate()

    # Rendered with data: every task type has a panel with stacked areas, lines, posteriors and a network.
    for snap in (first, second):
        assert {"chat", "code", "summarize"} <= set(snap["tasks"]), snap["tasks"]
        assert snap["areas"] >= 3 * 4 and any(s > 0 for s in snap["areaShares"])
        assert snap["routedCostLines"] == 3 and min(snap["costPoints"]) > 0
        assert len(snap["means"]) == 12 and all(0 < m < 1 for m in snap["means"])
        assert snap["intervals"] == 12 and snap["circuitBadges"] == 12
        assert any("canary" in text for text in snap["canaryBadges"])
        assert snap["edges"] and all(w > 0 for w in snap["edges"])
        assert snap["decisions"] > 0 and snap["decided"] > 0
        assert any(s for s in snap["savings"])
    # ... and it moves: the worker decided more and the page redrew from fresh data.
    assert second["decided"] > first["decided"], (first["decided"], second["decided"])
    assert second["firstDecision"] != first["firstDecision"]
    assert second["sharePoints"] != first["sharePoints"] or second["areaShares"] != first["areaShares"]
    assert not errors, errors
    assert all(r.startswith(url) for r in requests), [r for r in requests if not r.startswith(url)]  # no CDN
    assert code == 0, f"worker exited with {code}; see {tmp_path / 'worker.log'}"
