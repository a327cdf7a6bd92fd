"""The worker's web surface: Prometheus metrics, JSON endpoints and the live dashboard.

Endpoints (served by faust's aiohttp server, bound to ``settings.web_host``, 127.0.0.1 by default):

``/``, ``/dashboard``   the dashboard page (static HTML/JS/CSS shipped in ``web/static``; no CDN)
``/metrics``            Prometheus text format (per-router registry)
``/api/state``          posteriors, credible intervals, guards and budgets per state key
``/api/stats``          counters, dead letters, join state, consumer lag
``/api/decisions``      recent decisions with reasons (``?limit=``, ``?task_type=``)
``/api/history``        bounded time series per task type (``?last=`` samples)
``/api/network``        requests -> task types -> models edges weighted by traffic
``/healthz``            liveness
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Any

from banditroute.served import Decided
from banditroute.web.history import History
from banditroute.web.lag import LagSampler
from banditroute.web.metrics import CONTENT_TYPE, RouterMetrics
from banditroute.web.snapshot import decisions_json, network_json, state_json, stats_json

log = logging.getLogger("banditroute.web")

STATIC = {
    "dashboard.js": "application/javascript",
    "dashboard.css": "text/css",
}
NO_STORE = {"Cache-Control": "no-store"}


def _static(name: str) -> bytes:
    return resources.files("banditroute.web").joinpath("static", name).read_bytes()


def _text(web: Any, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> Any:
    """A UTF-8 text response (aiohttp refuses a charset inside ``content_type``; it is set afterwards)."""
    response = web.bytes(body, content_type=content_type, headers=dict(headers or {}))
    response.charset = "utf-8"
    return response


def _int_arg(request: Any, name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(request.query.get(name, default))
    except (TypeError, ValueError):
        return default
    return max(low, min(high, value))


def install_web(router: Any) -> None:
    """Register the web views on ``router.app`` (faust's aiohttp server, bound to settings.web_host)."""
    app = router.app
    history = History()
    settings = router.settings
    lag = LagSampler(
        settings.kafka_bootstrap,
        settings.aiokafka_security(),
        {
            f"{settings.app_id}.decide": [settings.topic("requests")],
            f"{settings.app_id}.join-decisions": [settings.topic("decisions")],
            f"{settings.app_id}.join-feedback": [settings.topic("feedback")],
            f"{settings.app_id}.learn": [settings.topic("outcomes")],
            settings.app_id: [settings.topic("catalog")],
        },
    )
    metrics = RouterMetrics(router, history, lag)
    router.web_history, router.web_metrics, router.web_lag = history, metrics, lag

    original = router.decider.on_decisions

    def on_decisions(batch: list[Decided]) -> None:
        original(batch)
        try:
            metrics.observe_batch((d[0], d[3]) for d in batch)  # (task_type, decision_ms) of each Decided
        except Exception:  # metrics must never fail a decision
            log.debug("decision latency not recorded", exc_info=True)

    router.decider.on_decisions = on_decisions

    @app.timer(history.interval_s)  # type: ignore[untyped-decorator]  # faust.App.timer is untyped
    async def sample_history() -> None:
        try:
            history.sample(router)
        except Exception:
            log.warning("dashboard history sample failed", exc_info=True)

    @app.task  # type: ignore[untyped-decorator]  # faust.App.task is untyped
    async def sample_lag() -> None:
        try:
            await lag.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("consumer lag sampler stopped", exc_info=True)

    page_html = _static("index.html")
    assets = {name: _static(name) for name in STATIC}

    @app.page("/healthz")  # type: ignore[untyped-decorator]  # faust.App.page is untyped
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"ok": True, "worker_id": router.worker_id, "decided": router.decider.decided})

    @app.page("/dashboard")  # type: ignore[untyped-decorator]  # faust.App.page is untyped
    async def dashboard(web: Any, request: Any) -> Any:
        return _text(web, page_html, "text/html", NO_STORE)

    for name, content_type in STATIC.items():
        _asset_page(app, name, assets[name], content_type)

    @app.page("/metrics")  # type: ignore[untyped-decorator]  # faust.App.page is untyped
    async def prometheus(web: Any, request: Any) -> Any:
        return _text(web, metrics.render(), CONTENT_TYPE)

    @app.page("/api/state")  # type: ignore[untyped-decorator]  # faust.App.page is untyped
    async def api_state(web: Any, request: Any) -> Any:
        return web.json(state_json(router), headers=NO_STORE)

    @app.page("/api/stats")  # type: ignore[untyped-decorator]  # faust.App.page is untyped
    async def api_stats(web: Any, request: Any) -> Any:
        return web.json(stats_json(router, lag.snapshot()), headers=NO_STORE)

    @app.page("/api/decisions")  # type: ignore[untyped-decorator]  # faust.App.page is untyped
    async def api_decisions(web: Any, request: Any) -> Any:
        limit = _int_arg(request, "limit", 50, 1, 200)
        return web.json(decisions_json(router, limit, request.query.get("task_type")), headers=NO_STORE)

    @app.page("/api/history")  # type: ignore[untyped-decorator]  # faust.App.page is untyped
    async def api_history(web: Any, request: Any) -> Any:
        last = _int_arg(request, "last", history.points, 1, history.points)
        return web.json(history.to_json(last), headers=NO_STORE)

    @app.page("/api/network")  # type: ignore[untyped-decorator]  # faust.App.page is untyped
    async def api_network(web: Any, request: Any) -> Any:
        return web.json(network_json(router, history), headers=NO_STORE)

    _install_index(app, page_html)


def _asset_page(app: Any, name: str, body: bytes, content_type: str) -> None:
    @app.page(f"/static/{name}")  # type: ignore[untyped-decorator]  # faust.App.page is untyped
    async def asset(web: Any, request: Any) -> Any:
        return _text(web, body, content_type)


def _install_index(app: Any, page_html: bytes) -> None:
    """Serve the dashboard at ``/`` too (faust's own index blueprint also claims ``/``: ours is added first)."""

    @app.page("/")  # type: ignore[untyped-decorator]  # faust.App.page is untyped
    async def index(web: Any, request: Any) -> Any:
        return _text(web, page_html, "text/html", NO_STORE)
