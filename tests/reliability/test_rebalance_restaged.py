"""Two workers on the real broker: join-table writes that one worker staged again after a failed flush are not
written, after a rebalance, into changelog partitions the other worker owns by then.

Worker A joins feedback while the join table's changelog refuses every write (``max.message.bytes`` lowered to
less than one entry): its flushes fail and their writes are staged again in memory (``StagedTable.restage``).
Worker B starts and takes half the partitions; then the changelog takes writes again. B joins the feedback of its
partitions itself (A never committed it). A record on one of B's partitions whose outcome was joined before B
started (``at_s``) is one of A's: written into B's partition after B took it, where it overwrites B's entry for
the next recovery.

B's start-up check of the changelog's ``max.message.bytes`` must pass, so B checks the topics before the
changelog first refuses (``held_worker.py``: B is built and checked beforehand, then let go without checking
again), and the changelog refuses from then until A has let go: A gets no write through while it holds
partitions, however long B takes to start. (Until lead34 the changelog took writes again for B's check after A's
readers had begun a 10 s wait, and B had to finish the check within it: B's imports alone took 5-24 s under load,
and with them inside the wait 16 of 36 runs at load 4-16 failed in session 17; with B built beforehand the check
still took 1.6-7.7 s at load 8-15 of a wait of at most ~9 s.)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from banditroute.agents.pending import Pending
from tests.kafka.helpers import WorkerProcess, worker_env
from tests.kafka.router_world import Loop, observations, read_all, write_config
from tests.reliability.held_worker import CHECKED, HELD
from tests.reliability.support import (
    MESSAGE_BYTES_DEFAULT,
    REFUSING,
    dead_letters,
    set_message_bytes,
    start_worker,
    wait_learned,
    wait_until,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(240)]

WARM = 100
N = 400


def _log_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_bytes().splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            lines.append(entry)
    return lines


def _says(path: Path, text: str) -> bool:
    """Whether the log at ``path`` has ``text`` (the file may not be there yet)."""
    return path.exists() and text in path.read_text(errors="replace")


async def _a_dropped(path: Path) -> bool:
    """Whether worker A logged that it dropped join-table writes staged for partitions that moved."""
    return any("join-table writes staged again" in e.get("message", "") for e in _log_lines(path))


def _at(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["at"].replace("Z", "+00:00")).timestamp()


def _assignments(path: Path, topic: str) -> list[tuple[float, list[int]]]:
    """(when, partitions) of every assignment of the worker's reader of ``topic``, from its log."""
    return [
        (_at(e), e["partitions"])
        for e in _log_lines(path)
        if e.get("message") == "reader assigned" and e.get("topic") == topic
    ]


def _both_readers_backed_off(path: Path) -> bool:
    """Whether each of the join's readers, failing, last logged a restart 10 s or more away (it has failed
    again and again)."""
    backoff: dict[str, float] = {}
    for e in _log_lines(path):
        message = e.get("message", "")
        for name in ("feedback_reader", "decision_reader"):
            if message.startswith(f"{name} loop failed; restarting in "):
                backoff[name] = float(message.rsplit(" ", 2)[1])
    return len(backoff) == 2 and all(b >= 10 for b in backoff.values())


async def _unlearnt(bootstrap: str, prefix: str, states: dict[str, Any]) -> str:
    """Where the feedback not learnt stopped: no outcome published (the join), or outcomes all above their
    source's watermark in their own task type's learnt state (the learner: the watermarks are per state, so
    another task type's further mark says nothing of it); (partition, offset, request id) of the first few."""
    made: dict[str, list[dict[str, Any]]] = {}
    for record in await read_all(bootstrap, f"{prefix}.outcomes"):
        outcome = orjson.loads(record.value)
        made.setdefault(outcome["request_id"], []).append(outcome)
    applied = {key: dict(state.applied) for key, state in states.items()}  # per task key: source -> watermark
    unjoined, unlearnt = [], []
    for record in await read_all(bootstrap, f"{prefix}.feedback"):
        if not record.value:  # a tick
            continue
        request_id = orjson.loads(record.value)["request_id"]
        where = (record.partition, record.offset, request_id)
        if request_id not in made:
            unjoined.append(where)
        elif all(applied.get(o["task_key"], {}).get(o["src"], -1) < o["off"] for o in made[request_id]):
            unlearnt.append(where)
    return (
        f"{len(unjoined)} feedback events with no outcome {unjoined[:5]}, {len(unlearnt)} with outcomes not "
        f"learnt {unlearnt[:5]}"
    )


