"""The default topics as data: name, key, value event, partition count, cleanup policy and retention.

Runtime names are ``<prefix>.<suffix>``; the default prefix is ``banditroute``. ``streams/topics.yaml`` and
``streams/asyncapi.yaml`` are generated from this list, and the worker, the client and the CLI create topics
from it (:func:`layout`), so the layout is written down once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

DEFAULT_PREFIX = "banditroute"

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic of the default layout."""

    suffix: str
    key: str
    value: str
    """Name of the value event (a file in ``streams/schemas/``), or a description for non-JSON values."""
    partitions: str
    cleanup_policy: Literal["delete", "compact"]
    retention_ms: int | None
    """Retention for ``delete`` topics; ``None`` keeps data forever (compacted topics)."""
    description: str
    internal: bool = False
    content_type: str = "application/json"
    sizing: Literal["partitions", "state_partitions", "one"] = "partitions"
    """Which setting gives the partition count: ``partitions`` (requests, decisions and feedback co-partition
    by request_id), ``state_partitions`` (outcomes and state, keyed by task type) or a single partition."""

    def partition_count(self, partitions: int, state_partitions: int) -> int:
        """The number of partitions this topic is created with."""
        return {"partitions": partitions, "state_partitions": state_partitions, "one": 1}[self.sizing]

    def configs(self) -> dict[str, str]:
        """Topic configs set at creation (only the cleanup policy; retention is left to the broker's default)."""
        return {"cleanup.policy": "compact"} if self.cleanup_policy == "compact" else {}

    def name(self, prefix: str = DEFAULT_PREFIX) -> str:
        """The topic's runtime name for ``prefix``."""
        return f"{prefix}.{self.suffix}" if prefix else self.suffix


DEFAULT_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        suffix="requests",
        key="request_id",
        value="RoutingRequest",
        partitions="scale with worker count (e.g. 2x the maximum number of workers); key spreads load evenly",
        cleanup_policy="delete",
        retention_ms=7 * DAY_MS,
        description="Routing requests from clients.",
    ),
    TopicSpec(
        suffix="requests-low",
        key="request_id",
        value="RoutingRequest",
        partitions="same count as requests (a copied request keeps its partition)",
        cleanup_policy="delete",
        retention_ms=7 * DAY_MS,
        description="Internal: requests of new or capped task types a worker read while its priority lane was "
        "full, copied as they were to be decided when it is idle (the requests topic's offset passes them once "
        "copied).",
        internal=True,
    ),
    TopicSpec(
        suffix="decisions",
        key="request_id",
        value="RoutingDecision",
        partitions="same count as requests and feedback, so a request, its decision and feedback co-partition",
        cleanup_policy="delete",
        retention_ms=7 * DAY_MS,
        description="Every routing decision, including rejections and shadow decisions.",
    ),
    TopicSpec(
        suffix="shadow-decisions",
        key="request_id",
        value="RoutingDecision",
        partitions="same count as decisions",
        cleanup_policy="delete",
        retention_ms=7 * DAY_MS,
        description="What a shadow candidate policy would have chosen (shadow=true, decision_id s:<request_id>).",
    ),
    TopicSpec(
        suffix="feedback",
        key="request_id",
        value="Feedback",
        partitions="same count as decisions (joined to decisions by request_id)",
        cleanup_policy="delete",
        retention_ms=7 * DAY_MS,
        description="Outcomes of routed calls, joined to decisions for learning.",
    ),
    TopicSpec(
        suffix="catalog",
        key="model",
        value="ModelCatalogEvent",
        partitions="1 (small; every worker reads all of it)",
        cleanup_policy="compact",
        retention_ms=None,
        description="Model catalog: latest entry per model.",
        sizing="one",
    ),
    TopicSpec(
        suffix="config",
        key="the constant 'config'",
        value="config document: {schema_version, version, files: {models.yaml, policy.yaml, rules.yaml}, "
        "pushed_by, pushed_at}",
        partitions="1 (one document; every worker and local-mode client reads it)",
        cleanup_policy="compact",
        retention_ms=None,
        description="The routing configuration as one versioned document (`banditroute config push`); "
        "workers and local-mode clients apply the newest one, over their config folder.",
        sizing="one",
    ),
    TopicSpec(
        suffix="state",
        key="task_type",
        value="posterior snapshot (binary, internal format)",
        partitions="same count as outcomes",
        cleanup_policy="compact",
        retention_ms=None,
        description="Learned posterior snapshots per task type; internal binary format, not a public contract.",
        internal=True,
        content_type="application/octet-stream",
        sizing="state_partitions",
    ),
    TopicSpec(
        suffix="outcomes",
        key="task_type",
        value="joined outcome (internal)",
        partitions="a few (learning is per task_type); more only when many task types",
        cleanup_policy="delete",
        retention_ms=3 * DAY_MS,
        description="Internal: decisions joined with feedback, keyed by task_type for the learner.",
        internal=True,
        sizing="state_partitions",
    ),
    TopicSpec(
        suffix="deadletter",
        key="source topic name",
        value="DeadLetter",
        partitions="1-3 (low volume)",
        cleanup_policy="delete",
        retention_ms=14 * DAY_MS,
        description="Messages that could not be used, with a reason code and an actionable error.",
        sizing="one",
    ),
)


WRITTEN_IN_BATCHES = ("requests-low", "decisions", "shadow-decisions", "state", "outcomes", "deadletter")
"""Suffixes of the topics a worker writes in record batches of up to 512 KiB (their ``max.message.bytes``
must allow that; the worker checks at start)."""


def topic(suffix: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Runtime name of a default topic, e.g. ``topic("requests") == "banditroute.requests"``."""
    return spec_of(suffix).name(prefix)


def spec_of(suffix: str) -> TopicSpec:
    """The default topic with this suffix."""
    for spec in DEFAULT_TOPICS:
        if spec.suffix == suffix:
            return spec
    raise KeyError(f"unknown topic {suffix!r}; known: {', '.join(s.suffix for s in DEFAULT_TOPICS)}")


def layout(
    name_of: Callable[[str], str], partitions: int, state_partitions: int
) -> dict[str, tuple[int, dict[str, str]]]:
    """Runtime topic name (``name_of(suffix)``, e.g. ``Settings.topic``) -> (partitions, topic configs) of every
    default topic."""
    return {
        name_of(spec.suffix): (spec.partition_count(partitions, state_partitions), spec.configs())
        for spec in DEFAULT_TOPICS
    }


__all__ = [
    "DAY_MS",
    "DEFAULT_PREFIX",
    "DEFAULT_TOPICS",
    "WRITTEN_IN_BATCHES",
    "TopicSpec",
    "layout",
    "spec_of",
    "topic",
]
