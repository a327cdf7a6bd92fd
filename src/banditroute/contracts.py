"""Generate and check the contract files in ``streams/`` from the event models and the topic list.

Output is deterministic (sorted keys, fixed formatting) so ``banditroute contracts --check`` can tell when the
checked-in files drift from the models.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from banditroute.codec import DEFAULT_MAX_BYTES, encode
from banditroute.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    CandidateScore,
    Constraints,
    DeadLetter,
    DeadLetterReason,
    DecisionReasons,
    Feedback,
    ModelCatalogEvent,
    Objective,
    PolicyRef,
    RoutingDecision,
    RoutingRequest,
    WireEvent,
)
from banditroute.topics import DEFAULT_PREFIX, DEFAULT_TOPICS, TopicSpec

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

REASON_DOCS: dict[DeadLetterReason, str] = {
    DeadLetterReason.EMPTY_PAYLOAD: "the message value was empty (or a tombstone where none is allowed)",
    DeadLetterReason.PAYLOAD_TOO_LARGE: f"the message exceeds the size limit (default {DEFAULT_MAX_BYTES} bytes)",
    DeadLetterReason.MALFORMED_JSON: "not UTF-8, or not parseable JSON (truncated, trailing garbage, ...)",
    DeadLetterReason.NON_FINITE_NUMBER: "NaN, Infinity, or a number that overflows a 64-bit float",
    DeadLetterReason.VALIDATION_ERROR: "valid JSON that breaks the schema: wrong type, missing/unknown field, bound",
    DeadLetterReason.UNSUPPORTED_SCHEMA_VERSION: f"schema_version is an integer other than {SCHEMA_VERSION}",
    DeadLetterReason.UNKNOWN_MODEL: "names a model that is not in the catalog (worker check)",
    DeadLetterReason.DUPLICATE_ID: "a request_id (or decision_id) that was already received (worker check)",
    DeadLetterReason.UNKNOWN_REQUEST: "feedback for a request/decision the worker never saw (worker check)",
    DeadLetterReason.DUPLICATE_FEEDBACK: "feedback whose idempotency_key was already applied (worker check)",
    DeadLetterReason.MODEL_MISMATCH: "feedback model is neither the chosen model nor one of its fallbacks",
    DeadLetterReason.LATE_FEEDBACK: "feedback that arrived after the join window closed (worker check)",
    DeadLetterReason.INTERNAL_ERROR: "the worker failed on a valid message (a bug); `error` names the exception",
    DeadLetterReason.UNDECODABLE_STATE: "a record of the state topic the learner cannot decode (it learns on from the"
    " key's last good state, else the prior)",
}

_T0 = datetime(2025, 1, 15, 12, 0, 0, tzinfo=UTC)


def examples() -> dict[str, WireEvent]:
    """One realistic example per event, by event name."""
    request = RoutingRequest(
        request_id="req-7f3a9c2e",
        task_type="summarise",
        tenant="acme",
        candidates=("gpt-4o-mini", "claude-3-5-haiku", "llama-3.1-8b"),
        exclude=("llama-3.1-8b",),
        constraints=Constraints(max_cost_usd=0.01, max_latency_ms=2500.0, capabilities=("json_mode",)),
        objective=Objective(kind="utility", lam=20.0, mu=0.05),
        metadata={"source": "web", "priority": 2, "beta_user": True},
        created_at=_T0,
        reply_to="acme.router-replies",
    )
    decision = RoutingDecision(
        decision_id="dec-01HZX4Q9",
        request_id=request.request_id,
        task_type=request.task_type,
        tenant=request.tenant,
        model="claude-3-5-haiku",
        fallbacks=("gpt-4o-mini",),
        propensity=0.62,
        candidates=(
            CandidateScore(model="claude-3-5-haiku", sampled_utility=0.71, mean_utility=0.66),
            CandidateScore(model="gpt-4o-mini", sampled_utility=0.64, mean_utility=0.68),
        ),
        policy=PolicyRef(name="thompson", version="1"),
        state_version=1042,
        reasons=DecisionReasons(
            filtered={"llama-3.1-8b": "excluded by request"},
            circuit_open=(),
            exploration=True,
            rules=("tenant-acme-allow-list",),
        ),
        decided_at=datetime(2025, 1, 15, 12, 0, 0, 3000, tzinfo=UTC),
        decision_ms=0.8,
        worker_id="worker-1",
    )
    feedback = Feedback(
        request_id=request.request_id,
        decision_id=decision.decision_id,
        model="claude-3-5-haiku",
        quality=0.9,
        latency_ms=840.0,
        tokens_in=1200,
        tokens_out=180,
        observed_at=datetime(2025, 1, 15, 12, 0, 1, tzinfo=UTC),
        idempotency_key="req-7f3a9c2e:1",
    )
    catalog = ModelCatalogEvent(
        action="added",
        model="claude-3-5-haiku",
        price_in_per_1k_usd=0.0008,
        price_out_per_1k_usd=0.004,
        capabilities=("json_mode", "tools"),
        context_window=200000,
        latency_ms=900.0,
        lifecycle="active",
        quality_prior=(2.0, 2.0),
        rate_limit_rps=50.0,
        tokens_per_minute=400000,
        updated_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    bad = b'{"schema_version":1,"request_id":"req-1","task_type":"qa","created_at":"2025-01-15T12:00:00"}'
    dead = DeadLetter(
        original=base64.b64encode(bad).decode("ascii"),
        original_size=len(bad),
        source_topic=f"{DEFAULT_PREFIX}.requests",
        source_partition=0,
        source_offset=4711,
        event_type="RoutingRequest",
        reason=DeadLetterReason.VALIDATION_ERROR,
        error="created_at: Input should have timezone info (got '2025-01-15T12:00:00')",
        dead_lettered_at=datetime(2025, 1, 15, 12, 0, 2, tzinfo=UTC),
    )
    out: dict[str, WireEvent] = {
        "RoutingRequest": request,
        "RoutingDecision": decision,
        "Feedback": feedback,
        "ModelCatalogEvent": catalog,
        "DeadLetter": dead,
    }
    assert set(out) == set(EVENT_TYPES)
    return out


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of one event, with ``$schema`` and ``$id``."""
    schema = EVENT_TYPES[name].model_json_schema()
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": f"schemas/{name}.json", **schema}


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _yaml_text(value: Any, header: str) -> str:
    body = yaml.safe_dump(value, sort_keys=True, default_flow_style=False, width=110, allow_unicode=True)
    return header + body


