"""Apply joined outcomes to the state of their task type, exactly once (and, with a :class:`PriorPool`,
under quality priors pooled over task types; with a :class:`BudgetSplit`, with its share of a budget shared
by several task types).

Each state carries a watermark per source (``state.applied``: source -> highest offset applied), written in
the same table record as the posteriors. An outcome at or below its source's watermark was learnt already
(a redelivery after a crash) and is skipped. Because the watermark and the posterior travel together in one
changelog record, a restarted worker recovers both consistently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from banditroute.agents.budget_split import BudgetSplit
from banditroute.agents.prior_pool import PriorPool
from banditroute.config import Registry
from banditroute.core import ModelSpec, Outcome, TaskState, decode_state, encode_state, update
from banditroute.limits import is_state_key
from banditroute.routing import task_type_of


@dataclass(slots=True)
class LearnStats:
    """Counters of one batch."""

    learned: int = 0
    skipped_redelivered: int = 0
    by_model: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A state the learner could not decode, and what it learnt on from instead."""

    key: str
    raw: bytes
    error: str
    last_good: bool
    """True: the key's last good state replaced it; False: the prior did (no good state known)."""


def outcome_problem(record: Any) -> str | None:
    """Why an ``outcomes`` record cannot be learnt, or None. The join writes that topic, but anything with write
    access can put a record there, and one that breaks the learner must not stop every partition's learning."""
    if not isinstance(record, dict):
        return "an outcome must be a JSON object"
    for name in ("task_key", "model"):
        if not isinstance(record.get(name), str):
            return f"{name} must be a string"
    if not is_state_key(record["task_key"]):  # each would be a state of its own, its key as long as it came
        return "task_key must be a task type, tenant|task type or ~shared (task type and tenant identifiers)"
    for name in ("src", "off"):
        value = record.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{name} must be an integer"
    for name in ("quality", "cost_usd", "latency_ms", "at_s"):
        value = record.get(name)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            return f"{name} must be a number or null"
    for name in ("tokens_in", "tokens_out"):
        value = record.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return f"{name} must be an integer or null"
    error = record.get("error")
    if error is not None and not isinstance(error, str):
        return "error must be a string or null"
    return None


def to_outcome(record: dict[str, Any], models: Sequence[ModelSpec], now_s: float) -> Outcome:
    """The core's view of a joined outcome; token counts are priced from the catalog when no cost is given."""
    cost = record.get("cost_usd")
    model = str(record["model"])
    if cost is None and (record.get("tokens_in") is not None or record.get("tokens_out") is not None):
        spec = next((m for m in models if m.name == model), None)
        if spec is not None:
            cost = spec.price(int(record.get("tokens_in") or 0), int(record.get("tokens_out") or 0))
    return Outcome(
        model=model,
        quality=record.get("quality"),
        cost_usd=cost,
        latency_ms=record.get("latency_ms"),
        error=record.get("error"),
        at_s=float(record.get("at_s", now_s)),
        served=True,
    )


class LearnLogic:
    """Learn from outcomes into ``table`` (state key -> encoded :class:`TaskState`)."""

    def __init__(
        self,
        table: MutableMapping[str, bytes],
        registry: Registry,
        on_state: Callable[[str, TaskState], None] = lambda _k, _s: None,
        pool: PriorPool | None = None,
        split: BudgetSplit | None = None,
        last_good: Callable[[str], TaskState | None] = lambda _k: None,
    ) -> None:
        self.table = table
        self.registry = registry
        self.on_state = on_state
        self.pool = pool
        """Quality priors pooled over task types, set on every state key a batch learns (None: not pooled)."""
        self.split = split
        """A shared budget's division, set on every state key a batch learns (None: each its own budget)."""
        self.last_good = last_good
        """The newest state of a key known to decode (the worker's view of the state topic), or None."""
        self.undecodable: list[Undecodable] = []
        """States found undecodable and replaced, for the caller to dead-letter (it clears the list)."""
        self._decoded: dict[str, tuple[bytes, TaskState]] = {}

    def state(self, key: str) -> TaskState:
        """The current state of ``key`` (decoded once and cached while the table holds the same bytes).

        A state that does not decode (written to the state topic by something else) is replaced by the key's
        last good state, else the prior, and noted in :attr:`undecodable`: learning goes on from there."""
        raw = self.table.get(key)
        if raw is None:
            return self.registry.snapshot.initial
        cached = self._decoded.get(key)
        if cached is not None and cached[0] is raw:
            return cached[1]
        try:
            state = decode_state(raw)
        except ValueError as exc:
            good = self.last_good(key)
            state = self.registry.snapshot.initial if good is None else good
            self.undecodable.append(Undecodable(key, bytes(raw), str(exc), good is not None))
        self._decoded[key] = (raw, state)
        return state

    def decodes(self, key: str) -> bool:
        """Whether the table holds no state for ``key`` or one that decodes (cached like :meth:`state`)."""
        raw = self.table.get(key)
        if raw is None:
            return True
        cached = self._decoded.get(key)
        if cached is not None and cached[0] is raw:
            return True
        try:
            self._decoded[key] = (raw, decode_state(raw))
        except ValueError:
            return False
        return True

    def apply(self, records: Iterable[dict[str, Any]], now_s: float) -> LearnStats:
        """Apply a batch of outcome records; one table write per state key touched."""
        stats = LearnStats()
        by_key: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            by_key.setdefault(str(record["task_key"]), []).append(record)
        snapshot = self.registry.snapshot  # one version for the whole batch
        for key, group in by_key.items():
            policy = snapshot.route(task_type_of(key)).policy
            state = snapshot.aligned(self.state(key))
            before = state.version
            for record in group:
                src, off = int(record["src"]), int(record["off"])
                if state.applied.get(src, -1) >= off:
                    stats.skipped_redelivered += 1
                    continue
                outcome = to_outcome(record, snapshot.models, now_s)
                state = update(state, snapshot.models, policy, outcome, source=(src, off))
                stats.learned += 1
                stats.by_model[outcome.model] = stats.by_model.get(outcome.model, 0) + 1
            if state.version != before:
                if self.pool is not None:
                    state = self.pool.pooled(snapshot, key, state)
                if self.split is not None:
                    state = self.split.split(snapshot, key, state)
                raw = encode_state(state)
                self.table[key] = raw
                self._decoded[key] = (raw, state)
                self.on_state(key, state)
        return stats

    def forget_key(self, key: str) -> None:
        """Drop the decoded copy of one state (evicted or forgotten)."""
        self._decoded.pop(key, None)

    def forget_cache(self) -> None:
        """Drop decoded states (after a rebalance the table may hold other partitions' keys)."""
        self._decoded.clear()
