"""Two workers on the real broker: after a rebalance moves a partition from A to B, A writes nothing more into it
and keeps nothing of it in memory.

The rebalance is driven, not timed: B is stopped (SIGSTOP) until A holds every partition, then the state topic
refuses writes (``max.message.bytes`` below one state) while A learns more of both task types, so A's learnt
states stay staged in memory; B is continued and takes one state partition back, and learns more of that
partition's task type, still in memory only, before the topic takes writes again. From then on B writes only
states with all of it (``restage`` takes the current value), and A's first successful flush is the one that
writes its own partition's state. A record of B's task type with what A had learnt, or a tombstone, is A's,
written after B took the partition. Before the fix A's flush wrote a tombstone there in every run (faust had
dropped the state it recovered of the partition, so A's restage staged its deletion): B's state vanished from
the compacted topic. The join tables' entries of the partitions a worker gave up leave its memory too (faust's
memory store kept those the join wrote until a restart).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from banditroute.core import decode_state
from banditroute.kafka.local import free_port
from banditroute.kafka.topics import partition_for
from tests.browser.live import get_json
from tests.kafka.helpers import WorkerProcess
from tests.kafka.router_world import POLICY_YAML, Loop, read_all, read_compacted, request, write_config
from tests.reliability.support import (
    MESSAGE_BYTES_DEFAULT,
    REFUSING,
    set_message_bytes,
    start_worker,
    wait_until,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

TYPES = ("chat", "summarize")  # one per state partition (2): 1 and 0
WARM, M, X = 20, 30, 25
POLICY = POLICY_YAML.replace("join: {wait_s: 120}", "join: {wait_s: 900, keep_joined_s: 3600}")


def _state_partition(task_type: str) -> int:
    return partition_for(orjson.dumps(task_type), 2)


def _request_in(partitions: list[int], task_type: str) -> dict[str, Any]:
    """A request whose id puts it (and its decision and feedback) in one of these of the 4 partitions."""
    while True:
        r = request(task_type)
        if partition_for(r["request_id"].encode(), 4) in partitions:
            return r


class _Web:
    """A worker with its web API, asked for what it holds."""

    def __init__(self, tmp_path: Path, bootstrap: str, prefix: str, name: str, config_dir: Path) -> None:
        self.port = free_port()
        self.worker: WorkerProcess = start_worker(
            tmp_path,
            bootstrap,
            prefix,
            name,
            config_dir,
            BANDITROUTE_WEB_ENABLED="true",
            BANDITROUTE_WEB_PORT=str(self.port),
            BANDITROUTE_LOG_LEVEL="info",  # faust's rebalance and recovery steps, for a failure's message
        )

    async def get(self, path: str) -> Any:
        try:
            return await asyncio.wait_for(get_json(f"http://127.0.0.1:{self.port}{path}"), 30)
        except Exception:
            return None  # not up yet, or busy

    async def partitions(self, reader: str) -> list[int] | None:
        stats = await self.get("/api/stats")
        return None if stats is None else list(stats["readers"][reader]["partitions"])

    async def events(self) -> dict[str, int]:
        """Outcomes learnt per task type in this worker's view (its learner offers it what it learns)."""
        state = await self.get("/api/state")
        return {} if state is None else {t["key"]: int(t["events"]) for t in state["tasks"]}


def two_workers(tmp_path: Path, bootstrap: str, prefix: str) -> tuple[_Web, _Web, Callable[[], str]]:
    """Workers A and B (web API on, ``POLICY``), and what prints the tail of both logs."""
    config_dir = write_config(tmp_path / "config", policy=POLICY)
    a = _Web(tmp_path, bootstrap, prefix, "a", config_dir)
    b = _Web(tmp_path, bootstrap, prefix, "b", config_dir)

    def logs() -> str:
        return f"A:\n{a.worker.log_tail(60)}\nB:\n{b.worker.log_tail(60)}"

    return a, b, logs


