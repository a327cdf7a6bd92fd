"""The whole worker's cost per request, thread by thread, on the e2e drain (issue #16, e2e19).

``python -m banditroute.bench.worker_instr --bootstrap HOST:PORT [--requests N] [--idle-s S] [--callgrind DIR]``

**Native (default).** As ``bench e2e``'s router side: ``N`` requests (its request text, no feedback) are
produced first, then the real ``banditroute worker`` starts on them (web off, 4 partitions, its own prefix and
data folder). Per thread, from ``/proc/<pid>/task/<tid>/stat``: user and system CPU from the first decision
fetched until the worker is idle again (the join caught up), then the thread's idle rate over ``S`` seconds
with nothing to do. Per request: ``raw`` (all of the drain's CPU), ``work`` (``raw`` less the idle rate over
the drain's time: timers, empty fetches, heartbeats) and ``sys`` (the kernel's share of ``raw``: socket sends
and receives). Threads are named by ``py-spy dump`` when it is installed (the ``bench`` extra), else by
tid. ``/proc`` counts in clock ticks (10 ms): use ``N`` >= 50,000. CPU time moves with the machine's load
(caches, hyper-threads); alternate versions and compare medians.

**Instructions (``--callgrind DIR``).** The same drain under ``valgrind --tool=callgrind --separate-threads=yes``
(instrumentation off while the worker starts; on, zeroed, dumped around an idle window of ``S`` seconds and
around the drain: ``DIR/callgrind.out.<pid>.<dump>-<thread>``). The worker runs ~100-200 times slower there, so
its time-driven work (timers, the decisions reader's end-offset polls, empty fetches: ~50 M instructions a
second) weighs that much more per request than natively, and it shrinks while the drain holds valgrind's one
core (the main thread's instructions per second stayed at its idle rate in a drain): the drain's instructions
less the idle rate are a lower bound of the per-request work, the raw ones an upper bound, and neither repeats
under another load. The decide loop's ship slice and the decisions reader's hold are stretched by
``--slowdown`` so that a step ships as many decisions at once as natively. Use it for *where* instructions go
(``callgrind_annotate`` of a thread's drain dump), and ``python -m banditroute.bench.decide_path`` under
callgrind (no clock, no broker: repeats to a few instructions) for A/B counts of the decide and join path.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from banditroute.bench.common import (
    BenchWorker,
    cpu_seconds,
    create_topics,
    delete_topics,
    machine,
    new_prefix,
    wait_idle,
)
from banditroute.bench.e2e import Collector, prefill_from

CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 120.0
VALGRIND = ("valgrind", "--tool=callgrind", "--separate-threads=yes", "--instr-atstart=no", "--dump-line=no")
SLOWDOWN = 200.0
"""How many times slower the worker runs under callgrind than natively (roughly): its ship slice and the decisions
reader's hold are that much longer there (see the module docstring)."""
LAUNCH = (
    "import sys\n"
    "from banditroute.kafka import decide_service, partition_reader\n"
    "decide_service.SHIP_SLICE_S *= {slowdown}\n"
    "partition_reader.HOLD_S *= {slowdown}\n"
    "sys.argv = ['banditroute', 'worker']\n"
    "from banditroute.cli import main\n"
    "main()\n"
)


