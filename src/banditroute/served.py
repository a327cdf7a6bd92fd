"""What the join keeps of a decision that serves a model, as the decide loop hands it over in memory.

In the lowest layers because both sides use it: the decide loop (``kafka``) builds it, the join (``agents``) keeps
it (``agents.pending.encode_fresh``).
"""

from __future__ import annotations

from typing import Any

DEFAULT_POLICY = "thompson"
"""The policy name a decision without one was made with (pending entries leave it out)."""

Served = tuple[str, str, str, str, str | None, str, tuple[str, ...], float, int, str, bool]
"""What the join keeps of a decision that serves a model: ``(request_id, decision_id, task_key, task_type, tenant,
model, fallbacks, propensity, state_version, policy name, capped)`` (the decide loop hands these over in
memory; ``capped``: ``reasons.capped`` is set)."""


Decided = tuple[str, str | None, str | None, float, bytes]
"""A decision as the decide loop hands it to the worker: ``(task_type, model, reasons.capped, decision_ms, the
event's JSON text)`` (model None: no model served)."""


def served_fields(decision: dict[str, Any]) -> Served:
    """The :data:`Served` fields of a decision event (as a dict) that serves a model."""
    return (
        decision["request_id"],
        decision["decision_id"],
        decision.get("task_key") or decision.get("state_key") or decision["task_type"],
        decision["task_type"],
        decision.get("tenant"),
        decision["model"],
        tuple(decision.get("fallbacks") or ()),
        float(decision["propensity"]),
        int(decision["state_version"]),
        str((decision.get("policy") or {}).get("name", DEFAULT_POLICY)),
        (decision.get("reasons") or {}).get("capped") is not None,
    )


def served_by_router(decision: dict[str, Any]) -> Served | None:
    """The :data:`Served` fields of a decision event, or None when the router served no model by it (no model,
    a shadow decision, the static default route): nothing to learn from its feedback."""
    if decision.get("model") is None or decision.get("shadow") or decision.get("is_default_route"):
        return None
    return served_fields(decision)


__all__ = ["DEFAULT_POLICY", "Decided", "Served", "served_by_router", "served_fields"]