class Stall:
    """Stops (SIGSTOP) and continues (SIGCONT) a worker, and knows whether it is stopped."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.stopped = False

    def stop(self) -> None:
        self.worker.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def cont(self) -> None:
        self.worker.proc.send_signal(signal.SIGCONT)
        self.stopped = False


@contextmanager
def running(a: _Web, b: _Web, logs: Callable[[], str]) -> Iterator[Stall]:
    """Workers A and B for the block, which may stall B (the :class:`Stall` given); then B is continued if it is
    still stopped, both are stopped, and both must exit 0 (unless the block failed: its error is the one told)."""
    stall = Stall(b.worker)
    try:
        yield stall
    finally:
        if stall.stopped:
            stall.cont()
        codes = [w.terminate() for w in (a.worker, b.worker)]
    assert codes == [0, 0], f"{codes}:\n{logs()}"


async def _compacted_events(bootstrap: str, prefix: str) -> dict[str, int]:
    raw = await read_compacted(bootstrap, f"{prefix}.state")
    return {orjson.loads(k): decode_state(v).events for k, v in raw.items()}


async def _live_join_entries(bootstrap: str, prefix: str) -> dict[int, int]:
    """Per partition, the entries the join table's changelog holds (its latest record per key not a tombstone)."""
    latest: dict[tuple[int, bytes], bool] = {}
    for r in await read_all(bootstrap, f"{prefix}-request_to_pending-changelog"):
        latest[(r.partition, r.key)] = r.value is not None
    counts: dict[int, int] = {}
    for (partition, _key), live in latest.items():
        counts[partition] = counts.get(partition, 0) + live
    return counts


