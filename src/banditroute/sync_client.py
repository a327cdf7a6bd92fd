"""``SyncRouterClient``: the async client run in a daemon thread, for synchronous code."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from banditroute.events import Feedback, RoutingDecision
from banditroute.router_client import RouterClient
from banditroute.settings import Settings

T = TypeVar("T")


class SyncRouterClient:
    """``RouterClient`` for synchronous code: an event loop in a daemon thread runs the async client.

    ``with SyncRouterClient(default_route="small-fast") as client: client.route("chat")``. Thread-safe: calls
    from many threads share the one client. In local mode the common ``route()`` call (a task type, maybe a
    tenant, request id and plain metadata) is decided in the calling thread, without a hop to the loop's
    thread; anything else, and every fallback, goes through the loop.
    """

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: RouterClient | None = None

    @property
    def client(self) -> RouterClient:
        if self._client is None:
            raise RuntimeError("SyncRouterClient is not started")
        return self._client

    def start(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="banditroute-client", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop

        async def make() -> RouterClient:
            client = RouterClient(self._settings, **self._kwargs)
            await client.start()
            return client

        self._client = self._call(make())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("SyncRouterClient is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def route(self, task_type: str, **kwargs: Any) -> RoutingDecision:
        """Same arguments as :meth:`RouterClient.route`."""
        client = self.client
        local = client.local
        if local is not None:
            plain = client.local_call(task_type, kwargs)
            if plain is not None:
                decided = local.decide_now(plain)
                if isinstance(decided, RoutingDecision):
                    return decided
                return self._call(client.route_request(plain.full(), timeout_s=kwargs.get("timeout_s")))
        return self._call(client.route(task_type, **kwargs))

    def flush(self) -> None:
        """Wait until everything sent so far (feedback, requests, local-mode decisions) is on the broker."""
        self._call(self.client.flush())

    def feedback(self, **kwargs: Any) -> Feedback:
        """Same arguments as :meth:`RouterClient.feedback`."""
        return self._call(self.client.feedback(**kwargs))

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        try:
            if self._client is not None:
                self._call(self._client.close())
        finally:
            self._client = None
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(timeout=10)
            loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> SyncRouterClient:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


__all__ = ["SyncRouterClient"]
