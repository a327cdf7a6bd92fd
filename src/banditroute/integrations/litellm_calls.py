"""What the LiteLLM plugin reads from LiteLLM's requests, logging events and responses, and one routed call.

Plain readers of LiteLLM's dicts (no LiteLLM import): the metadata keys banditroute uses, the request's metadata
bucket, the deployment of a logging event, the request id stamped on a response, and :class:`Call`, the state of
one call from its first pick until its feedback is settled. :mod:`banditroute.integrations.litellm` re-exports
the public names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from banditroute.events import FeedbackError, RoutingDecision

TASK_TYPE_KEY = "banditroute_task_type"
"""Request metadata key with the task type (wins over ``task_type``)."""
TENANT_KEY = "banditroute_tenant"
"""Request metadata key with the tenant."""
REQUEST_KEY = "banditroute_request_id"
"""Request metadata key with the banditroute request id (set by the plugin; a caller may set it first)."""
MAX_SETTLED = 10_000
"""Request ids of settled calls remembered, so that a late LiteLLM attempt of one is not routed again."""
RESPONSE_KEY = "banditroute"
"""Key in ``response._hidden_params``: ``{request_id, decision_id, task_type, model}``."""


@dataclass
class Call:
    """One routed LiteLLM call, from its first pick until its feedback is settled."""

    request_id: str
    decision: RoutingDecision
    order: tuple[str, ...]
    tried: list[str] = field(default_factory=list)
    failure: tuple[str, FeedbackError, float | None] | None = None
    timer: asyncio.TimerHandle | None = None
    answered: bool = False
    """The caller got a response (LiteLLM's success event for it may still be on its way)."""
    settled: bool = False

    def next_model(self, candidates: Sequence[str]) -> str | None:
        """The first model of the decision's order in ``candidates`` not tried yet (cycling when all were)."""
        usable = [m for m in self.order if m in candidates]
        if not usable:
            return None
        for model in usable:
            if model not in self.tried:
                return model
        return usable[len(self.tried) % len(usable)]


def metadata_of(request: Mapping[str, Any]) -> dict[str, Any]:
    """The request's metadata bucket (``metadata``, else ``litellm_metadata``); a request without one (a dict)
    gets an empty ``metadata`` bucket, so what the plugin writes there travels with the request."""
    bucket = metadata_bucket(request)
    if bucket is not None:
        return bucket
    created: dict[str, Any] = {}
    if isinstance(request, dict):
        request["metadata"] = created
    return created


def metadata_bucket(request: Mapping[str, Any]) -> dict[str, Any] | None:
    for name in ("metadata", "litellm_metadata"):
        bucket = request.get(name)
        if isinstance(bucket, dict):
            return bucket
    return None


def logged_metadata(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """The request metadata of a LiteLLM logging event (read only)."""
    params = kwargs.get("litellm_params")
    bucket = metadata_bucket(params) if isinstance(params, Mapping) else None
    return bucket or metadata_bucket(kwargs) or {}


def deployment_id_of(kwargs: Mapping[str, Any]) -> str | None:
    """The id of the deployment that ran the attempt of a logging event."""
    params = kwargs.get("litellm_params")
    info = params.get("model_info") if isinstance(params, Mapping) else None
    ident = info.get("id") if isinstance(info, Mapping) else None
    return ident if isinstance(ident, str) else None


def request_id_of(response: Any) -> str | None:
    """The banditroute request id stamped on a LiteLLM response (None when banditroute did not route it)."""
    stamp = (getattr(response, "_hidden_params", None) or {}).get(RESPONSE_KEY)
    return stamp.get("request_id") if isinstance(stamp, Mapping) else None


def elapsed_ms(start: Any, end: Any) -> float | None:
    if isinstance(start, datetime) and isinstance(end, datetime):
        return max((end - start).total_seconds() * 1000.0, 0.0)
    if isinstance(start, int | float) and isinstance(end, int | float):
        return max((end - start) * 1000.0, 0.0)
    return None


def known_cost(value: Any) -> float | None:
    """LiteLLM's ``response_cost`` when it knows the price (> 0); else None, and the catalog prices the tokens."""
    return float(value) if isinstance(value, int | float) and value > 0 else None


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


__all__ = [
    "MAX_SETTLED",
    "REQUEST_KEY",
    "RESPONSE_KEY",
    "TASK_TYPE_KEY",
    "TENANT_KEY",
    "Call",
    "deployment_id_of",
    "elapsed_ms",
    "int_or_none",
    "known_cost",
    "logged_metadata",
    "metadata_bucket",
    "metadata_of",
    "request_id_of",
]