_HEADER = "# Generated by `banditroute contracts --write` from the models; do not edit by hand.\n"


def topics_document() -> dict[str, Any]:
    """The topic list as a plain document (``streams/topics.yaml``)."""
    return {
        "default_prefix": DEFAULT_PREFIX,
        "naming": "runtime names are <prefix>.<suffix>; the prefix is configurable",
        "topics": [_topic_entry(spec) for spec in DEFAULT_TOPICS],
    }


def _topic_entry(spec: TopicSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": spec.name(),
        "suffix": spec.suffix,
        "key": spec.key,
        "value": spec.value,
        "content_type": spec.content_type,
        "partitions": spec.partitions,
        "cleanup_policy": spec.cleanup_policy,
        "retention_ms": spec.retention_ms,
        "internal": spec.internal,
        "description": spec.description,
    }
    if spec.value in EVENT_TYPES:
        entry["schema"] = f"schemas/{spec.value}.json"
    return entry


# Operations from the worker's point of view: what it receives and what it sends.
_OPERATIONS: tuple[tuple[str, str, str], ...] = (
    ("receiveRoutingRequest", "receive", "requests"),
    ("sendRoutingDecision", "send", "decisions"),
    ("receiveFeedback", "receive", "feedback"),
    ("receiveCatalogEvent", "receive", "catalog"),
    ("sendDeadLetter", "send", "deadletter"),
)


