"""The worker's GIL switch interval (:mod:`banditroute.switch_interval`)."""

from __future__ import annotations

import sys

from banditroute.switch_interval import WORKER_SWITCH_INTERVAL_S, tune_switch_interval


def test_tune_sets_the_worker_interval_and_returns_the_previous_one() -> None:
    original = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.004)
        assert tune_switch_interval() == 0.004
        assert abs(sys.getswitchinterval() - WORKER_SWITCH_INTERVAL_S) < 1e-9
        assert WORKER_SWITCH_INTERVAL_S < 0.005  # shorter than CPython's default, or it does nothing
    finally:
        sys.setswitchinterval(original)
