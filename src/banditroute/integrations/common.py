"""What both integrations share: the client adapter, error classification and the score hook."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import openai

from banditroute.client import RouterClient, SyncRouterClient
from banditroute.events import FeedbackError, RoutingDecision

log = logging.getLogger("banditroute.integrations")

Score = Callable[[Any], float | None]
"""``score(response) -> float | None``: quality in [0, 1], or None to send the quality later yourself."""

TaskTypeOf = Callable[[Any], str]
"""``task_type_of(messages) -> str``: the task type of a request from its messages."""

MAX_OPEN_CALLS = 100_000
"""Calls awaiting their outcome that one integration keeps at most (the oldest are settled past it)."""


def error_kind(exc: BaseException | None) -> FeedbackError:
    """The feedback ``error`` for an exception raised by an OpenAI-compatible call (LiteLLM's included)."""
    if exc is None:
        return FeedbackError.OTHER
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return FeedbackError.TIMEOUT
    if isinstance(exc, openai.RateLimitError):
        return FeedbackError.RATE_LIMITED
    if "ContentPolicy" in type(exc).__name__ or "content_filter" in str(exc)[:500]:
        return FeedbackError.CONTENT_FILTER
    if isinstance(exc, openai.APIConnectionError | openai.InternalServerError):
        return FeedbackError.PROVIDER_ERROR
    if isinstance(exc, openai.APIStatusError) and exc.status_code >= 500:
        return FeedbackError.PROVIDER_ERROR
    if isinstance(exc, openai.APIResponseValidationError):
        return FeedbackError.INVALID_OUTPUT
    return FeedbackError.OTHER


def run_score(score: Score | None, response: Any) -> float | None:
    """The user's quality for ``response``; a hook that raises or answers outside [0, 1] gives None (logged)."""
    if score is None:
        return None
    try:
        value = score(response)
    except Exception:
        log.exception("the score hook raised; no quality for this call")
        return None
    if value is None:
        return None
    quality = float(value)
    if not 0.0 <= quality <= 1.0:
        log.warning("the score hook returned %r, outside [0, 1]; no quality for this call", value)
        return None
    return quality


def usage_tokens(response: Any) -> tuple[int | None, int | None]:
    """``(prompt_tokens, completion_tokens)`` of an OpenAI-style response, or ``(None, None)``."""
    usage = getattr(response, "usage", None)
    if isinstance(usage, Mapping):
        tokens_in, tokens_out = usage.get("prompt_tokens"), usage.get("completion_tokens")
    else:
        tokens_in, tokens_out = (
            getattr(usage, "prompt_tokens", None),
            getattr(usage, "completion_tokens", None),
        )
    if isinstance(tokens_in, int) and isinstance(tokens_out, int):
        return tokens_in, tokens_out
    return None, None


class Client:
    """One face over ``RouterClient`` (async) and ``SyncRouterClient`` (blocking, run in a worker thread)."""

    def __init__(self, client: RouterClient | SyncRouterClient) -> None:
        if not isinstance(client, RouterClient | SyncRouterClient):
            raise TypeError(f"expected a RouterClient or SyncRouterClient, got {type(client).__name__}")
        self.client = client

    async def aroute(self, task_type: str, *, candidates: Iterable[str], **kwargs: Any) -> RoutingDecision:
        if isinstance(self.client, RouterClient):
            return await self.client.route(task_type, candidates=tuple(candidates), **kwargs)
        return await asyncio.to_thread(self.client.route, task_type, candidates=tuple(candidates), **kwargs)

    def route(self, task_type: str, *, candidates: Iterable[str], **kwargs: Any) -> RoutingDecision:
        if isinstance(self.client, RouterClient):
            raise TypeError(
                "synchronous calls need a SyncRouterClient (this integration was given a RouterClient)"
            )
        return self.client.route(task_type, candidates=tuple(candidates), **kwargs)

    async def afeedback(self, **kwargs: Any) -> bool:
        """Send feedback; False (logged, never raised) when it could not be stored."""
        try:
            if isinstance(self.client, RouterClient):
                await self.client.feedback(**kwargs)
            else:
                await asyncio.to_thread(self.client.feedback, **kwargs)
        except Exception:
            log.exception("feedback for request %s not sent", kwargs.get("request_id"))
            return False
        return True

    def feedback(self, **kwargs: Any) -> bool:
        if isinstance(self.client, RouterClient):
            raise TypeError(
                "synchronous calls need a SyncRouterClient (this integration was given a RouterClient)"
            )
        try:
            self.client.feedback(**kwargs)
        except Exception:
            log.exception("feedback for request %s not sent", kwargs.get("request_id"))
            return False
        return True
