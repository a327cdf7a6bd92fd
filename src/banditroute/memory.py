"""Keep the worker's resident memory from ratcheting up after load peaks (glibc only; a no-op elsewhere).

A soak on a loaded 2-core machine showed RSS rising in steps, each at a consumer-lag peak, and flat in between,
while the live Python heap (tracemalloc) did not grow: batches and buffers grow with a backlog, are freed
afterwards, and glibc keeps the freed memory, spread over one malloc arena per thread. Two standard remedies:

* :func:`limit_arenas` caps the arenas at two (``mallopt(M_ARENA_MAX, 2)``, what ``MALLOC_ARENA_MAX=2`` does),
  before the worker starts its threads;
* :func:`fix_mmap_threshold` keeps blocks of 256 KiB and more (fetch responses, record batches) in their own
  mappings, returned to the kernel when freed (``mallopt(M_MMAP_THRESHOLD, ...)``). glibc otherwise raises the
  threshold each time such a block is freed, up to 32 MiB, and later ones land in the heap, where they leave
  holes: in the 200,000-request flood test the heap grew to 124 MB with 84 MB of it free, and RSS peaked
  50-80 MiB above the worker's live memory;
* :func:`trim` returns free memory at the top of the heaps and whole free pages to the kernel
  (``malloc_trim(0)``); the worker calls it every ten seconds (a few milliseconds; a flood left 30 MB free in the heap between minutes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from functools import cache

log = logging.getLogger("banditroute.memory")

M_ARENA_MAX = -8  # glibc's mallopt parameter numbers
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024
TRIM_INTERVAL_S = 10.0


@cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only: musl has no malloc_trim
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (call before starting threads); returns whether it applied."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Serve blocks of ``threshold`` bytes and more by mmap, always (setting it turns glibc's dynamic threshold
    off); returns whether it applied."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))


def trim() -> bool:
    """Give free heap memory back to the kernel; returns whether any was released."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))


__all__ = ["TRIM_INTERVAL_S", "fix_mmap_threshold", "limit_arenas", "trim"]
