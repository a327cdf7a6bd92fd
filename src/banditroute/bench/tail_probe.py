"""What the slowest requests of a paced level wait for, measured inside the worker (issue #16, e2e20).

``python -m banditroute.bench.tail_probe --bootstrap HOST:PORT [--rate R ...] [--seconds S] [--out DIR]``

The router side of ``bench e2e`` (:func:`banditroute.bench.e2e.measure_side`: the pre-filled drain, then paced
levels at each ``--rate``, or at half the drain's rate when none is given), with three recorders that do not
depend on the machine being quiet:

* **per request** (``BANDITROUTE_BENCH_TRACE``): send time, the decision's record timestamp (set when the decide
  loop appended it) and arrival, so each request's latency splits into *before the decision* (the driver's
  send, the fetch, the wait for and the work of the decide step) and *after it* (the rest of its step, the
  produce request and its acknowledgement, the driver's fetch);
* **inside the worker** (a ``sitecustomize`` on the worker's ``PYTHONPATH`` only, written to ``DIR``): every
  garbage collection (``gc.callbacks``: generation, wall and the collecting thread's CPU time), every decide
  step (wall, the decide thread's CPU time, records polled), the time from a step's hand-off to the committer
  until all its sends are acknowledged, and the calls of ``call_home`` against the caller loop's wake-ups;
* **per thread** (a sampler process, every 10 ms): ``/proc/<pid>/task/<tid>/schedstat``: time on a CPU, time
  runnable but waiting for one (the run queue: other processes, not the GIL) and switches.

The summary (``DIR/summary.json`` and stdout), per level: latency p50/p99 and, for the slowest 1 %, the mean
time before and after the decision and the share of them sent in the level's first second; collections by
generation; the decide and main threads' CPU and run-queue wait in % of the level's wall time and switches per
request; steps (and the decide loop's commits) per second, records per step and a least-squares fit of a step's
decide-thread CPU (``fixed_us + per_record_us`` x records). The sampler and the recorders cost some CPU themselves: compare
versions with the same recorders on, alternated.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.bench.common import BenchWorker, machine
from banditroute.bench.e2e import DRAIN_REQUESTS, ROUTER_ARGS, TRACE_ENV, measure_side

PROBE_ENV = "BANDITROUTE_TAIL_PROBE"
"""The folder the worker's recorders write to (set only for the worker by this module)."""

SITE = r"""
import os, sys
_dir = os.environ.get("BANDITROUTE_TAIL_PROBE")
try:
    _cmd = open("/proc/self/cmdline", "rb").read().split(b"\0")
except OSError:
    _cmd = []
if _dir and b"banditroute" in _cmd and b"worker" in _cmd:
    import gc, json, threading, time
    _gc, _steps, _acks, _calls, _t = [], [], [], [0, 0], [0.0, 0.0]
    _tids = {"main": threading.get_native_id()}  # the worker's main thread imports this

    def _collected(phase, info):
        if phase == "start":
            _t[0], _t[1] = time.time(), time.thread_time()
        else:
            _gc.append((_t[0], time.time() - _t[0], info["generation"], time.thread_time() - _t[1]))

    gc.callbacks.append(_collected)

    def _dump():
        path = os.path.join(_dir, "worker-%d.json" % os.getpid())
        while True:
            time.sleep(1.0)
            record = {"gc": list(_gc), "steps": list(_steps), "acks": list(_acks), "calls": list(_calls), "tids": _tids}
            with open(path + ".tmp", "w") as f:
                json.dump(record, f)
            os.replace(path + ".tmp", path)

    threading.Thread(target=_dump, name="tail-probe-dump", daemon=True).start()
    from banditroute.kafka import decide_service as _ds
    from banditroute.kafka import own_thread as _ot
    _step0, _enqueue0, _home0 = _ds.DecideService._step, _ds.DecideService._enqueue, _ds.OwnThreadLoop.call_home

    async def _step(self, batch, *args, **kwargs):
        _tids["decide"] = threading.get_native_id()
        t0, c0 = time.time(), time.thread_time()
        n = sum(len(r) for r in batch.values())
        result = await _step0(self, batch, *args, **kwargs)
        _steps.append((t0, time.time(), n, time.thread_time() - c0, getattr(self, "commits", -1)))
        return result

    async def _enqueue(queue, committer, item):
        if isinstance(item, tuple) and item and isinstance(item[0], list) and item[0]:
            t0, futures, left = time.time(), item[0], [len(item[0])]

            def acked(_f):
                left[0] -= 1
                if not left[0]:
                    _acks.append((t0, time.time()))

            for f in futures:
                f.add_done_callback(acked)
        return await _enqueue0(queue, committer, item)

    def _call_home(self, callback, *args):
        _calls[0] += 1
        result = _home0(self, callback, *args)
        _calls[1] = getattr(self, "home_posts", -1)  # -1: a version without the mailbox (one post per call)
        return result

    _ds.DecideService._step = _step
    _ds.DecideService._enqueue = staticmethod(_enqueue)
    _ot.OwnThreadLoop.call_home = _call_home
"""

