"""A thin wrapper around the OpenAI SDK: banditroute picks the model, the wrapper calls it, falls back and sends
the feedback.

One OpenAI-compatible endpoint per banditroute model: an ``openai.AsyncOpenAI`` / ``openai.OpenAI`` client, a
base URL, or an :class:`Endpoint` naming the model the endpoint expects.

    async with RouterClient() as client:
        routed = RoutedAsyncOpenAI(client, {"small-fast": "http://127.0.0.1:8001/v1", "gpt-large": AsyncOpenAI()})
        response = await routed.chat.completions.create(messages=[...], task_type="chat")
        request_id_of(response)

Per call: one ``route()`` over the configured models; the decided model first, then its fallbacks (at most
``max_attempts``), moving on after a timeout, a connection error, a rate limit or any other API error except a
bad request (400/422, the request's own fault, raised at once). Exactly one feedback per call: on success for
the model that served (latency, tokens priced by the catalog) when ``score(response)`` gives a quality, else
nothing (send it later with :meth:`RoutedAsyncOpenAI.feedback`); on failure an ``error`` for the last model
tried, and the last exception is raised. Streaming is not supported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import openai

from banditroute.client import RouterClient, SyncRouterClient
from banditroute.events import FeedbackError, RoutingDecision
from banditroute.integrations.common import Client, Score, TaskTypeOf, error_kind, run_score, usage_tokens

STAMP = "_banditroute"
"""Private attribute of a response with ``{request_id, decision_id, task_type, model, latency_ms}``."""

C = TypeVar("C", openai.AsyncOpenAI, openai.OpenAI)


@dataclass(frozen=True)
class Endpoint(Generic[C]):
    """An OpenAI-compatible client and the model name it expects (default: the banditroute model name)."""

    client: C
    model: str | None = None


def request_id_of(response: Any) -> str | None:
    """The banditroute request id of a response the wrapper returned (None when it did not route it)."""
    stamp = getattr(response, STAMP, None)
    return stamp.get("request_id") if isinstance(stamp, Mapping) else None


def _no_fallback(exc: BaseException) -> bool:
    """A request the endpoint rejected as malformed fails the same way everywhere: no fallback."""
    return isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError)


@dataclass
class Attempts:
    """The state of one routed call: the order to try, the last failure and the feedback to send."""

    decision: RoutingDecision
    order: tuple[str, ...]
    started: float = field(default_factory=time.monotonic)
    failure: tuple[str, FeedbackError, float] | None = None

    def failed(self, model: str, exc: BaseException, started: float) -> None:
        self.failure = (model, error_kind(exc), (time.monotonic() - started) * 1000.0)

    def error_feedback(self) -> dict[str, Any] | None:
        model, error, latency = self.failure or (self.order[0], FeedbackError.OTHER, 0.0)
        return self._feedback(model=model, error=error, latency_ms=latency)

    def success_feedback(
        self, model: str, response: Any, started: float, score: Score | None
    ) -> dict[str, Any] | None:
        latency = (time.monotonic() - started) * 1000.0
        tokens_in, tokens_out = usage_tokens(response)
        stamp = {
            "request_id": self.decision.request_id,
            "decision_id": self.decision.decision_id,
            "task_type": self.decision.task_type,
            "model": model,
            "latency_ms": latency,
        }
        object.__setattr__(response, STAMP, stamp)  # not a field: model_dump() leaves it out
        quality = run_score(score, response)
        if quality is None or tokens_in is None:
            return None
        return self._feedback(
            model=model, quality=quality, latency_ms=latency, tokens_in=tokens_in, tokens_out=tokens_out
        )

    def _feedback(self, **outcome: Any) -> dict[str, Any] | None:
        if self.decision.is_default_route:  # no decision to join it to: the worker never saw this call
            return None
        return {"request_id": self.decision.request_id, "decision_id": self.decision.decision_id, **outcome}


class _Routed(Generic[C]):
    def __init__(
        self,
        client: RouterClient | SyncRouterClient,
        models: Mapping[str, C | Endpoint[C] | str],
        make: Callable[[str], C],
        *,
        task_type: str | TaskTypeOf,
        score: Score | None,
        max_attempts: int,
        route_kwargs: dict[str, Any],
    ) -> None:
        if not models:
            raise ValueError(
                "give at least one model: {banditroute model name: client, base URL or Endpoint}"
            )
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.client = Client(client)
        self.endpoints: dict[str, Endpoint[C]] = {}
        for name, target in models.items():
            if isinstance(target, Endpoint):
                self.endpoints[name] = target
            elif isinstance(target, str):
                self.endpoints[name] = Endpoint(make(target))
            else:
                self.endpoints[name] = Endpoint(target)
        self.task_type = task_type
        self.score = score
        self.max_attempts = max_attempts
        self.route_kwargs = route_kwargs
        self.stats = {"routed": 0, "feedback": 0, "errors": 0, "awaiting_quality": 0, "feedback_failed": 0}

    def _route_args(self, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if kwargs.get("stream"):
            raise ValueError("stream=True is not supported by the banditroute OpenAI wrapper")
        task_type = kwargs.pop("task_type", None)
        tenant = kwargs.pop("tenant", None)
        if not task_type:
            task_type = self.task_type(kwargs.get("messages")) if callable(self.task_type) else self.task_type
        return str(task_type), {"candidates": tuple(self.endpoints), "tenant": tenant, **self.route_kwargs}

    def _attempts(self, decision: RoutingDecision) -> Attempts:
        self.stats["routed"] += 1
        order = tuple(m for m in (decision.model, *decision.fallbacks) if m in self.endpoints)
        if not order:
            raise ValueError(
                f"the decision names no configured model: {decision.model!r} ({decision.decision_id})"
            )
        return Attempts(decision, order[: self.max_attempts])

    def _success(
        self, attempts: Attempts, model: str, response: Any, started: float
    ) -> dict[str, Any] | None:
        """Stamp the response; the feedback to send, or None when the quality is to come later."""
        feedback = attempts.success_feedback(model, response, started, self.score)
        if feedback is None:
            self.stats["awaiting_quality"] += 1
        return feedback

    def _sent(self, sent: bool) -> None:
        self.stats["feedback" if sent else "feedback_failed"] += 1

    def _stop(
        self, attempts: Attempts, model: str, exc: BaseException, started: float
    ) -> dict[str, Any] | None:
        """Record a failed attempt; the error feedback when it ends the call (else None: try the next model)."""
        attempts.failed(model, exc, started)
        if not (_no_fallback(exc) or model == attempts.order[-1]):
            return None
        self.stats["errors"] += 1
        return attempts.error_feedback() or {}

    @staticmethod
    def _later(response: Any, quality: float) -> dict[str, Any]:
        stamp = getattr(response, STAMP, None)
        if not isinstance(stamp, Mapping):
            raise ValueError("this response was not routed by banditroute (no request id on it)")
        tokens_in, tokens_out = usage_tokens(response)
        keys = ("request_id", "decision_id", "model", "latency_ms")
        return {
            **{k: stamp[k] for k in keys},
            "quality": quality,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
        }


class _AsyncCompletions:
    def __init__(self, routed: RoutedAsyncOpenAI) -> None:
        self._routed = routed

    async def create(self, **kwargs: Any) -> Any:
        """``chat.completions.create`` without ``model`` (banditroute picks it); ``task_type=``, ``tenant=``."""
        return await self._routed.create(**kwargs)


class _AsyncChat:
    def __init__(self, routed: RoutedAsyncOpenAI) -> None:
        self.completions = _AsyncCompletions(routed)


class RoutedAsyncOpenAI(_Routed[openai.AsyncOpenAI]):
    """``openai.AsyncOpenAI`` routed by banditroute; see the module docstring.

    ``models``: banditroute model name -> ``AsyncOpenAI`` client, base URL or :class:`Endpoint`. Clients made
    from a base URL use ``api_key`` (default ``$OPENAI_API_KEY``, else a placeholder for keyless local servers)
    and ``max_retries=0``: the wrapper falls back to another model instead. ``task_type``: fixed, or a function
    of the messages (``task_type=`` on the call wins). ``route_kwargs``: more ``RouterClient.route`` arguments.
    """

    def __init__(
        self,
        client: RouterClient | SyncRouterClient,
        models: Mapping[str, openai.AsyncOpenAI | Endpoint[openai.AsyncOpenAI] | str],
        *,
        task_type: str | TaskTypeOf = "default",
        score: Score | None = None,
        max_attempts: int = 3,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        **route_kwargs: Any,
    ) -> None:
        def make(base_url: str) -> openai.AsyncOpenAI:
            return openai.AsyncOpenAI(
                base_url=base_url, api_key=_key(api_key), max_retries=0, timeout=timeout_s
            )

        super().__init__(
            client,
            models,
            make,
            task_type=task_type,
            score=score,
            max_attempts=max_attempts,
            route_kwargs=route_kwargs,
        )
        self.chat = _AsyncChat(self)

    async def create(self, **kwargs: Any) -> Any:
        task_type, route_args = self._route_args(kwargs)
        attempts = self._attempts(await self.client.aroute(task_type, **route_args))
        for model in attempts.order:
            endpoint = self.endpoints[model]
            started = time.monotonic()
            try:
                response = await endpoint.client.chat.completions.create(
                    model=endpoint.model or model, **kwargs
                )
            except Exception as exc:
                if (final := self._stop(attempts, model, exc, started)) is None:
                    continue  # the next model
                if final:
                    self._sent(await self.client.afeedback(**final))
                raise
            if feedback := self._success(attempts, model, response, started):
                self._sent(await self.client.afeedback(**feedback))
            return response
        raise AssertionError("unreachable: the loop returns or raises")

    async def feedback(self, response: Any, *, quality: float) -> bool:
        """Send the quality of a response this wrapper returned (when no ``score`` hook gave one)."""
        sent = await self.client.afeedback(**self._later(response, quality))
        self._sent(sent)
        return sent


class _SyncCompletions:
    def __init__(self, routed: RoutedOpenAI) -> None:
        self._routed = routed

    def create(self, **kwargs: Any) -> Any:
        """``chat.completions.create`` without ``model`` (banditroute picks it); ``task_type=``, ``tenant=``."""
        return self._routed.create(**kwargs)


class _SyncChat:
    def __init__(self, routed: RoutedOpenAI) -> None:
        self.completions = _SyncCompletions(routed)


class RoutedOpenAI(_Routed[openai.OpenAI]):
    """``openai.OpenAI`` routed by banditroute, for synchronous code (with a ``SyncRouterClient``); the same
    arguments and behaviour as :class:`RoutedAsyncOpenAI`."""

    def __init__(
        self,
        client: SyncRouterClient,
        models: Mapping[str, openai.OpenAI | Endpoint[openai.OpenAI] | str],
        *,
        task_type: str | TaskTypeOf = "default",
        score: Score | None = None,
        max_attempts: int = 3,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        **route_kwargs: Any,
    ) -> None:
        def make(base_url: str) -> openai.OpenAI:
            return openai.OpenAI(base_url=base_url, api_key=_key(api_key), max_retries=0, timeout=timeout_s)

        super().__init__(
            client,
            models,
            make,
            task_type=task_type,
            score=score,
            max_attempts=max_attempts,
            route_kwargs=route_kwargs,
        )
        self.chat = _SyncChat(self)

    def create(self, **kwargs: Any) -> Any:
        task_type, route_args = self._route_args(kwargs)
        attempts = self._attempts(self.client.route(task_type, **route_args))
        for model in attempts.order:
            endpoint = self.endpoints[model]
            started = time.monotonic()
            try:
                response = endpoint.client.chat.completions.create(model=endpoint.model or model, **kwargs)
            except Exception as exc:
                if (final := self._stop(attempts, model, exc, started)) is None:
                    continue  # the next model
                if final:
                    self._sent(self.client.feedback(**final))
                raise
            if feedback := self._success(attempts, model, response, started):
                self._sent(self.client.feedback(**feedback))
            return response
        raise AssertionError("unreachable: the loop returns or raises")

    def feedback(self, response: Any, *, quality: float) -> bool:
        """Send the quality of a response this wrapper returned (when no ``score`` hook gave one)."""
        sent = self.client.feedback(**self._later(response, quality))
        self._sent(sent)
        return sent


def _key(api_key: str | None) -> str:
    import os

    return api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"


__all__ = ["Endpoint", "RoutedAsyncOpenAI", "RoutedOpenAI", "request_id_of"]
