"""The GIL switch interval of a worker process.

A worker runs two busy threads: the decide loop on an event loop of its own (:mod:`banditroute.kafka.own_thread`)
and faust's loop (join, learner, state, web); faust's consumer thread (catalog, table recovery) is mostly idle. When
a thread's socket wait ends while the other thread computes, it gets the GIL back only once the other is asked to
drop it: after CPython's switch interval, 5 ms by default. The decide loop waits on sockets several times per polled
batch (fetch, send, acknowledgement, commit), so under feedback load each of those waits could cost up to 5 ms, on
the request's way through the worker.

Measured with ``banditroute bench e2e --seconds 2 -n 80000`` on the loaded 2-core machine, 5 pairs alternated in one
sitting (docs/benchmarks.md, item 4): sustained decisions/s 5,584 / 5,361 / 7,596 / 5,184 / 15,029 with
5 ms against 12,850 / 14,079 / 14,271 / 6,688 / 12,442 with 0.5 ms, and the latency added over the relay at 5,000/s
(p99) 265 / 387 / 208 / 1,773 / 202 ms against 90 / -138 / 28 / 4 / -27 ms (negative: the relay's run met more of
the machine's other load); CPU per request unchanged within the noise. The cost, a GIL hand-over every 0.5 ms at
most while both threads compute, did not show. Only ``banditroute worker`` sets it: the SDK never changes the
interval of its user's process.
"""

from __future__ import annotations

import sys

WORKER_SWITCH_INTERVAL_S = 0.0005
"""Seconds a thread may hold the GIL while another waits for it (CPython's default: 0.005)."""


def tune_switch_interval(interval_s: float = WORKER_SWITCH_INTERVAL_S) -> float:
    """Set the switch interval; returns the previous one."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(interval_s)
    return before


__all__ = ["WORKER_SWITCH_INTERVAL_S", "tune_switch_interval"]
