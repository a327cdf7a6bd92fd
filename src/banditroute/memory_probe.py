"""Debug hook: where the worker's memory goes (``BANDITROUTE_MEMORY_PROBE=<file>``; off by default).

Appends, every ``PROBE_INTERVAL_S``, one JSON line to the file: RSS, glibc's heap figures, and the sizes of the
worker's structures that grow with traffic (join entries, deadline index, priority lane...). With
``BANDITROUTE_MEMORY_PROBE_TRACE=1`` it also starts :mod:`tracemalloc` when the worker is built and adds the
allocation sites that grew most since the first probe; that costs CPU (every allocation is hooked, the
worker decides ~5x slower) and memory of its own: for investigations, never in production.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("banditroute.memory")

PROBE_ENV = "BANDITROUTE_MEMORY_PROBE"
PROBE_INTERVAL_S = 10.0
TOP = 25


def probe_path() -> Path | None:
    value = os.environ.get(PROBE_ENV)
    return Path(value) if value else None


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def mallinfo() -> dict[str, int]:
    """glibc's heap figures in KiB: arena (from the system, main arena), hblkhd (mmapped), in use, free."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {k: getattr(m, k) // 1024 for k in ("arena", "hblkhd", "uordblks", "fordblks")}


class MemoryProbe:
    """Appends one line per :meth:`probe` call to ``path``."""

    def __init__(self, path: Path, sizes: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self.sizes = sizes
        self.trace = bool(os.environ.get(PROBE_ENV + "_TRACE"))
        if self.trace and not tracemalloc.is_tracing():
            tracemalloc.start(3)
        self._base: tracemalloc.Snapshot | None = None
        self._t0 = time.monotonic()

    async def run(self) -> None:
        """A timer's body (never raises: a probe must not stop the worker)."""
        try:
            self.probe()
        except Exception as exc:  # noqa: BLE001 - a debug hook
            log.warning("memory probe failed: %s", exc)

    def probe(self) -> None:
        top: list[Any] = []
        if self.trace:
            snap = tracemalloc.take_snapshot()
            if self._base is None:
                self._base = snap
            top = snap.compare_to(self._base, "traceback")[:TOP]
        line = {
            "malloc": mallinfo(),
            "t": round(time.monotonic() - self._t0, 1),
            "rss_kib": rss_kib(),
            "traced_kib": tracemalloc.get_traced_memory()[0] // 1024,
            "sizes": self.sizes(),
            "grew": [
                {
                    "kib": s.size_diff // 1024,
                    "n": s.count_diff,
                    "at": [f"{f.filename}:{f.lineno}" for f in s.traceback],
                }
                for s in top
            ],
        }
        with self.path.open("ab") as f:
            f.write(orjson.dumps(line) + b"\n")
