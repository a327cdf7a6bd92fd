"""The optional C extension (``_native.c``, built at install when there is a C compiler; issue #16).

It holds three pieces of the decide loop's work per request that cost far less in C than in Python: a Kafka
record batch writer (``kafka/native_batch.py``), the duplicate-id check's tables (``codec.DuplicateIdCheck``) and
the match of the common request texts (``kafka/fast_request.py``); and the decide loop's run over the common
requests of its kept hot answer (``lane``: ``DecideService._run`` and ``DecideLogic.lane_parts``), which puts
those together with the decision's text, the record append and the join's entry, with no Python frame per
request. Each has the Python (or aiokafka) code it replaces as its fallback, and tests hold the two to the same
results.
Installed without a compiler, or with ``BANDITROUTE_NATIVE=0`` in the environment, only the fallbacks run.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

DISABLE_ENV = "BANDITROUTE_NATIVE"
"""Set to ``0`` to run without the extension (read when a user of it is made)."""

_module: ModuleType | None
try:  # by name: the import linter reads source files, and the extension has none (its stub is _native.pyi)
    _module = importlib.import_module("banditroute._native")
except ImportError:  # built without a C compiler
    _module = None


def loaded() -> ModuleType | None:
    """The extension, or None when it was not built or is switched off."""
    if _module is None or os.environ.get(DISABLE_ENV, "1") == "0":
        return None
    return _module


def describe() -> str:
    """Whether the extension runs, and why not, in one line (``banditroute worker --check``)."""
    if _module is None:
        return "not built (no C compiler at install): the Python fallbacks run"
    if loaded() is None:
        return f"built, switched off ({DISABLE_ENV}=0): the Python fallbacks run"
    crc = "the CPU's CRC32 instruction" if _module.HARDWARE_CRC else "a table (no SSE 4.2 here)"
    return (
        "on (record batches, duplicate-id check, request text and the decide loop's common requests in C; "
        f"checksums by {crc})"
    )


__all__ = ["DISABLE_ENV", "describe", "loaded"]
