"""The C allocator's padding for a worker process (glibc only).

A drained worker frees and allocates record batches, fetch buffers and decision texts in bursts. With glibc's
defaults, a heap's top is given back to the kernel as soon as 128 KiB (later a little more) are free there, and the
next burst touches the same pages again: each is a page fault, work the kernel does for the process. Measured with
``python -m banditroute.bench.worker_instr --requests 200000`` on the 2-core machine (docs/benchmarks.md), alternated
in one sitting: 0.19-0.30 page faults per drained request with the defaults, 0.08-0.14 with a 16 MiB pad, 0.06-0.08
with 64 MiB; the kernel's time per request fell from 0.9-1.55 to 0.45-1.0 us.

:func:`tune_malloc` sets ``M_TOP_PAD`` (what a heap keeps, or asks for beyond a request, at its top) with
``mallopt``. It runs before the worker starts its own threads. A thread's heap is made, with the pad as it is then,
at the thread's first allocation, and a heap made earlier is handed on to later threads: set after the
``import-scipy-special`` helper had started, the pad left the decide thread's faults where they were. (numpy's
OpenBLAS thread exists before; it allocates little.) The cost is at most the pad per heap, in memory that stays
resident once touched; it does not grow with time (the drained worker's peak RSS: 164-165 MB before, 174-178 MB
after).

Setting the pad also fixes glibc's mmap threshold at 128 KiB (glibc otherwise raises it after a large block is
freed), so every larger block is mapped and unmapped afresh. The figures above include that; fixing the threshold
at 32 MiB as well (``MALLOC_MMAP_THRESHOLD_``) changed neither the faults nor the CPU per request (three alternated
runs). Only ``banditroute worker`` sets the pad, and not where the environment already does (``MALLOC_TOP_PAD_``,
or ``glibc.malloc.top_pad`` in ``GLIBC_TUNABLES``), nor under another C library.
"""

from __future__ import annotations

import ctypes
import os
import sys

WORKER_TOP_PAD = 16 * 1024 * 1024
"""Bytes a heap keeps at its top (glibc's default: 128 KiB)."""
M_TOP_PAD = -2
"""``mallopt``'s parameter number for the top pad (glibc's malloc.h)."""


def tune_malloc(top_pad: int = WORKER_TOP_PAD) -> bool:
    """Set glibc's top pad; returns whether it was set (False: not glibc, or the environment sets it)."""
    if (
        not sys.platform.startswith("linux")
        or "MALLOC_TOP_PAD_" in os.environ
        or "glibc.malloc.top_pad" in os.environ.get("GLIBC_TUNABLES", "")
    ):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc's own symbol: musl's mallopt does nothing
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_TOP_PAD, top_pad))


__all__ = ["M_TOP_PAD", "WORKER_TOP_PAD", "tune_malloc"]
