"""banditroute as a ``litellm.Router`` custom routing strategy, with feedback sent by a LiteLLM callback.

Extension points (LiteLLM 1.110): ``Router.register_plugin(strategy)`` with a ``CustomRoutingStrategyBase``
picks the deployment of every attempt; a ``CustomLogger`` in ``litellm.callbacks`` sees each attempt's success
or failure, the end of a failed fallback chain and, inline before the caller gets it, the response.

    router = litellm.Router(model_list=[...])          # model_info.id of each deployment = a banditroute model
    async with RouterClient() as client:
        routing = BanditRouting(client, task_type="chat", score=my_score).attach(router)
        response = await router.acompletion(model="auto", messages=[...])
        request_id_of(response)                          # for RouterClient.feedback(quality=...) later

Per call: the first attempt asks banditroute for a model among the requested group's candidates (the ids of
its deployments, or ``groups[model]``: banditroute model names that are deployment ids or model groups); a
retry or fallback hop takes the next untried model of the decision's order (LiteLLM's own fallback target when
none of the decision's models is in the hop's group). Exactly one feedback per call: on success, for the model
that served (with latency, tokens and LiteLLM's ``response_cost``, or the catalog's price of the tokens when
LiteLLM does not know the model's price) when ``score(response)`` gives a quality,
else nothing (send it later with the request id); on failure, an ``error`` for the last model that failed,
once LiteLLM has no retry or fallback left (or ``settle_after_s`` after the last failure, whichever first).
A call none of whose attempts ran a model of the decision (LiteLLM's own pick in a group outside it, or a
decision relaxed to a model outside the group's candidates) gets no feedback: there is nothing to credit.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from litellm.integrations.custom_logger import CustomLogger
from litellm.types.router import CustomRoutingStrategyBase

from banditroute.client import RouterClient, SyncRouterClient
from banditroute.events import RoutingDecision
from banditroute.integrations.common import (
    MAX_OPEN_CALLS,
    Client,
    Score,
    TaskTypeOf,
    error_kind,
    run_score,
    usage_tokens,
)
from banditroute.integrations.litellm_calls import (
    MAX_SETTLED,
    REQUEST_KEY,
    RESPONSE_KEY,
    TASK_TYPE_KEY,
    TENANT_KEY,
    Call,
    deployment_id_of,
    elapsed_ms,
    int_or_none,
    known_cost,
    logged_metadata,
    metadata_bucket,
    metadata_of,
    request_id_of,
)

log = logging.getLogger("banditroute.integrations.litellm")

CLOSE_WAIT_S = 5.0
"""How long :meth:`BanditRouting.aclose` waits for the success events of calls already answered and for feedback
sends under way: LiteLLM logs success in a task of its own, which may run after the caller has its response (and
after ``aclose`` began)."""


class BanditRouting(CustomLogger, CustomRoutingStrategyBase):
    """banditroute as a LiteLLM Router's routing strategy and feedback callback; see the module docstring.

    ``client``: a started ``RouterClient`` (or ``SyncRouterClient``). ``task_type``: a fixed task type or a
    function of the messages (request metadata ``banditroute_task_type`` wins). ``score``: quality of a
    response in [0, 1], or None to send it later. ``groups``: model group -> banditroute candidates for groups
    whose candidates are not their deployment ids. ``settle_after_s``: a failed call with no further attempt
    within this time gets its error feedback. ``route_kwargs``: more arguments for ``RouterClient.route``
    (``max_cost_usd``, ``objective``, ...).
    """

    def __init__(
        self,
        client: RouterClient | SyncRouterClient,
        *,
        task_type: str | TaskTypeOf = "default",
        score: Score | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
        settle_after_s: float = 60.0,
        **route_kwargs: Any,
    ) -> None:
        super().__init__()
        self.client = Client(client)
        self.task_type = task_type
        self.score = score
        self.groups = {group: tuple(names) for group, names in (groups or {}).items()}
        self.settle_after_s = settle_after_s
        self.route_kwargs = route_kwargs
        self.router: Any = None
        self.calls: OrderedDict[str, Call] = OrderedDict()
        self.settled: OrderedDict[str, None] = OrderedDict()
        self._sending: set[asyncio.Task[None]] = set()
        self._in_flight = 0  # feedback sends under way, in any task
        self.stats = {
            "routed": 0,
            "default_routes": 0,
            "feedback": 0,
            "errors": 0,
            "awaiting_quality": 0,
            "feedback_failed": 0,
            "unrouted_attempts": 0,
            "not_judged": 0,
        }

    # -- wiring -----------------------------------------------------------------------------------------
    def attach(self, router: Any) -> BanditRouting:
        """Make this the router's routing strategy and add it to ``litellm.callbacks``."""
        import litellm

        router.register_plugin(self)
        self.router = router
        if self not in litellm.callbacks:
            litellm.callbacks.append(self)
        return self

    def detach(self) -> None:
        """Remove the callback (the router keeps the strategy until its routing strategy changes)."""
        import litellm

        if self in litellm.callbacks:
            litellm.callbacks.remove(self)

    async def aclose(self) -> None:
        """Wait (at most ``CLOSE_WAIT_S``) for the success events of calls already answered and for the sends under
        way in LiteLLM's tasks, settle every failed call still waiting for a retry, wait for all sends, then
        detach."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_WAIT_S
        while self._in_flight or any(c.answered and not c.settled for c in self.calls.values()):  # noqa: ASYNC110 - LiteLLM's tasks change it
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.01)
        for call in list(self.calls.values()):
            if call.failure is not None:
                await self._settle_failure(call)
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        self.detach()

    # -- routing ----------------------------------------------------------------------------------------
    def candidates(self, group: str) -> tuple[str, ...]:
        """The banditroute models a request for ``group`` may be routed to."""
        if group in self.groups:
            return self.groups[group]
        names: list[str] = []
        for deployment in self._registry().deployments(group, source="group"):
            ident = (deployment.get("model_info") or {}).get("id")
            if isinstance(ident, str) and ident not in names:
                names.append(ident)
        return tuple(names)

    def deployment(self, group: str, model: str | None) -> dict[str, Any]:
        """The deployment serving banditroute ``model`` (a deployment id or a model group), else ``group``'s first."""
        registry = self._registry()
        if model is not None:
            found = registry.deployment_dict(model)
            if found is not None:
                return dict(found)
        for name in (model, group):
            if name is not None:
                listed = registry.deployments(name, source="group")
                if listed:
                    return dict(listed[0])
        raise ValueError(f"no LiteLLM deployment for banditroute model {model!r} (group {group!r})")

    def _registry(self) -> Any:
        if self.router is None:
            raise RuntimeError("BanditRouting is not attached to a router (call attach(router))")
        return self.router.registry()

    def task_type_of(self, metadata: Mapping[str, Any], messages: Any) -> str:
        given = metadata.get(TASK_TYPE_KEY)
        if isinstance(given, str) and given:
            return given
        if callable(self.task_type):
            return str(self.task_type(messages))
        return self.task_type

    async def async_get_available_deployment(  # type: ignore[override]  # LiteLLM's base says None, reads a dict
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[object] | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """LiteLLM's pick for one attempt: banditroute's decision on the first, its order on later ones."""
        metadata = metadata_of(request_kwargs if request_kwargs is not None else {})
        call = self._call(metadata)
        if call is None and metadata.get(REQUEST_KEY) in self.settled:
            # LiteLLM tries again after a failure this plugin took for the last (a fallback it could not see
            # coming): the call's feedback is out, so this attempt is LiteLLM's own and is not routed again.
            self.stats["unrouted_attempts"] += 1
            return self.deployment(model, None)
        if call is None:
            candidates = self.candidates(model)
            if not candidates:
                raise ValueError(f"model group {model!r} has no deployment with a model_info.id to route to")
            decision = await self.client.aroute(
                self.task_type_of(metadata, messages),
                candidates=candidates,
                tenant=metadata.get(TENANT_KEY),
                request_id=metadata.get(REQUEST_KEY),
                metadata={"litellm_model_group": model[:200]},
                **self.route_kwargs,
            )
            call = self._open(decision)
            metadata[REQUEST_KEY] = call.request_id
        elif call.timer is not None:  # another attempt follows the failure: it was not the last one
            call.timer.cancel()
            call.timer = None
        chosen = call.next_model(self.candidates(model))
        if chosen is not None:
            call.tried.append(chosen)
        return self.deployment(model, chosen)

    def get_available_deployment(  # type: ignore[override]  # see async_get_available_deployment
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[object] | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        raise NotImplementedError(
            "banditroute routes LiteLLM's async calls (router.acompletion, aresponses, ...); "
            "for synchronous code use banditroute.integrations.openai.RoutedOpenAI"
        )

    def _call(self, metadata: Mapping[str, Any]) -> Call | None:
        rid = metadata.get(REQUEST_KEY)
        return self.calls.get(rid) if isinstance(rid, str) else None

    def _open(self, decision: RoutingDecision) -> Call:
        if decision.request_id is None or decision.model is None:
            raise ValueError(
                f"no model for this request: {decision.reasons.no_eligible or decision.decision_id}"
            )
        call = Call(decision.request_id, decision, (decision.model, *decision.fallbacks))
        self.stats["routed"] += 1
        if decision.is_default_route:
            self.stats["default_routes"] += 1
        self.calls[call.request_id] = call
        while len(self.calls) > MAX_OPEN_CALLS:
            _, oldest = self.calls.popitem(last=False)
            if oldest.failure is not None:
                self._spawn(self._settle_failure(oldest))
        return call

    def _served(self, call: Call, kwargs: Mapping[str, Any]) -> str | None:
        """The banditroute model of the deployment that ran an attempt, when it is one of the decision's."""
        ident = deployment_id_of(kwargs)
        if ident in call.order:
            return ident
        group = kwargs.get("model_group") or logged_metadata(kwargs).get("model_group")
        if ident is not None and self.router is not None:
            found = self._registry().deployment_dict(ident)
            group = found.get("model_name") if found else group
        return group if isinstance(group, str) and group in call.order else None

    # -- the callback -----------------------------------------------------------------------------------
    async def async_post_call_success_deployment_hook(
        self, request_data: dict[str, Any], response: Any, call_type: Any
    ) -> Any:
        """Stamp the request id on the response before the caller gets it."""
        metadata = metadata_bucket(request_data) or {}
        call = self._call(metadata)
        hidden = getattr(response, "_hidden_params", None)
        if call is not None:
            call.answered = True  # its success event follows (aclose waits for it)
        if call is not None and isinstance(hidden, dict):
            info = metadata.get("model_info")
            ident = info.get("id") if isinstance(info, Mapping) else hidden.get("model_id")
            served = self._served(call, {"litellm_params": {"model_info": {"id": ident}}})
            hidden[RESPONSE_KEY] = {
                "request_id": call.request_id,
                "decision_id": call.decision.decision_id,
                "task_type": call.decision.task_type,
                "model": served,
            }
        return None

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        call = self._call(logged_metadata(kwargs))
        if call is None or call.settled:
            return
        self._close(call)
        served = self._served(call, kwargs)
        if served is None:  # rescued by a LiteLLM fallback outside the decision: its models failed
            await self._send_failure(call)
            return
        quality = run_score(self.score, response_obj)
        if quality is None:
            self.stats["awaiting_quality"] += 1
            return
        tokens_in, tokens_out = usage_tokens(response_obj)
        cost = kwargs.get("response_cost")
        await self._send(
            call,
            model=served,
            quality=quality,
            latency_ms=elapsed_ms(start_time, end_time),
            cost_usd=known_cost(cost),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
        )

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        metadata = logged_metadata(kwargs)
        call = self._call(metadata)
        if call is None or call.settled:
            return
        served = self._served(call, kwargs)
        if served is not None:
            call.failure = (served, error_kind(kwargs.get("exception")), elapsed_ms(start_time, end_time))
        if self._last_attempt(metadata, kwargs):
            await self._settle_failure(call)
        elif call.timer is None:
            call.timer = asyncio.get_running_loop().call_later(
                self.settle_after_s, lambda: self._spawn(self._settle_failure(call))
            )

    async def log_failure_fallback_event(
        self, original_model_group: str, kwargs: Any, original_exception: Exception
    ) -> None:
        """LiteLLM's fallback chain failed: the call's error is final."""
        call = self._call(logged_metadata(kwargs))
        if call is not None:
            await self._settle_failure(call)

    def _last_attempt(self, metadata: Mapping[str, Any], kwargs: Mapping[str, Any]) -> bool:
        """True when LiteLLM will not retry nor fall back after this failed attempt."""
        retries, max_retries = (
            int_or_none(metadata.get("attempted_retries")),
            int_or_none(metadata.get("max_retries")),
        )
        if retries is not None and max_retries is not None and retries < max_retries:
            return False
        hops = int_or_none(metadata.get("attempted_fallbacks")) or 0
        return hops >= len(self._fallbacks_of(str(metadata.get("original_model_group") or ""), kwargs))

    def _fallbacks_of(self, group: str, kwargs: Mapping[str, Any]) -> list[Any]:
        configured: Iterable[Any] = ()
        for source in (kwargs.get("fallbacks"), getattr(self._settings(), "fallbacks", None)):
            if isinstance(source, list) and source:
                configured = source
                break
        for entry in configured:
            if isinstance(entry, Mapping):
                for key in (group, "*"):
                    targets = entry.get(key)
                    if isinstance(targets, list):
                        return targets
            elif isinstance(entry, str):  # a request's plain list of fallback model groups
                return list(configured)
        return []

    def _settings(self) -> Any:
        return self.router.settings() if self.router is not None else None

    # -- sending ----------------------------------------------------------------------------------------
    def _close(self, call: Call) -> None:
        call.settled = True
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        self.calls.pop(call.request_id, None)
        self.settled[call.request_id] = None
        while len(self.settled) > MAX_SETTLED:
            self.settled.popitem(last=False)

    async def _settle_failure(self, call: Call) -> None:
        if call.settled:
            return
        self._close(call)
        await self._send_failure(call)

    async def _send_failure(self, call: Call) -> None:
        if call.failure is None:  # none of the decision's models ran: LiteLLM served the call on its own
            self.stats["not_judged"] += 1
            return
        model, error, latency = call.failure
        self.stats["errors"] += 1
        await self._send(call, model=model, error=error, latency_ms=latency)

    async def _send(self, call: Call, **outcome: Any) -> None:
        if call.decision.is_default_route:  # no decision to join it to: the worker never saw this call
            return
        self._in_flight += 1  # sends in LiteLLM's own tasks too, which aclose cannot gather
        try:
            sent = await self.client.afeedback(
                request_id=call.request_id, decision_id=call.decision.decision_id, **outcome
            )
        finally:
            self._in_flight -= 1
        self.stats["feedback" if sent else "feedback_failed"] += 1

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def feedback(self, response: Any, *, quality: float) -> bool:
        """Send the quality of a response routed here (when no ``score`` hook gave one), with its measurements."""
        stamp = (getattr(response, "_hidden_params", None) or {}).get(RESPONSE_KEY)
        if not isinstance(stamp, Mapping) or not stamp.get("model"):
            raise ValueError("this response was not routed by banditroute (no request id in its metadata)")
        hidden = response._hidden_params
        tokens_in, tokens_out = usage_tokens(response)
        cost = hidden.get("response_cost")
        latency = hidden.get("_response_ms")
        return await self.client.afeedback(
            request_id=stamp["request_id"],
            decision_id=stamp["decision_id"],
            model=stamp["model"],
            quality=quality,
            latency_ms=float(latency) if isinstance(latency, int | float) else None,
            cost_usd=known_cost(cost),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
        )


__all__ = [
    "MAX_SETTLED",
    "REQUEST_KEY",
    "RESPONSE_KEY",
    "TASK_TYPE_KEY",
    "TENANT_KEY",
    "BanditRouting",
    "Call",
    "deployment_id_of",
    "logged_metadata",
    "metadata_of",
    "request_id_of",
]
