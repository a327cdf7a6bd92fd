"""The allocator hooks of banditroute.memory: they run here (glibc) and are harmless no-ops elsewhere."""

from __future__ import annotations

import sys

from banditroute import memory


def test_trim_and_arena_limit_apply_on_glibc() -> None:
    applied = memory.limit_arenas(2)
    mapped = memory.fix_mmap_threshold()
    trimmed = memory.trim()
    assert isinstance(trimmed, bool)
    if sys.platform.startswith("linux") and memory._libc() is not None:
        assert applied and mapped  # mallopt accepts M_ARENA_MAX and M_MMAP_THRESHOLD
    else:
        assert not applied and not mapped and not trimmed