async def test_a_partition_moved_to_another_worker_gets_no_older_state_and_leaves_memory(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    prefix, rng = unique_prefix, np.random.default_rng(16)
    state_topic = f"{prefix}.state"
    a, b, logs = two_workers(tmp_path, kafka_bootstrap, prefix)

    async def split() -> tuple[list[int], list[int]] | None:
        """Each worker's outcomes partitions once they hold one each (None until then)."""
        held = (await a.partitions("learn_reader"), await b.partitions("learn_reader"))
        if held[0] is None or held[1] is None or len(held[0]) != 1 or len(held[1]) != 1:
            return None
        return held[0], held[1]

    with running(a, b, logs) as stall:
        assert await wait_until(split, 180), f"A and B never held one state partition each:\n{logs()}"
        async with Loop(kafka_bootstrap, prefix) as loop:
            for task_type in TYPES:
                await loop.run(WARM, rng, batch=WARM, timeout_s=90, task_type=task_type)

            async def warm() -> bool:
                return await _compacted_events(kafka_bootstrap, prefix) == dict.fromkeys(TYPES, WARM)

            assert await wait_until(warm, 90), f"warm-up not learnt:\n{logs()}"

            # B stalls: A takes every partition. What A is sent then goes only to partitions A held before: B's
            # readers, stalled, would otherwise meet it again once continued (that case: test_stalled_worker.py)
            a_own = await a.partitions("feedback_reader")
            assert a_own, f"A holds no feedback partition:\n{logs()}"
            stall.stop()

            async def a_holds_all() -> bool:
                return await a.partitions("learn_reader") == [0, 1] and await a.partitions(
                    "feedback_reader"
                ) == [0, 1, 2, 3]

            assert await wait_until(a_holds_all, 120), f"A did not take B's partitions:\n{logs()}"

            # the state topic refuses writes: what A learns now stays staged in its memory
            await set_message_bytes(kafka_bootstrap, state_topic, REFUSING)
            for task_type in TYPES:
                await loop.answer([_request_in(a_own, task_type) for _ in range(M)], rng, timeout_s=90)

            async def a_learnt_in_memory() -> bool:
                return await a.events() == dict.fromkeys(TYPES, WARM + M)

            assert await wait_until(a_learnt_in_memory, 90), f"A did not learn in memory:\n{logs()}"

            # B comes back and takes one state partition from A, which still has its state staged
            stall.cont()
            held = await wait_until(split, 180)
            assert held, f"A and B did not split the partitions again:\n{logs()}"
            (moved,) = held[1]
            to_b = next(t for t in TYPES if _state_partition(t) == moved)
            kept = next(t for t in TYPES if t != to_b)
            await loop.run(X, rng, batch=X, timeout_s=90, task_type=to_b)

            async def b_learnt_in_memory() -> bool:
                return (await b.events()).get(to_b) == WARM + M + X

            assert await wait_until(b_learnt_in_memory, 90), (
                f"B did not learn {to_b} in memory: {await b.events()}, A: {await a.events()}; "
                f"B {await b.partitions('learn_reader')}:\n{logs()}"
            )
            await set_message_bytes(kafka_bootstrap, state_topic, MESSAGE_BYTES_DEFAULT)

            async def learnt() -> bool:
                events = await _compacted_events(kafka_bootstrap, prefix)
                return events == {to_b: WARM + M + X, kept: WARM + M}

            # A's kept task type on the topic (WARM + M) is A's first flush after B took its partition: whatever
            # else A still had staged went with it, and is on the topic by then
            await wait_until(learnt, 120)
        history: dict[str, list[int | None]] = {t: [] for t in TYPES}  # None: a tombstone
        for record in await read_all(kafka_bootstrap, state_topic):
            key = orjson.loads(record.key)
            assert record.partition == _state_partition(key)
            history[key].append(None if record.value is None else decode_state(record.value).events)
        print(
            f"\nB took state partition {moved} ({to_b}); events written per task type, in order: {history}; "
            f"{time.monotonic() - t0:.1f} s"
        )
        assert None not in history[to_b] and WARM + M not in history[to_b], (
            f"A wrote its staged {to_b} state (a tombstone: None, or {WARM + M} events) into partition {moved} "
            f"after B took it: {history[to_b]}"
        )
        for task_type, events in history.items():
            written = [e for e in events if e is not None]
            assert written == events == sorted(written), (
                f"{task_type}'s state went back on the topic: {events}"
            )
        assert await _compacted_events(kafka_bootstrap, prefix) == {to_b: WARM + M + X, kept: WARM + M}, (
            logs()
        )
        a_stats = await a.get("/api/stats")
        assert a_stats["counters"].get("state_writes_dropped_after_rebalance", 0) >= 1, a_stats["counters"]
        assert a.worker.alive() and b.worker.alive(), logs()


async def test_the_join_entries_of_partitions_given_up_leave_memory(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """A joins alone (its join-table entries in every partition written by it, not recovered), then B starts and
    takes half the partitions: each worker holds, in memory, just the entries of the partitions it owns."""
    prefix, rng = unique_prefix, np.random.default_rng(17)
    config_dir = write_config(tmp_path / "config", policy=POLICY)
    a = _Web(tmp_path, kafka_bootstrap, prefix, "a", config_dir)
    workers = [a.worker]
    try:
        async with Loop(kafka_bootstrap, prefix) as loop:
            await loop.run(200, rng, batch=100, timeout_s=90)

        async def all_joined() -> dict[int, int] | None:
            entries = await _live_join_entries(kafka_bootstrap, prefix)
            return entries if sorted(entries) == [0, 1, 2, 3] and sum(entries.values()) == 200 else None

        live = await wait_until(all_joined, 90)
        assert live, await _live_join_entries(kafka_bootstrap, prefix)
        b = _Web(tmp_path, kafka_bootstrap, prefix, "b", config_dir)
        workers.append(b.worker)

        async def held() -> list[tuple[int, int]] | None:
            """(entries in memory, entries of its partitions on the changelog) of each worker, once split."""
            pairs = []
            for web in (a, b):
                stats, owned = await web.get("/api/stats"), await web.partitions("feedback_reader")
                if stats is None or not owned or len(owned) == 4:
                    return None
                pairs.append((stats["join_in_flight"], sum(live.get(p, 0) for p in owned)))
            return pairs

        async def matching() -> list[tuple[int, int]] | None:
            pairs = await held()
            return pairs if pairs and all(memory == own for memory, own in pairs) else None

        assert await wait_until(matching, 180), (
            f"join entries (in memory, of its partitions): {await held()}:\n{a.worker.log_tail(8)}"
        )
        counters = (await a.get("/api/stats"))["counters"]
        assert counters.get("join_entries_dropped_after_rebalance", 0) > 0, counters
        assert a.worker.alive() and b.worker.alive()
    finally:
        codes = [w.terminate() for w in workers]
    assert codes == [0] * len(workers), codes
