"""Compact binary encoding of a TaskState for the Kafka changelog (about 2.5 KB for 15 models).

Layout (little endian): magic ``BR``, format byte, a fixed header of scalars, length-prefixed UTF-8 model
names, the ``applied`` watermark pairs, then the float64 statistics matrix. float64 is kept so decoding gives
back bit-identical posteriors; the matrix is ~85 % of the size and the target is met without lossy floats.

The budget offset (``TaskState.budget_offset_usd``, non-zero only where task types share a budget) travels as
one more watermark pair under the reserved source ``BUDGET_OFFSET_SOURCE`` (its float64 bits as the offset):
a worker or local-mode client of an earlier version reads such a state as before (it looks up watermarks by
its own, non-negative, sources only), decides on its own budget, and keeps the pair when it learns. A format
of its own made every earlier reader reject those states, and an earlier learner stop learning the whole
partition (found in review), so a rolling upgrade or a rollback stalled.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from banditroute.core.state import N_COLUMNS, TaskState

MAGIC = b"BR"
FORMAT_VERSION = 1
FORMAT_WITH_OFFSET = 2
"""Read, never written: the budget offset in the header (main for a few hours on 2026-12-01, unreleased)."""
BUDGET_OFFSET_SOURCE = -0x42554447
"""The reserved watermark source that carries the budget offset (watermark sources are never negative)."""
_HEADER = struct.Struct("<2sBHBQQdddddQH")
_OFFSET = struct.Struct("<d")
_BITS = struct.Struct("<q")
_APPLIED = struct.Struct("<iq")


def encode_state(state: TaskState) -> bytes:
    """Serialise everything needed to continue learning and deciding (the derived cache is dropped)."""
    applied = dict(state.applied)  # (decoded states never hold the reserved source: it is the offset)
    if state.budget_offset_usd:
        (applied[BUDGET_OFFSET_SOURCE],) = _BITS.unpack(_OFFSET.pack(state.budget_offset_usd))
    parts = [
        _HEADER.pack(
            MAGIC,
            FORMAT_VERSION,
            len(state.names),
            N_COLUMNS,
            state.version,
            state.events,
            state.scale,
            state.dual,
            state.spend_rate_per_min,
            state.spend_at_s,
            state.spend_total_usd,
            state.spend_calls,
            len(applied),
        )
    ]
    for name in state.names:
        raw = name.encode()
        if len(raw) > 255:
            raise ValueError(f"model name too long to encode: {name[:40]!r}...")
        parts.append(bytes([len(raw)]) + raw)
    parts.extend(_APPLIED.pack(p, o) for p, o in sorted(applied.items()))
    parts.append(np.ascontiguousarray(state.stats, dtype="<f8").tobytes())
    return b"".join(parts)


def decode_state(data: bytes) -> TaskState:
    """Inverse of :func:`encode_state`; raises ``ValueError`` on foreign or corrupt data."""
    if len(data) < _HEADER.size:
        raise ValueError("state blob too short")
    (magic, fmt, k, columns, version, events, scale, dual, rate, rate_at, spent, calls, n_applied) = (
        _HEADER.unpack_from(data)
    )
    if magic != MAGIC or fmt not in (FORMAT_VERSION, FORMAT_WITH_OFFSET) or columns != N_COLUMNS:
        raise ValueError(f"not a banditroute state blob (magic={magic!r}, format={fmt}, columns={columns})")
    pos = _HEADER.size
    budget_offset = 0.0
    if fmt == FORMAT_WITH_OFFSET:
        if len(data) < pos + _OFFSET.size:
            raise ValueError("corrupt state blob: no budget offset")
        (budget_offset,) = _OFFSET.unpack_from(data, pos)
        pos += _OFFSET.size
    names = []
    try:
        for _ in range(k):
            length = data[pos]
            names.append(data[pos + 1 : pos + 1 + length].decode())
            pos += 1 + length
        applied = {}
        for _ in range(n_applied):
            partition, offset = _APPLIED.unpack_from(data, pos)
            applied[partition] = offset
            pos += _APPLIED.size
    except (IndexError, UnicodeDecodeError, struct.error) as exc:
        raise ValueError(f"corrupt state blob: {exc}") from exc
    carried = applied.pop(BUDGET_OFFSET_SOURCE, None)
    if carried is not None:
        (budget_offset,) = _OFFSET.unpack(_BITS.pack(carried))
        if not math.isfinite(budget_offset):
            raise ValueError(f"corrupt state blob: budget offset {budget_offset}")
    size = k * N_COLUMNS * 8
    if len(data) - pos != size:
        raise ValueError(f"corrupt state blob: expected {size} bytes of statistics, found {len(data) - pos}")
    stats = (
        np.frombuffer(data, dtype="<f8", count=k * N_COLUMNS, offset=pos)
        .astype(np.float64)
        .reshape(k, N_COLUMNS)
    )
    return TaskState(
        names=tuple(names),
        stats=stats,
        scale=scale,
        version=version,
        events=events,
        dual=dual,
        spend_rate_per_min=rate,
        spend_at_s=rate_at,
        spend_total_usd=spent,
        spend_calls=calls,
        budget_offset_usd=budget_offset,
        applied=applied,
    )
