"""The worker's web surface: Prometheus metrics, JSON endpoints and the live dashboard."""

from __future__ import annotations

from typing import Any


def install_web(router: Any) -> None:
    """Register the web views on ``router.app`` (faust's aiohttp server, bound to settings.web_host)."""
    app = router.app

    @app.page("/healthz")  # type: ignore[untyped-decorator]  # faust.App.page is untyped
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"ok": True, "worker_id": router.worker_id, "decided": router.decider.decided})