def asyncapi_document() -> dict[str, Any]:
    """An AsyncAPI 3.0 document of the public channels, operations and messages."""
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for spec in DEFAULT_TOPICS:
        if spec.value not in EVENT_TYPES:
            continue
        config: dict[str, Any] = {"cleanup.policy": [spec.cleanup_policy]}
        if spec.retention_ms is not None:
            config["retention.ms"] = spec.retention_ms
        channels[spec.suffix] = {
            "address": spec.name(),
            "description": f"{spec.description} Key: {spec.key}. Partitions: {spec.partitions}.",
            "messages": {spec.value: {"$ref": f"#/components/messages/{spec.value}"}},
            "bindings": {
                "kafka": {"topic": spec.name(), "topicConfiguration": config, "bindingVersion": "0.5.0"}
            },
        }
        model = EVENT_TYPES[spec.value]
        messages[spec.value] = {
            "name": spec.value,
            "title": spec.value,
            "summary": (model.__doc__ or spec.value).strip().splitlines()[0],
            "contentType": spec.content_type,
            "payload": {"$ref": f"./schemas/{spec.value}.json"},
            "bindings": {
                "kafka": {
                    "key": {"type": "string", "description": f"the {spec.key}"},
                    "bindingVersion": "0.5.0",
                }
            },
        }
    operations = {
        op_id: {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{_value_of(channel)}"}],
        }
        for op_id, action, channel in _OPERATIONS
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "banditroute event contracts",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "Events the banditroute worker receives and sends on Kafka, from the worker's point "
            "of view. Values are UTF-8 JSON objects with a required schema_version; anything that does not "
            "decode goes to the dead-letter topic with a reason code. Internal topics (state, outcomes) are "
            "not part of this contract.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _value_of(suffix: str) -> str:
    return next(spec.value for spec in DEFAULT_TOPICS if spec.suffix == suffix)


def readme_text() -> str:
    """``streams/README.md``: how to read the contracts, the versioning policy and the dead-letter reasons."""
    lines = [
        "<!-- Generated by `banditroute contracts --write`; do not edit by hand. -->",
        "# banditroute event contracts",
        "",
        "Readable without Python. Regenerate with `banditroute contracts --write`;",
        "CI runs `banditroute contracts --check`.",
        "",
        "- `topics.yaml`: default topics (name, key, value, partitions, cleanup policy, retention).",
        "- `schemas/<Event>.json`: JSON Schema (2020-12) of each event.",
        "- `examples/<Event>.json`: one valid example of each event.",
        "- `asyncapi.yaml`: AsyncAPI 3.0 channels, operations and messages (worker's point of view).",
        "",
        "## Conventions",
        "",
        "UTF-8 JSON objects; unknown fields are rejected. `*_id` identifiers (1-128 chars of letters, digits",
        "and `._:/@+=-`), `*_at` timezone-aware timestamps (ISO 8601, sent as UTC with `Z`), `*_ms`",
        "milliseconds, `*_usd` US dollars. NaN and infinities are rejected; money is never negative.",
        "",
        "## Versioning",
        "",
        f"Every event has `schema_version` (now `{SCHEMA_VERSION}`), required on the wire: a missing one is a",
        "`validation_error`, any other integer is `unsupported_schema_version`. Adding an optional field keeps",
        "the version; any incompatible change bumps it.",
        "",
        "## Dead-letter reasons",
        "",
        "| reason | meaning |",
        "| --- | --- |",
    ]
    lines += [f"| `{reason.value}` | {REASON_DOCS[reason]} |" for reason in DeadLetterReason]
    return "\n".join(lines) + "\n"


def generate() -> dict[str, str]:
    """Every contract file by path relative to ``streams/``."""
    files: dict[str, str] = {
        "README.md": readme_text(),
        "topics.yaml": _yaml_text(topics_document(), _HEADER),
        "asyncapi.yaml": _yaml_text(asyncapi_document(), _HEADER),
    }
    for name in sorted(EVENT_TYPES):
        files[f"schemas/{name}.json"] = _json_text(json_schema(name))
    for name, event in sorted(examples().items()):
        files[f"examples/{name}.json"] = _json_text(json.loads(encode(event)))
    return files


def write(directory: Path) -> list[str]:
    """Write every contract file under ``directory``; return the paths that changed."""
    changed: list[str] = []
    for rel, text in generate().items():
        path = directory / rel
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        changed.append(rel)
    for rel in _stale(directory, generate()):
        (directory / rel).unlink()
        changed.append(rel)
    return changed


def check(directory: Path) -> list[tuple[str, str]]:
    """Compare ``directory`` to what the models generate; return ``(path, problem)`` per drifted file."""
    files = generate()
    drift: list[tuple[str, str]] = []
    for rel, text in files.items():
        path = directory / rel
        if not path.exists():
            drift.append((rel, "missing"))
        elif path.read_text(encoding="utf-8") != text:
            drift.append((rel, "differs from the models"))
    drift += [(rel, "not generated by the models (stale)") for rel in _stale(directory, files)]
    return drift


def _stale(directory: Path, files: dict[str, str]) -> list[str]:
    stale: list[str] = []
    for sub in ("schemas", "examples"):
        folder = directory / sub
        if folder.is_dir():
            stale += [
                f"{sub}/{p.name}" for p in sorted(folder.glob("*.json")) if f"{sub}/{p.name}" not in files
            ]
    return stale


def find_streams_dir(start: Path | None = None) -> Path:
    """The repo's ``streams/`` directory: ``start`` (default: the CWD) or the nearest parent holding one."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "streams"
        if candidate.is_dir() and (folder / "pyproject.toml").is_file():
            return candidate
    raise FileNotFoundError(
        f"no streams/ directory next to a pyproject.toml in {here} or its parents; "
        "run from the banditroute repository or pass --dir"
    )


__all__ = [
    "REASON_DOCS",
    "asyncapi_document",
    "check",
    "examples",
    "find_streams_dir",
    "generate",
    "json_schema",
    "readme_text",
    "topics_document",
    "write",
]
