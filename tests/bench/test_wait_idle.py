"""``wait_idle_cpu``: the CPU a process spent up to the idle window that ended its work (a real child process)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from banditroute.bench.common import cpu_seconds, wait_idle_cpu

BURN = (
    "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\ntime.sleep(60)\n"
)


def test_the_cpu_before_the_idle_window_leaves_the_window_out() -> None:
    child = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        waited, cpu_from = asyncio.run(wait_idle_cpu(child.pid, timeout_s=60.0, strict=True))
        total = cpu_seconds(child.pid)
        assert waited >= 0.5  # at least one whole window
        assert 0.25 <= cpu_from <= total  # the burn (and the interpreter's start), not more than in all
        assert total - cpu_from < 0.15 * 0.5 + 0.02  # the idle window itself: under the idle bound
    finally:
        child.kill()
        child.wait()
