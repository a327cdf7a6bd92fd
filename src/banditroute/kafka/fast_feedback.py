"""Accept the common feedback record without pydantic: the join's fast path.

The SDK writes every field of :class:`~banditroute.events.Feedback`, most of them null. For a record that
reports a served call (no ``error``) with plain values, :func:`fast_feedback` checks the same rules as the
pydantic contract (strict JSON mode through :func:`banditroute.codec.decode`, then the join's unknown-model
check) and returns the fields the join uses: exactly what ``Feedback.model_dump(mode="json",
exclude_none=True)`` gives, in the same order. It only ever *accepts*: anything else (another field, an
``error``, an integer where a float goes, a timestamp form it does not know, a model not in the catalog) returns
None and the caller decodes the record the full way, which also writes the dead letter with its reason and
message. ``tests/kafka/test_fast_feedback.py`` holds it to that contract on generated input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Container
from datetime import datetime
from typing import Any

from banditroute.events import MAX_TOKENS, SCHEMA_VERSION
from banditroute.kafka.fast_request import json_object, utc_time
from banditroute.messages import is_identifier

_FIELDS = (
    "schema_version",
    "request_id",
    "decision_id",
    "model",
    "quality",
    "latency_ms",
    "cost_usd",
    "tokens_in",
    "tokens_out",
    "error",
    "observed_at",
    "idempotency_key",
)
_KNOWN = frozenset(_FIELDS)
_AS_SERIALISED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{6})?Z")
"""A UTC timestamp exactly as ``Feedback`` serialises one (``.000000`` aside, which it drops)."""


def _non_negative(value: object) -> bool:
    return value is None or (type(value) is float and value >= 0.0 and math.isfinite(value))


def _tokens(value: object) -> bool:
    return value is None or (type(value) is int and 0 <= value <= MAX_TOKENS)


def fast_feedback(raw: bytes, max_bytes: int, models: Container[str]) -> dict[str, Any] | None:
    """The fields of the feedback in ``raw`` if it has the common shape and is valid; None: decode it fully."""
    obj = json_object(raw, max_bytes)
    if obj is None or not _KNOWN.issuperset(obj):
        return None
    get = obj.get
    version = get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION or get("error") is not None:
        return None
    request_id, decision_id, model = get("request_id"), get("decision_id"), get("model")
    if request_id is None and decision_id is None:
        return None
    if (request_id is not None and not is_identifier(request_id)) or (
        decision_id is not None and not is_identifier(decision_id)
    ):
        return None  # (a decision id may be up to 136 characters: longer ones than 128 go the full way)
    if not is_identifier(model) or model not in models or not is_identifier(get("idempotency_key")):
        return None
    quality = get("quality")
    if type(quality) is not float or not 0.0 <= quality <= 1.0:
        return None
    cost, tokens_in, tokens_out = get("cost_usd"), get("tokens_in"), get("tokens_out")
    if not (
        _non_negative(get("latency_ms"))
        and _non_negative(cost)
        and _tokens(tokens_in)
        and _tokens(tokens_out)
    ):
        return None
    if (tokens_in is None) != (tokens_out is None) or (cost is None and tokens_in is None):
        return None
    observed = get("observed_at")
    if type(observed) is str and _AS_SERIALISED.fullmatch(observed) and not observed.endswith(".000000Z"):
        try:  # the SDK's form, which the model serialises unchanged: only its date and time are checked
            datetime.fromisoformat(observed)
        except ValueError:  # e.g. 2026-02-30 or hour 24
            return None
    else:
        observed_at = utc_time(observed)
        if observed_at is None:
            return None
        obj["observed_at"] = observed_at.isoformat().replace("+00:00", "Z")  # as the model serialises it
    return {name: obj[name] for name in _FIELDS if get(name) is not None}
