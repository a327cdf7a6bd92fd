"""The worker's C allocator padding (:mod:`banditroute.malloc_tuning`), each case in a process of its own."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc" or "LD_PRELOAD" in os.environ,
    reason="glibc's own malloc",
)

FREED_AT_TOP = """
import ctypes, os, sys
from banditroute.malloc_tuning import tune_malloc

STATM = os.open("/proc/self/statm", os.O_RDONLY)  # read with no buffer of the C library's on the heap's top

def rss_kb():
    return int(os.pread(STATM, 200, 0).split()[1]) * os.sysconf("SC_PAGESIZE") // 1024

tuned = tune_malloc() if sys.argv[1] == "tuned" else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
blocks = (ctypes.c_void_p * 8192)()  # made first: nothing else of the process lies above the blocks
for i in range(8192):  # 8 MiB at the heap's top, each block below mmap's threshold
    blocks[i] = libc.malloc(1024)
    ctypes.memset(blocks[i], 1, 1024)
full = rss_kb()
for i in range(8192):
    libc.free(blocks[i])
print(tuned, full - rss_kb())
"""


def _freed_kb(mode: str, **env: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", FREED_AT_TOP, mode],
        env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
        | env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return out[0], int(out[1])


def test_the_pad_keeps_a_freed_heap_top_in_memory() -> None:
    tuned, kept_back = _freed_kb("tuned")
    _, given_back = _freed_kb("default")
    assert tuned == "True"
    assert given_back > 6 * 1024, "glibc's defaults give a freed 8 MiB heap top back to the kernel"
    assert kept_back < 1024, f"with the pad, {kept_back} KiB of it went back to the kernel"


@pytest.mark.parametrize(
    "setting", [{"MALLOC_TOP_PAD_": "131072"}, {"GLIBC_TUNABLES": "glibc.malloc.top_pad=131072"}]
)
def test_the_environment_wins(setting: dict[str, str]) -> None:
    tuned, given_back = _freed_kb("tuned", **setting)
    assert tuned == "False"
    assert given_back > 6 * 1024