async def test_restaged_join_writes_stay_out_of_the_partitions_another_worker_took(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """A's readers fail at every try while the changelog refuses (B built and its check of the topics passed
    before that); B starts and takes half the partitions; once A has let go, the changelog takes writes again: A's
    staged writes for B's partitions are dropped, not written there."""
    t0 = time.monotonic()
    prefix, rng = unique_prefix, np.random.default_rng(7)
    config_dir = write_config(tmp_path / "config")
    changelog, feedback = f"{prefix}-request_to_pending-changelog", f"{prefix}.feedback"
    info = {"BANDITROUTE_LOG_LEVEL": "info"}
    a = start_worker(tmp_path, kafka_bootstrap, prefix, "a", config_dir, **info)
    a_log = Path(a.log_path)
    check, go = tmp_path / "b.check", tmp_path / "b.go"
    b = WorkerProcess(
        worker_env(kafka_bootstrap, prefix, str(config_dir), str(tmp_path / "data-b"), **info),
        str(tmp_path / "b.log"),
        [sys.executable, str(Path(__file__).with_name("held_worker.py")), str(check), str(go)],
    ).start()
    b_log = Path(b.log_path)
    workers = [a, b]

    def b_says(text: str) -> Callable[[], Awaitable[bool]]:
        async def said() -> bool:
            return _says(b_log, text)

        return said

    try:
        async with Loop(kafka_bootstrap, prefix) as loop:
            await loop.run(WARM, rng, batch=50, timeout_s=90)  # A has made the join tables' changelogs
            assert await wait_until(b_says(HELD), 120), f"B was not built:\n{b.log_tail()}"
            check.touch()
            assert await wait_until(b_says(CHECKED), 60, 0.05), f"B did not check the topics:\n{b.log_tail()}"
            await set_message_bytes(kafka_bootstrap, changelog, REFUSING)
            await loop.run(N, rng, batch=N, timeout_s=60)

        async def a_failed() -> bool:
            return _both_readers_backed_off(a_log)

        assert await wait_until(a_failed, 45, 0.1), f"A's readers did not fail as planned:\n{a.log_tail()}"
        b_started = time.time()
        go.touch()

        async def a_let_go() -> bool:
            return any(not p and at > b_started for at, p in _assignments(a_log, feedback))

        assert await wait_until(a_let_go, 60), f"A did not let go of its partitions:\n{a.log_tail()}"
        await wait_until(lambda: _a_dropped(a_log), 30)  # at its assignment (checked below)
        await set_message_bytes(kafka_bootstrap, changelog, MESSAGE_BYTES_DEFAULT)

        async def b_owns() -> list[int] | None:
            taken = [p for _at, p in _assignments(Path(b.log_path), feedback) if p]
            return taken[-1] if taken else None

        owned_by_b = await wait_until(b_owns, 90)
        assert owned_by_b and len(owned_by_b) < 4, f"B took {owned_by_b}:\n{b.log_tail()}"
        released = [at for at, p in _assignments(a_log, feedback) if not p and at > b_started]
        assert released, f"A did not let go of its partitions:\n{a.log_tail()}"
        let_go = released[0]

        sent = WARM + N
        states = await wait_learned(kafka_bootstrap, prefix, sent, timeout_s=90)
        learned = sum(observations(s) for s in states.values())
        if learned != sent:  # what the workers said, and what was dead-lettered, to tell lost from slow
            reasons = [d.get("reason") for d in await dead_letters(kafka_bootstrap, prefix)]
            pytest.fail(
                f"learned {learned} outcomes for {sent} feedback events; dead letters {reasons}; "
                f"{await _unlearnt(kafka_bootstrap, prefix, states)}\n"
                f"A:\n{a.log_tail()}\nB:\n{b.log_tail()}"
            )
        assert a.alive() and b.alive()
        assert await b_owns() == owned_by_b, "B's partitions moved again"
        stray = []
        for record in await read_all(kafka_bootstrap, changelog):
            if record.partition not in owned_by_b or record.value is None or record.timestamp < let_go * 1000:
                continue
            entry = Pending.decode(record.value, orjson.loads(record.key))
            if entry.outcome is not None and entry.outcome["at_s"] < b_started:
                stray.append(orjson.loads(record.key))
        print(
            f"\nA let go {let_go - b_started:.1f} s after B was let go; B owns {owned_by_b}; {len(stray)} of A's "
            f"writes on them; {time.monotonic() - t0:.1f} s"
        )
        assert stray == [], f"{len(stray)} entries A joined were written to B's partitions {owned_by_b}"
        assert await _a_dropped(a_log), "A never dropped the writes it had staged for B's partitions"
    finally:
        codes = [w.terminate() for w in workers]
    assert codes == [0, 0], codes
