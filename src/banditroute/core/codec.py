"""Compact binary encoding of a TaskState for the Kafka changelog (about 2.5 KB for 15 models).

Layout (little endian): magic ``BR``, format byte, a fixed header of scalars (format 2: then the budget offset),
length-prefixed UTF-8 model names, the ``applied`` watermark pairs, then the float64 statistics matrix. A state
without a budget offset (no budget shared over task types) is written in format 1, which workers of every
version read. float64 is kept so decoding gives
back bit-identical posteriors; the matrix is ~85 % of the size and the target is met without lossy floats.
"""

from __future__ import annotations

import struct

import numpy as np

from banditroute.core.state import N_COLUMNS, TaskState

MAGIC = b"BR"
FORMAT_VERSION = 1
FORMAT_WITH_OFFSET = 2
_HEADER = struct.Struct("<2sBHBQQdddddQH")
_OFFSET = struct.Struct("<d")
_APPLIED = struct.Struct("<iq")


def encode_state(state: TaskState) -> bytes:
    """Serialise everything needed to continue learning and deciding (the derived cache is dropped)."""
    offset = state.budget_offset_usd
    parts = [
        _HEADER.pack(
            MAGIC,
            FORMAT_WITH_OFFSET if offset else FORMAT_VERSION,
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
            len(state.applied),
        )
    ]
    if offset:
        parts.append(_OFFSET.pack(offset))
    for name in state.names:
        raw = name.encode()
        if len(raw) > 255:
            raise ValueError(f"model name too long to encode: {name[:40]!r}...")
        parts.append(bytes([len(raw)]) + raw)
    parts.extend(_APPLIED.pack(p, o) for p, o in sorted(state.applied.items()))
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