SAMPLER = r"""
import json, os, signal, sys, time
pid, out, period = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
rows = []
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
try:
    while True:
        t = time.time()
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            break
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    run, wait, slices = f.read().split()
            except (OSError, ValueError):
                continue
            rows.append((t, int(tid), int(run), int(wait), int(slices)))
        time.sleep(period)
finally:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the loop may have ended by itself: finish the file
    with open(out + ".tmp", "w") as f:
        json.dump(rows, f)
    os.replace(out + ".tmp", out)
"""


def _threads(rows: list[list[float]]) -> dict[int, np.ndarray]:
    """Per thread id: rows of (time, on-CPU ns, run-queue ns, switches)."""
    by: dict[int, list[tuple[float, ...]]] = {}
    for t, tid, run, wait, switches in rows:
        by.setdefault(int(tid), []).append((t, run, wait, switches))
    return {tid: np.array(r, dtype=float) for tid, r in by.items() if len(r) > 1}


def _thread_share(a: np.ndarray, t0: float, t1: float, requests: int) -> dict[str, float]:
    i, j = np.searchsorted(a[:, 0], [t0, t1])
    j = min(int(j), len(a) - 1)
    i = min(int(i), j)
    dt = a[j, 0] - a[i, 0]
    if dt <= 0:
        return {}
    d = a[j] - a[i]
    return {
        "cpu_pct": round(d[1] / 1e9 / dt * 100, 1),
        "run_queue_wait_pct": round(d[2] / 1e9 / dt * 100, 1),
        "cpu_us_per_request": round(d[1] / 1e3 / max(requests, 1), 2),
        "switches_per_request": round(d[3] / max(requests, 1), 3),
    }


def summarize_level(
    trace: dict[str, Any], worker: dict[str, Any], sched: list[list[float]]
) -> dict[str, Any]:
    """One paced level's figures (see the module docstring)."""
    start = trace["start_unix_s"]
    rows = np.array(trace["rows"], dtype=float)  # sent, decided (unix), arrived; sent/arrived since start
    if not len(rows):
        return {}
    sent, decided, arrived = rows[:, 0] + start, rows[:, 1] + start, rows[:, 2] + start
    latency = (arrived - sent) * 1e3
    before, after = (decided - sent) * 1e3, (arrived - decided) * 1e3
    slow = latency >= np.percentile(latency, 99)
    t0, t1 = float(sent.min()), float(sent.max())
    out: dict[str, Any] = {
        "requests": len(rows),
        "p50_ms": round(float(np.percentile(latency, 50)), 1),
        "p99_ms": round(float(np.percentile(latency, 99)), 1),
        "slowest_1pct": {
            "before_decision_ms": round(float(before[slow].mean()), 1),
            "after_decision_ms": round(float(after[slow].mean()), 1),
            "sent_in_first_s": round(float((sent[slow] < t0 + 1.0).mean()), 2),
        },
        "all": {
            "before_decision_p50_ms": round(float(np.percentile(before, 50)), 1),
            "after_decision_p50_ms": round(float(np.percentile(after, 50)), 1),
        },
    }
    gcs = [g for g in worker.get("gc", []) if t0 <= g[0] <= t1]
    out["gc"] = {
        str(gen): {
            "n": len(of),
            "max_wall_ms": round(max(g[1] for g in of) * 1e3, 2),
            "max_cpu_ms": round(max(g[3] for g in of) * 1e3, 2),
            "total_wall_ms": round(sum(g[1] for g in of) * 1e3, 1),
        }
        for gen in (0, 1, 2)
        if (of := [g for g in gcs if g[2] == gen])
    }
    steps = np.array([s for s in worker.get("steps", []) if t0 <= s[0] <= t1 and s[2] > 0], dtype=float)
    if len(steps) > 2:
        fit = np.linalg.lstsq(np.vstack([np.ones(len(steps)), steps[:, 2]]).T, steps[:, 3] * 1e6, rcond=None)[
            0
        ]
        wall = (steps[:, 1] - steps[:, 0]) * 1e3
        out["steps"] = {
            "per_s": round(len(steps) / max(t1 - t0, 1e-3), 1),
            "records_p50": float(np.percentile(steps[:, 2], 50)),
            "records_max": float(steps[:, 2].max()),
            "wall_ms_p50": round(float(np.percentile(wall, 50)), 2),
            "wall_ms_p99": round(float(np.percentile(wall, 99)), 2),
            "cpu_fixed_us": round(float(fit[0]), 1),
            "cpu_per_record_us": round(float(fit[1]), 2),
        }
        if steps.shape[1] > 4 and steps[0, 4] >= 0:  # the decide loop's commits so far, at each step
            span = max(steps[-1, 0] - steps[0, 0], 1e-3)
            out["steps"]["commits_per_s"] = round(float(steps[-1, 4] - steps[0, 4]) / span, 1)
    acks = np.array([a for a in worker.get("acks", []) if t0 <= a[0] <= t1], dtype=float)
    if len(acks):
        ack_ms = (acks[:, 1] - acks[:, 0]) * 1e3
        out["acknowledged_ms"] = {
            "p50": round(float(np.percentile(ack_ms, 50)), 2),
            "p99": round(float(np.percentile(ack_ms, 99)), 2),
        }
    threads = _threads(sched)
    for name, tid in worker.get("tids", {}).items():  # the decide and the main thread, as the worker saw them
        if tid in threads:
            out[f"{name}_thread"] = _thread_share(threads[tid], t0, t1, len(rows))
    return out


