"""Bounds on the keys clients name: task types, tenants and their request rate (policy.yaml ``limits``).

Every identifier a client sends used to be remembered: a client that put a request id into ``task_type`` grew
a posterior, counters, a dashboard series and a Prometheus label set per request. :class:`Admission` decides,
per request and in O(1), which state a request may use:

* a task type listed in ``task_types`` or ``allowed_task_types`` always has its own state;
* any other task type gets its own state while fewer than ``max_task_types`` such task types are held by this
  worker; past that it is routed with the ``default`` task policy and one shared state (``SHARED_KEY``),
  and its decision says so (``reasons.capped = "max_task_types"``); with ``reject_unknown_task_types`` it is
  rejected instead (``model`` null, ``reasons.no_eligible`` says why);
* a per-tenant task type keeps a state per tenant for at most ``max_tenants_per_task_type`` tenants; further
  tenants share the task type's state (``reasons.capped = "max_tenants_per_task_type"``);
* with ``tenant_requests_per_s`` a tenant (or the tenantless requests together) above that rate, after a burst
  of one second's worth, is rejected (``reasons.capped = "tenant_requests_per_s"``).

Held task types and tenants with no traffic for ``idle_evict_s`` are let go (:meth:`Admission.evict_idle`), so
a burst of junk names does not hold the slots for ever. Capped requests are decided, not dead-lettered: the
caller still needs an answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from banditroute.messages import is_identifier, known_identifier

TENANT_SEPARATOR = "|"
"""Separates tenant and task type in per-tenant state keys (never valid inside either name); re-exported by
:mod:`banditroute.routing`, which builds the keys."""

SHARED_KEY = "~shared"
"""The state key shared by task types past ``max_task_types`` (a task type cannot start with ``~``)."""

CAP_TASK_TYPES = "max_task_types"
CAP_TENANTS = "max_tenants_per_task_type"
CAP_RATE = "tenant_requests_per_s"
CAP_UNKNOWN = "unknown_task_type"
CAPS = (CAP_TASK_TYPES, CAP_TENANTS, CAP_RATE, CAP_UNKNOWN)
NO_TENANT = ""
"""The rate-limit bucket of requests without a tenant."""


@dataclass(frozen=True, slots=True)
class Limits:
    """policy.yaml ``limits`` (every field optional; these defaults apply)."""

    max_task_types: int = 1000
    max_tenants_per_task_type: int = 100
    tenant_requests_per_s: float | None = None
    reject_unknown_task_types: bool = False
    allowed_task_types: frozenset[str] = frozenset()
    idle_evict_s: float | None = 3600.0
    metrics_task_types: int = 20
    metrics_state_keys: int = 50
    max_capped_in_flight: int = 20_000
    """Capped decisions the join of one worker keeps waiting for feedback (about 1 KB of memory each); past it the
    oldest are given up (:meth:`banditroute.agents.join.JoinLogic._give_up`)."""

    def lists(self, configured: Mapping[str, Any], task_type: str) -> bool:
        """Whether ``task_type`` is listed: in policy.yaml ``task_types`` (``configured``) or ``allowed_task_types``
        (it always has its own state)."""
        return task_type in configured or task_type in self.allowed_task_types

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Limits:
        data = dict(data or {})
        allowed = {f.name for f in fields(cls)}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown limits {sorted(unknown)}; allowed: {sorted(allowed)}")
        if "allowed_task_types" in data:
            names = data["allowed_task_types"] or []
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                raise ValueError("limits.allowed_task_types must be a list of task type names")
            data["allowed_task_types"] = frozenset(names)
        limits = cls(**data)
        for name in (
            "max_task_types",
            "max_tenants_per_task_type",
            "metrics_task_types",
            "metrics_state_keys",
            "max_capped_in_flight",
        ):
            value = getattr(limits, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"limits.{name} must be a whole number >= 0")
        for name in ("tenant_requests_per_s", "idle_evict_s"):
            value = getattr(limits, name)
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise ValueError(f"limits.{name} must be a number > 0 or null")
        if not isinstance(limits.reject_unknown_task_types, bool):
            raise ValueError("limits.reject_unknown_task_types must be true or false")
        return limits


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a request may use: ``key`` is its state key; ``capped`` names the cap that applied (or None);
    ``shared`` means the default task policy with the shared state; ``reject`` is why it gets no model."""

    key: str
    capped: str | None = None
    shared: bool = False
    reject: str | None = None