def thread_times(pid: int) -> dict[int, tuple[float, float, int]]:
    """Per thread of ``pid``: (user, system) CPU seconds and minor page faults so far (threads that ended are
    left out)."""
    out: dict[int, tuple[float, float, int]] = {}
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            with open(os.path.join(task, "stat"), encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(os.path.basename(task))] = (
            int(fields[11]) / CLK_TCK,
            int(fields[12]) / CLK_TCK,
            int(fields[7]),
        )
    return out


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by native id, from ``py-spy dump`` (empty without py-spy, or if it fails)."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
    if spy is None:
        return {}
    try:
        text = subprocess.run(
            [spy, "dump", "--pid", str(pid), "--nonblocking"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {
        int(tid): name
        for tid, name in re.findall(r'^Thread (?:0x[0-9a-fA-F]+|(\d+))[^"\n]*"([^"]*)"', text, re.M)
        if tid
    }


def per_request(
    before: dict[int, tuple[float, float, int]],
    after: dict[int, tuple[float, float, int]],
    idle: dict[int, tuple[float, float, int]],
    idle_s: float,
    busy_s: float,
    requests: int,
) -> dict[int, dict[str, float]]:
    """Per thread: µs of CPU per request over the drain (``raw``), less the thread's idle rate over the drain's
    ``busy_s`` (``work``), the system share of ``raw`` (``sys``), minor page faults per request (``faults``),
    and the idle rate (% of a core).

    ``before``/``after`` are :func:`thread_times` at the drain's ends, ``idle`` at the end of ``idle_s`` more
    seconds with nothing to do; a thread that started during the drain counts from zero."""
    rows: dict[int, dict[str, float]] = {}
    for tid, (user, system, faults) in after.items():
        user0, system0, faults0 = before.get(tid, (0.0, 0.0, 0))
        used = user + system - user0 - system0
        user1, system1, _ = idle.get(tid, (user, system, faults))
        rate = (user1 + system1 - user - system) / idle_s if idle_s > 0 else 0.0
        rows[tid] = {
            "raw": used / requests * 1e6,
            "work": (used - rate * busy_s) / requests * 1e6,
            "sys": (system - system0) / requests * 1e6,
            "faults": (faults - faults0) / requests,
            "idle_pct": rate * 100.0,
        }
    return rows


def _log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _start_under_callgrind(out: Path, env: dict[str, str], slowdown: float) -> subprocess.Popen[bytes]:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "worker.log", "ab") as log:
        return subprocess.Popen(
            [
                *VALGRIND,
                f"--callgrind-out-file={out}/callgrind.out.%p",
                sys.executable,
                "-c",
                LAUNCH.format(slowdown=slowdown),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


async def _started(proc: subprocess.Popen[bytes], log_path: Path, collector: Collector) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while collector.count == 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the worker did not decide:\n" + _log_tail(log_path))
        await asyncio.sleep(0.005)


async def native(bootstrap: str, requests: int, idle_s: float) -> dict[str, Any]:
    """The native drain (see the module docstring)."""
    prefix = new_prefix("cost")
    requests_topic, decisions_topic = f"{prefix}.requests", f"{prefix}.decisions"
    await create_topics(bootstrap, [requests_topic, decisions_topic])
    worker = BenchWorker(bootstrap, prefix)
    collector = Collector(bootstrap, decisions_topic)
    try:
        await collector.start()
        await prefill_from(bootstrap, requests_topic, requests, "fill", 1)
        worker.start()
        assert worker.proc is not None and worker.pid is not None
        await _started(worker.proc, worker.log_path, collector)
        before, t0 = thread_times(worker.pid), time.perf_counter()
        await collector.wait_count(requests, START_TIMEOUT_S, worker.alive)
        decided = time.perf_counter()
        await wait_idle(worker.pid, strict=True)
        after, t1 = thread_times(worker.pid), time.perf_counter()
        await asyncio.sleep(idle_s)
        idle, t2 = thread_times(worker.pid), time.perf_counter()
        names = thread_names(worker.pid)
        pid = worker.pid
    finally:
        worker.stop()
        await collector.stop()
        await delete_topics(bootstrap, prefix)
    rows = per_request(before, after, idle, t2 - t1, t1 - t0, requests)
    threads = {
        names.get(tid, "main" if tid == pid else f"tid {tid}"): row
        for tid, row in sorted(rows.items(), key=lambda kv: -kv[1]["raw"])
    }
    return {
        "requests": requests,
        "decisions_per_s": requests / max(decided - t0, 1e-6),
        "busy_s": t1 - t0,
        "us_per_request": {k: sum(r[k] for r in rows.values()) for k in ("raw", "work", "sys")},
        "faults_per_request": sum(r["faults"] for r in rows.values()),
        "idle_pct": sum(r["idle_pct"] for r in rows.values()),
        "threads": threads,
        "machine": machine(bootstrap),
    }


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=600)


def dump_total(path: str) -> int:
    """The instructions (Ir) of one callgrind dump file."""
    with open(path, encoding="utf-8", errors="replace") as dump:
        for line in dump:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    return 0


async def callgrind(
    bootstrap: str, requests: int, out: Path, idle_s: float, slowdown: float = SLOWDOWN
) -> dict[str, Any]:
    """The drain under callgrind (see the module docstring)."""
    prefix = new_prefix("instr")
    requests_topic, decisions_topic = f"{prefix}.requests", f"{prefix}.decisions"
    await create_topics(bootstrap, [requests_topic, decisions_topic])
    env = {**BenchWorker(bootstrap, prefix).env(), "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"}
    log_path = out / "worker.log"
    proc = _start_under_callgrind(out, env, slowdown)
    collector = Collector(bootstrap, decisions_topic)
    try:
        await collector.start()
        deadline = time.monotonic() + 1800
        while "worker ready" not in _log_tail(log_path, 10**8):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the worker did not get ready:\n" + _log_tail(log_path))
            await asyncio.sleep(1.0)
        # valgrind keeps a third of a core busy even idle (the JIT): idle is below that over 2 s
        await wait_idle(proc.pid, below=0.35, window_s=2.0, timeout_s=600, strict=True)
        _control(proc.pid, "-i", "on")
        _control(proc.pid, "-z")
        t0, c0 = time.perf_counter(), cpu_seconds(proc.pid)
        await asyncio.sleep(idle_s)
        _control(proc.pid, "-d", "idle")
        idle_wall = time.perf_counter() - t0
        idle_cores = (cpu_seconds(proc.pid) - c0) / idle_wall
        _control(proc.pid, "-z")
        t1 = time.perf_counter()
        await prefill_from(bootstrap, requests_topic, requests, "fill", 1)
        await collector.wait_count(requests, 3600, lambda: proc.poll() is None)
        await wait_idle(proc.pid, below=idle_cores + 0.1, window_s=2.0, timeout_s=1800, strict=True)
        _control(proc.pid, "-d", "drain")
        drain_wall = time.perf_counter() - t1
    finally:
        await collector.stop()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        await delete_topics(bootstrap, prefix)
    threads: dict[str, dict[str, Any]] = {}
    for kind, dump, wall in (("idle", 1, idle_wall), ("drain", 2, drain_wall)):
        for path in sorted(glob.glob(str(out / f"callgrind.out.{proc.pid}.{dump}-*"))):
            row = threads.setdefault("thread " + path.rsplit("-", 1)[1], {})
            row[kind] = dump_total(path)
            row[f"{kind}_per_s"] = row[kind] / wall
            row[f"{kind}_file"] = os.path.basename(path)
    for row in threads.values():
        drain = row.get("drain", 0)
        row["per_request_raw"] = drain / requests
        row["per_request_less_idle"] = (drain - row.get("idle_per_s", 0.0) * drain_wall) / requests
    return {
        "requests": requests,
        "idle_s": idle_wall,
        "drain_wall_s": drain_wall,
        "per_request_raw": sum(r["per_request_raw"] for r in threads.values()),
        "per_request_less_idle": sum(r["per_request_less_idle"] for r in threads.values()),
        "idle_per_s": sum(r.get("idle_per_s", 0.0) for r in threads.values()),
        "threads": threads,
        "slowdown": slowdown,
        "machine": machine(bootstrap),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--requests", type=int, default=60_000)
    parser.add_argument("--idle-s", type=float, default=10.0, help="seconds of idle measured after the drain")
    parser.add_argument("--callgrind", type=Path, default=None, help="folder: count instructions instead")
    parser.add_argument("--slowdown", type=float, default=SLOWDOWN, help="with --callgrind (see above)")
    args = parser.parse_args(argv)
    if args.callgrind is not None:
        result = asyncio.run(
            callgrind(args.bootstrap, args.requests, args.callgrind, args.idle_s, args.slowdown)
        )
    else:
        result = asyncio.run(native(args.bootstrap, args.requests, args.idle_s))
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
