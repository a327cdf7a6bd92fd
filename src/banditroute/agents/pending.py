"""A decision waiting for its feedback, as the join stores it: a compact JSON array per in-flight decision."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, fields
from typing import Any

import orjson

from banditroute import native
from banditroute.served import DEFAULT_POLICY, Served

PENDING = 0
JOINED = 1
EXPIRED = 2


def compact(data: bytes) -> bytes:
    """A copy exactly as long as ``data`` (orjson's result keeps a ~4 KB allocation whatever its length)."""
    return memoryview(data).tobytes()


def request_id_of(decision_id: str) -> str:
    """Decision ids are ``d:<request_id>``, so feedback naming only the decision finds its request."""
    return decision_id[2:] if decision_id.startswith("d:") else decision_id


def decision_id_for(request_id: str) -> str:
    """Deterministic: a request decided twice (after a crash) yields the same decision id, so duplicates show."""
    return f"d:{request_id}"


@dataclass(slots=True)
class Pending:
    """A decision waiting for its feedback, as stored in the join table (compact JSON array)."""

    decision_id: str
    task_key: str
    task_type: str
    tenant: str | None
    model: str
    fallbacks: tuple[str, ...]
    propensity: float
    state_version: int
    policy: str
    deadline_s: float
    status: int = PENDING
    joined_src: int = -1
    joined_off: int = -1
    idempotency_key: str | None = None
    fb_part: int = -1
    fb_off: int = -1
    outcome: dict[str, Any] | None = None
    dec_off: int = -1
    """Offset of the decision record in its ``decisions`` partition (-1: not known)."""

    def encode(self, request_id: str | None = None) -> bytes:
        """Compact JSON array, format 3: ``[3, decision_id, task_key, ..., deadline, dec_off, status, ...]`` where
        ``decision_id`` is null when it is ``d:<request_id>``, ``task_key`` null when it equals ``task_type``,
        ``policy`` null for ``thompson``, the deadline in whole milliseconds (see :meth:`JoinLogic._store`),
        and trailing fields left out while they hold their defaults (a fresh pending entry ends at its decision
        offset). ~265 bytes per in-flight decision with 32-character request ids, against ~316 for the plain
        array (``banditroute bench scale``)."""
        values: list[Any] = [
            3,
            None
            if request_id is not None and self.decision_id == decision_id_for(request_id)
            else self.decision_id,
            None if self.task_key == self.task_type else self.task_key,
            self.task_type,
            self.tenant,
            self.model,
            list(self.fallbacks),
            self.propensity,
            self.state_version,
            None if self.policy == DEFAULT_POLICY else self.policy,
            round(self.deadline_s * 1000),
            self.dec_off,
            self.status,
            self.joined_src,
            self.joined_off,
            self.idempotency_key,
            self.fb_part,
            self.fb_off,
            self.outcome,
        ]
        while len(values) > _V3_FIXED and values[-1] == _DEFAULTS[len(values) - 1 - _V3_FIXED]:
            values.pop()
        # orjson's result keeps a ~4 KB allocation whatever its length; a copy is exactly as long as it needs
        # to be, which is what an in-flight entry should cost (``banditroute bench scale``).
        return compact(orjson.dumps(values))

    @classmethod
    def decode(cls, raw: bytes, request_id: str | None = None) -> Pending:
        """Any format: 3 (see :meth:`encode`; ``request_id`` restores an implied decision id), 2 (the same
        without the decision offset) or the plain 17-field array written before them."""
        v = orjson.loads(raw)
        version = v[0] if v and not isinstance(v[0], bool) else None
        if version in (2, 3):
            fixed = _V3_FIXED if version == 3 else _V3_FIXED - 1
            dec_off = v[fixed - 1] if version == 3 else -1
            rest = v[fixed:] + list(_DEFAULTS[len(v) - fixed :])
            decision_id = v[1] if v[1] is not None else decision_id_for(request_id or "")
            entry = cls(
                decision_id,
                v[2] if v[2] is not None else v[3],
                v[3],
                v[4],
                v[5],
                tuple(v[6]),
                v[7],
                v[8],
                v[9] if v[9] is not None else DEFAULT_POLICY,
                v[10] / 1000.0,
                *rest,
            )
            entry.dec_off = dec_off
            return entry
        names = [f.name for f in fields(cls)][: len(v)]  # the plain array had no dec_off
        return cls(**{**dict(zip(names, v, strict=True)), "fallbacks": tuple(v[5])})


def encode_fresh(served: Served, deadline_ms: int, dec_off: int) -> bytes:
    """``Pending(...).encode(request_id)`` of a fresh entry (status pending, nothing joined yet) built from
    ``served``, without the dataclass: the join's path for every decision (a test holds the two equal)."""
    request_id, decision_id, task_key, task_type, tenant, model, fallbacks, propensity, version, policy, _ = (
        served
    )
    return compact(
        orjson.dumps(
            [
                3,
                None if decision_id == "d:" + request_id else decision_id,
                None if task_key == task_type else task_key,
                task_type,
                tenant,
                model,
                fallbacks,
                propensity,
                version,
                None if policy == DEFAULT_POLICY else policy,
                deadline_ms,
                dec_off,
            ]
        )
    )


_ROW_MARK = ""
"""Written between the entries of :func:`encode_fresh_many`'s one JSON text, to be split at (``_ROW_SPLIT``)."""
_ROW_SPLIT = b',"",'

_NATIVE_ENTRIES: Callable[..., list[bytes] | None] | None = getattr(native.loaded(), "fresh_entries", None)
""":func:`encode_fresh_many`'s entries written in C (``_native.fresh_entries``) when the extension is there and
every value is of the kinds it writes itself (plain ASCII strs, an exact float, ints in int64); else None, and the
Python code below writes them."""


def encode_fresh_many(
    decisions: list[tuple[int, int, Served]], deadline_ms: Mapping[str, int]
) -> list[bytes]:
    """:func:`encode_fresh` of each ``(partition, offset, served)``, with its task type's ``deadline_ms``: one
    JSON text of them all, split into the entries (each as long as it needs to be, as :func:`compact` makes it).
    Sound whatever the strings hold: the marker written between two entries (``,"",``; short, so the split needs
    no preprocessing) holds no bracket, so no occurrence of it spans an entry's end, and a split into more parts
    than entries (a string holding the marker) encodes them one by one instead."""
    if _NATIVE_ENTRIES is not None:
        made = _NATIVE_ENTRIES(decisions, deadline_ms, DEFAULT_POLICY, orjson.dumps)
        if made is not None:
            return made
    default = DEFAULT_POLICY
    rows = [
        [
            3,
            None if decision_id == "d:" + request_id else decision_id,
            None if task_key == task_type else task_key,
            task_type,
            tenant,
            model,
            fallbacks,
            propensity,
            version,
            None if policy == default else policy,
            deadline_ms[task_type],
            offset,
        ]
        for _partition, offset, (
            request_id,
            decision_id,
            task_key,
            task_type,
            tenant,
            model,
            fallbacks,
            propensity,
            version,
            policy,
            _capped,
        ) in decisions
    ]
    if not rows:
        return []
    listed: list[Any] = [_ROW_MARK] * (2 * len(rows) - 1)
    listed[::2] = rows
    parts = orjson.dumps(listed).split(_ROW_SPLIT)  # [[row],[row],...,[row]]
    if len(parts) != len(rows):
        return [compact(orjson.dumps(row)) for row in rows]
    parts[0] = parts[0][1:]
    parts[-1] = parts[-1][:-1]
    return parts


_V3_FIXED = 12  # format marker + the eleven fields every entry has (through the decision offset)
_DEFAULTS: tuple[Any, ...] = (PENDING, -1, -1, None, -1, -1, None)  # status .. outcome


def contains_of(mapping: Mapping[str, Any]) -> Callable[[object], bool]:
    """``key in mapping`` as one callable: the mapping's own ``contains()`` where it has one (a quicker way
    to its store, see :class:`PendingStore`), else its ``__contains__``."""
    own = getattr(mapping, "contains", None)
    return own() if own is not None else mapping.__contains__


def disjoint_of(mapping: Mapping[str, Any]) -> Callable[[Collection[str]], bool]:
    """``not any(key in mapping for key in keys)`` as one callable: the mapping's own ``disjoint()`` where it has
    one (the join's table, ``kafka.staged.StagedTable``), a dict's key view's ``isdisjoint`` (C), else one lookup
    per key."""
    own = getattr(mapping, "disjoint", None)
    if own is not None:
        disjoint: Callable[[Collection[str]], bool] = own()
        return disjoint
    if type(mapping) is dict:
        return mapping.keys().isdisjoint
    contains = mapping.__contains__
    return lambda keys: not any(map(contains, keys))


_NATIVE_HOLD: Callable[[dict[str, bytes], list[str], list[bytes]], bool | None] | None = getattr(
    native.loaded(), "hold_new", None
)
""":meth:`PendingStore.hold_new`'s check and insertion as one look-up per key, in C, when the extension is there
(it answers None, having done nothing, for keys that are not all exact strs: the Python path takes those)."""


class PendingStore(MutableMapping[str, bytes]):
    """The join's entries: fresh pending ones in memory only (:meth:`hold`; the ``decisions`` topic is their
    durable record, read again after a restart or a rebalance), resolved ones (joined, expired) in ``durable``
    (the changelogged table) through ordinary writes. Reads see both."""

    def __init__(self, durable: MutableMapping[str, bytes]) -> None:
        self.held: dict[str, bytes] = {}
        self.durable = durable
        self.hold: Callable[[str, bytes], None] = self.held.__setitem__
        """Keep a fresh pending entry in memory only: the held dict's own ``__setitem__`` (no Python call per
        decision; ``held`` is only ever cleared, never replaced)."""

    def contains(self) -> Callable[[object], bool]:
        """``key in self`` as one callable (see :func:`contains_of`); take it again for every batch."""
        held, durable = self.held, contains_of(self.durable)
        return lambda key: key in held or durable(key)

    def hold_new(self, keys: list[str], unique: Collection[str], values: list[bytes]) -> bool:
        """:attr:`hold` of each key and value (``unique``: the same keys, none twice), if none of the keys is in
        ``self`` yet: True; else False, nothing changed. ``values`` must be new objects (see ``_native.hold_new``).

        Each key is looked up in the held dict once, by the insertion itself (``_native.hold_new``), not once to
        check and once to insert: the held dict is the join's largest (every decision awaiting feedback), so a
        look-up there is mostly a cache miss."""
        if not disjoint_of(self.durable)(unique):
            return False
        if _NATIVE_HOLD is not None:
            held_all = _NATIVE_HOLD(self.held, keys, values)
            if held_all is not None:
                return held_all
        held = self.held
        if not held.keys().isdisjoint(unique):
            return False
        held.update(zip(keys, values, strict=True))
        return True

    def get(self, key: str, default: Any = None) -> Any:
        value = self.held.get(key)
        if value is None:
            return self.durable.get(key, default)
        return value

    def __getitem__(self, key: str) -> bytes:
        value = self.held.get(key)
        return self.durable[key] if value is None else value

    def __setitem__(self, key: str, value: bytes) -> None:
        self.held.pop(key, None)
        self.durable[key] = value

    def __delitem__(self, key: str) -> None:
        if self.held.pop(key, None) is None:
            del self.durable[key]

    def __contains__(self, key: object) -> bool:
        return key in self.held or key in self.durable

    def __iter__(self) -> Iterator[str]:
        return iter([*self.held, *self.durable])

    def __len__(self) -> int:
        return len(self.held) + len(self.durable)


class OffsetWindow:
    """The offsets of one partition's unresolved decisions: one byte per offset from the oldest one on, so the
    oldest unresolved offset (what the join commits) is known without a per-entry index."""

    __slots__ = ("base", "start", "flags", "count")

    def __init__(self) -> None:
        self.base = 0  # offset of flags[0]
        self.start = 0  # flags[:start] are all clear
        self.flags = bytearray()
        self.count = 0

    def add(self, offset: int) -> None:
        flags = self.flags
        if self.count and offset - self.base == len(
            flags
        ):  # the usual case: the next offset of the partition
            flags.append(1)
            self.count += 1
            return
        if self.count == 0:
            self.base, self.start, self.flags = offset, 0, bytearray(1)
        elif offset < self.base:
            self.flags[0:0] = bytes(self.base - offset)
            self.base, self.start = offset, 0
        i = offset - self.base
        if i >= len(self.flags):
            self.flags.extend(bytes(i + 1 - len(self.flags)))
        if not self.flags[i]:
            self.flags[i] = 1
            self.count += 1
            self.start = min(self.start, i)

    def add_many(self, offsets: list[int]) -> None:
        """:meth:`add` of each offset, in order; a run of consecutive offsets after every offset held (the
        handoff's usual case) in one step."""
        n = len(offsets)
        first = offsets[0] if n else 0
        end = self.base + len(self.flags)
        if n and (self.count == 0 or first >= end) and offsets == list(range(first, first + n)):
            if self.count == 0:
                self.base, self.start, self.flags = first, 0, bytearray(b"\x01" * n)
            else:
                self.flags.extend(bytes(first - end))
                self.flags.extend(b"\x01" * n)
            self.count += n
            return
        for offset in offsets:
            self.add(offset)

    def remove(self, offset: int) -> None:
        i = offset - self.base
        if self.count == 0 or not 0 <= i < len(self.flags) or not self.flags[i]:
            return
        self.flags[i] = 0
        self.count -= 1
        if self.count == 0:
            self.flags, self.start = bytearray(), 0
        elif i == self.start:
            self.start = self.flags.index(1, i)
            if self.start > 4096 and self.start * 2 > len(self.flags):  # let go of the cleared head
                del self.flags[: self.start]
                self.base += self.start
                self.start = 0

    def oldest(self) -> int | None:
        """The oldest unresolved offset, or None when every decision is resolved."""
        return self.base + self.start if self.count else None