MAX_PLAIN_VERDICTS = 4096
"""Task types whose uncapped verdict is kept as one (immutable) object."""


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class Admission:
    """The task types and tenants one worker holds state for, and the per-tenant request buckets.

    Used from one thread (the decide loop's); every structure is bounded: held task types by
    ``max_task_types``, tenants by ``max_tenants_per_task_type`` per held per-tenant task type, buckets by the
    tenants seen within the last second (a full bucket carries no information and is dropped).
    """

    def __init__(self) -> None:
        self.task_types: dict[str, float] = {}
        """Unlisted task types holding state of their own, with the time of their last request."""
        self.listed: dict[str, float] = {}
        """Listed task types (policy.yaml), with the time of their last request."""
        self.tenants: dict[str, dict[str, float]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._buckets_swept = 0.0
        self._plain: dict[str, Verdict] = {}

    def check(
        self,
        limits: Limits,
        configured: Mapping[str, Any],
        task_type: str,
        tenant: str | None,
        per_tenant: bool,
        now_s: float,
    ) -> Verdict:
        """The verdict for one request (``configured``: the task types of policy.yaml ``task_types``)."""
        rate = limits.tenant_requests_per_s
        if rate is not None and not self._take(tenant or NO_TENANT, rate, now_s):
            return Verdict(
                task_type,
                CAP_RATE,
                reject=f"tenant_requests_per_s: tenant {tenant or '(none)'!r} is above {rate:g} requests/s",
            )
        if limits.lists(configured, task_type):
            self.listed[task_type] = now_s
        else:
            held = self.task_types
            if task_type in held:
                held[task_type] = now_s
            elif limits.reject_unknown_task_types:
                return Verdict(
                    task_type,
                    CAP_UNKNOWN,
                    reject=f"unknown_task_type: {task_type!r} is not listed in policy.yaml "
                    "(task_types or limits.allowed_task_types)",
                )
            elif len(held) < limits.max_task_types:
                held[task_type] = now_s
            else:
                return Verdict(SHARED_KEY, CAP_TASK_TYPES, shared=True)
        if not (per_tenant and tenant):
            plain = self._plain.get(task_type)
            if plain is None:  # one object per task type: this is every decision's path
                if len(self._plain) >= MAX_PLAIN_VERDICTS:
                    self._plain.clear()
                plain = self._plain[task_type] = Verdict(task_type)
            return plain
        tenants = self.tenants.get(task_type)
        if tenants is None:
            tenants = self.tenants[task_type] = {}
        if tenant in tenants or len(tenants) < limits.max_tenants_per_task_type:
            tenants[tenant] = now_s
            return Verdict(f"{tenant}{TENANT_SEPARATOR}{task_type}")
        return Verdict(task_type, CAP_TENANTS)

    def stamps(
        self,
        limits: Limits,
        configured: Mapping[str, Any],
        task_type: str,
        tenant: str | None,
        per_tenant: bool,
        verdict: Verdict,
    ) -> list[tuple[dict[str, float], str]] | None:
        """What :meth:`check` stamps with the time when it is asked again for the same request and returns
        ``verdict`` again (the dicts and keys), which holds until :meth:`evict_idle` or other ``limits``; None
        when a repeat may answer otherwise (a rate limit, a rejection)."""
        if limits.tenant_requests_per_s is not None or verdict.reject is not None:
            return None
        if verdict.shared:  # past max_task_types: check stamps nothing
            return []
        out = [(self.listed if limits.lists(configured, task_type) else self.task_types, task_type)]
        if per_tenant and tenant and verdict.capped is None:
            out.append((self.tenants[task_type], tenant))
        return out

    def established(self, limits: Limits, configured: Mapping[str, Any], task_type: str) -> bool:
        """Whether ``task_type`` is listed or already holds state of its own here (read only; the decide loop
        decides these before new and capped task types, see :mod:`banditroute.kafka.low_lane`)."""
        return limits.lists(configured, task_type) or task_type in self.task_types

    def _take(self, tenant: str, rate: float, now_s: float) -> bool:
        """Token bucket per tenant: ``rate`` per second, a burst of one second's worth (at least 1)."""
        burst = max(1.0, rate)
        if now_s - self._buckets_swept >= 1.0:
            self._sweep(rate, burst, now_s)
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(burst, now_s)
        else:
            bucket.tokens = min(burst, bucket.tokens + (now_s - bucket.at) * rate)
            bucket.at = now_s
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def _sweep(self, rate: float, burst: float, now_s: float) -> None:
        """Drop the buckets that have refilled: a full bucket is what a new one would be."""
        self._buckets_swept = now_s
        self._buckets = {t: b for t, b in self._buckets.items() if b.tokens + (now_s - b.at) * rate < burst}

    def evict_idle(self, idle_s: float, now_s: float) -> list[str]:
        """Let go of task types and tenants without a request for ``idle_s``; returns the task types let go."""
        cutoff = now_s - idle_s
        gone = [t for t, seen in self.task_types.items() if seen < cutoff]
        for task_type in gone:
            del self.task_types[task_type]
        for task_type in [t for t, seen in self.listed.items() if seen < cutoff]:
            del self.listed[task_type]
        for task_type, tenants in list(self.tenants.items()):
            for tenant in [t for t, seen in tenants.items() if seen < cutoff]:
                del tenants[tenant]
            if not tenants:
                del self.tenants[task_type]
        return gone

    def active(self, task_type: str, tenant: str | None, cutoff: float) -> bool:
        """Whether ``task_type`` (and ``tenant`` for a per-tenant key) had a request here since ``cutoff``.
        Safe to call from another thread: it only reads."""
        seen = self.task_types.get(task_type) or self.listed.get(task_type)
        if tenant is not None:
            seen = (self.tenants.get(task_type) or {}).get(tenant)
        return seen is not None and seen >= cutoff

    def counts(self) -> dict[str, int]:
        return {
            "task_types_held": len(self.task_types),
            "tenant_states_held": sum(len(t) for t in self.tenants.values()),
            "rate_buckets": len(self._buckets),
        }


_SHARED = Verdict(SHARED_KEY, shared=True)
"""A decision capped where it was made (it names ``~shared``)."""
_SHARED_CAPPED = Verdict(SHARED_KEY, CAP_TASK_TYPES, shared=True)
"""A decision whose task type :class:`ForeignKeys` capped."""


class ForeignKeys:
    """The state keys named by decisions this worker did not make, admitted against its ``limits`` as a request of
    the same task type and tenant would be (a worker's join takes them from the ``decisions`` topic: a local-mode
    client's, another worker's read again after a rebalance, anything with write access to the topic).

    A decision names its ``state_key``; without the check the learner created a state for whatever it named, one
    per record if a process wanted (docs/guarantees.md, "What the caps do not bound"). Here a decision's key must
    be one a request could have had: its task type, ``tenant|task type`` or ``~shared`` (task type and tenant
    identifiers), and it gets its own state only within the caps a request meets on this worker:

    * a listed task type (``task_types``, ``allowed_task_types``), or one the decide loop holds (``decided``, read
      only: it is another thread's), keeps its key; any other task type is held here while the task types held
      here and by the decide loop together are fewer than ``max_task_types`` (one both hold counted once:
      :meth:`_room`; so none once the decide loop is at its cap). Past that the decision learns into ``~shared``,
      as a capped request would (``capped`` ``max_task_types``); with ``reject_unknown_task_types`` it is refused
      (``reject``: a worker rejects such a request, and learns nothing of it);
    * a per-tenant key ``tenant|task type`` likewise within ``max_tenants_per_task_type`` tenants of its task type
      (the decide loop's and those held here together); past that the decision learns into the task type's state;
    * ``~shared`` is taken as it is (one key).

    The rate limit (``tenant_requests_per_s``) is not applied: the decision was made already, and no state grows
    with a rate. Held task types and tenants with no decision for ``idle_evict_s`` give their slot back
    (:meth:`evict_idle`). Used from one thread (the worker's loop, the join's)."""

    def __init__(self) -> None:
        self.held = Admission()
        """Task types and tenants holding state of their own because of decisions read here."""
        self._verdicts: dict[str, Verdict] = {}
        """One verdict object per key a decision keeps (every decision's path; at most 4,096 kept)."""
        self._full: dict[str, tuple[tuple[int, int], float]] = {}
        """Where :meth:`_room` last found no room: the sizes it saw, and until when that stands."""

    def _kept(self, key: str) -> Verdict:
        verdict = self._verdicts.get(key)
        if verdict is None:
            if len(self._verdicts) >= MAX_PLAIN_VERDICTS:
                self._verdicts.clear()
            verdict = self._verdicts[key] = Verdict(key)
        return verdict

    def check(
        self,
        limits: Limits,
        configured: Mapping[str, Any],
        per_tenant: Callable[[str], bool],
        decided: Admission | None,
        task_type: object,
        tenant: object,
        state_key: object,
        now_s: float,
    ) -> Verdict:
        """The key a decision of ``task_type`` and ``tenant`` naming ``state_key`` learns into (``per_tenant``: the
        snapshot's rule, for a decision that names no key; ``decided``: the decide loop's slots, or None).
        ``capped`` names the cap applied here; ``reject`` says why the decision is refused (``capped`` is
        ``unknown_task_type`` where a request would have been rejected, None where no request could name it)."""
        if not known_identifier(task_type):
            return Verdict("", reject=f"task_type {_clip(task_type)} is no identifier")
        assert isinstance(task_type, str)
        if tenant is not None and not known_identifier(tenant):
            return Verdict("", reject=f"tenant {_clip(tenant)} is no identifier")
        if not state_key:  # decisions from before state_key: the snapshot's key, as the join always took
            own_tenant = bool(tenant) and per_tenant(task_type)
        elif state_key == SHARED_KEY:
            return _SHARED
        elif state_key == task_type:
            own_tenant = False
        elif tenant and state_key == f"{tenant}{TENANT_SEPARATOR}{task_type}":
            own_tenant = True
        else:
            return Verdict(
                "",
                reject=f"state_key {_clip(state_key)} is none of the keys a decision of task type {task_type!r} "
                f"(tenant {tenant!r}) can name: the task type, tenant|task type or {SHARED_KEY!r}",
            )
        mine = self.held
        if not limits.lists(configured, task_type):
            held = mine.task_types
            if task_type in held:
                held[task_type] = now_s
            elif decided is None or task_type not in decided.task_types:
                if limits.reject_unknown_task_types:
                    return Verdict(
                        "",
                        CAP_UNKNOWN,
                        reject=f"unknown_task_type: {task_type!r} is not listed in policy.yaml (task_types or "
                        "limits.allowed_task_types); a worker rejects such a request",
                    )
                theirs_types = None if decided is None else decided.task_types
                if not self._room("", held, theirs_types, limits.max_task_types, now_s):
                    return _SHARED_CAPPED
                held[task_type] = now_s
        if not own_tenant:
            return self._kept(task_type)
        assert isinstance(tenant, str)
        key = state_key if type(state_key) is str and state_key else f"{tenant}{TENANT_SEPARATOR}{task_type}"
        theirs = None if decided is None else decided.tenants.get(task_type)
        if theirs is not None and tenant in theirs:
            return self._kept(key)
        tenants = mine.tenants.get(task_type)
        if tenants is None:
            tenants = mine.tenants[task_type] = {}
        if tenant in tenants or self._room(
            task_type, tenants, theirs, limits.max_tenants_per_task_type, now_s
        ):
            tenants[tenant] = now_s
            return self._kept(key)
        if not tenants:
            del mine.tenants[task_type]
        return Verdict(task_type, CAP_TENANTS)

    def _room(
        self, scope: str, mine: dict[str, float], theirs: dict[str, float] | None, cap: int, now_s: float
    ) -> bool:
        """Whether ``mine`` (names held here) and ``theirs`` (the decide loop's, or None) hold fewer than ``cap``
        names together, a name both hold counted once: it is one state (a local-mode client's task type that
        requests to this worker name too). ``theirs`` is another thread's and only read (its ``len`` and
        membership). The names both hold are looked for only when the plain sum reaches ``cap``, and a look that
        found no room stands for a second while neither size changes (``scope``: the task types, "", or the
        tenants of one task type), so decisions past a cap do not each walk ``mine``."""
        total = len(mine) + (len(theirs) if theirs else 0)
        if total < cap or not theirs or not mine:
            return total < cap
        sizes = (len(mine), len(theirs))
        full = self._full.get(scope)
        if full is not None and full[0] == sizes and now_s < full[1]:
            return False
        if len(theirs) + sum(1 for name in mine if name not in theirs) < cap:
            return True
        if len(self._full) >= MAX_PLAIN_VERDICTS:
            self._full.clear()
        self._full[scope] = (sizes, now_s + 1.0)
        return False

    def evict_idle(self, idle_s: float, now_s: float) -> None:
        """Let go of task types and tenants no decision named here for ``idle_s``."""
        self.held.evict_idle(idle_s, now_s)

    def counts(self) -> dict[str, int]:
        held = self.held.counts()
        return {"task_types_held": held["task_types_held"], "tenant_states_held": held["tenant_states_held"]}


def is_state_key(key: object) -> bool:
    """Whether ``key`` is a state key a request can have: a task type, ``tenant|task type`` (identifiers, so at
    most 257 characters) or ``~shared``."""
    if type(key) is not str:
        return False
    if key == SHARED_KEY:
        return True
    tenant, separated, task_type = key.partition(TENANT_SEPARATOR)
    if not separated:
        return is_identifier(key)
    return is_identifier(tenant) and is_identifier(task_type)


def _clip(value: object, limit: int = 80) -> str:
    """``repr`` of a name from a record, at most ``limit`` characters of it (an error message is kept short)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


__all__ = [
    "CAPS",
    "CAP_RATE",
    "CAP_TASK_TYPES",
    "CAP_TENANTS",
    "CAP_UNKNOWN",
    "SHARED_KEY",
    "Admission",
    "ForeignKeys",
    "Limits",
    "Verdict",
    "is_state_key",
]