def probe(
    bootstrap: str, rates: tuple[float, ...], seconds: float, folder: Path, requests: int
) -> dict[str, Any]:
    """Run the router side with the recorders on; returns the summary (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    site = Path(tempfile.mkdtemp(prefix="tail-probe-site-"))
    (site / "sitecustomize.py").write_text(SITE)
    sched_path = folder / "sched.json"
    samplers: list[subprocess.Popen[bytes]] = []
    saved = {k: os.environ.get(k) for k in (TRACE_ENV, PROBE_ENV, "PYTHONPATH")}
    os.environ[TRACE_ENV] = str(folder)
    os.environ[PROBE_ENV] = str(folder)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), saved["PYTHONPATH"]) if p)

    def started(proc: BenchWorker) -> None:
        assert proc.pid is not None
        samplers.append(
            subprocess.Popen([sys.executable, "-c", SAMPLER, str(proc.pid), str(sched_path), "0.01"])
        )

    try:
        side = asyncio.run(
            measure_side(
                bootstrap,
                "router",
                ROUTER_ARGS,
                requests=requests,
                seconds=seconds,
                loads=(),
                rates=rates if rates else (lambda sustained: (round(sustained / 2),)),
                on_started=started,
            )
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for s in samplers:
            s.terminate()
            s.wait(30)
    sched = json.loads(sched_path.read_text()) if sched_path.exists() else []
    workers = sorted(glob.glob(str(folder / "worker-*.json")))
    worker = json.loads(Path(workers[-1]).read_text()) if workers else {}
    levels = {}
    for rate in side["latency_at_ms"]:
        path = folder / f"{side_name(folder)}-r{rate}.json"
        if path.exists():
            levels[rate] = summarize_level(json.loads(path.read_text()), worker, sched)
    calls, posts = worker.get("calls", [0, 0])
    return {
        "drain_per_s": side["per_s"],
        "drain_cpu_us_per_request": side["cpu_us_per_request"],
        "levels": levels,
        "level_cpu_us_per_request": {r: v["cpu_us_per_request"] for r, v in side["latency_at_ms"].items()},
        "call_home": {"calls": calls, "wake_ups": calls if posts < 0 else posts},
        "machine": machine(bootstrap),
    }


def side_name(folder: Path) -> str:
    """The trace files' side prefix (the router's topic prefix, ``bench-router-<id>``)."""
    names = sorted(glob.glob(str(folder / "bench-router-*-r*.json")))
    return Path(names[-1]).name.rsplit("-r", 1)[0] if names else "bench-router"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m banditroute.bench.tail_probe", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--rate", type=float, action="append", default=[], help="Paced rate (repeatable).")
    parser.add_argument("--seconds", type=float, default=5.0, help="Per paced level (bench e2e's default).")
    parser.add_argument(
        "--requests", type=int, default=DRAIN_REQUESTS, help="The pre-filled drain (bench e2e's default)."
    )
    parser.add_argument("--out", default=None, help="Folder for the traces and records (default: a new one).")
    args = parser.parse_args(argv)
    folder = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="tail-probe-"))
    result = probe(args.bootstrap, tuple(args.rate), args.seconds, folder, args.requests)
    result["folder"] = str(folder)
    (folder / "summary.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
