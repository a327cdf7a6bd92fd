"""A record on the state topic that no learner wrote (a hostile or buggy producer) does not stop learning: the
learner dead-letters it with its payload and learns on from the key's last good state."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from banditroute.core import decode_state
from banditroute.kafka.local import free_port
from banditroute.kafka.topics import partition_for
from tests.browser.live import get, get_json, metric_samples
from tests.kafka.helpers import WorkerProcess, producer, worker_env
from tests.kafka.router_world import (
    Loop,
    observations,
    read_all,
    read_compacted,
    request,
    write_config,
)

pytestmark = pytest.mark.kafka

BAD = b"not a banditroute state"
BAD_KEYS = (b"\xff not json", b'{"a": 1}')
"""Keys no learner or join writes: not JSON, and JSON that is not a string."""


def worker(
    tmp_path: Path, bootstrap: str, prefix: str, name: str, config_dir: Path, **extra: str
) -> WorkerProcess:
    env = worker_env(bootstrap, prefix, str(config_dir), str(tmp_path / f"data-{name}"), **extra)
    return WorkerProcess(env, str(tmp_path / f"{name}.log")).start()


async def first_worker_learns_50(
    tmp_path: Path, bootstrap: str, prefix: str, seed: int
) -> tuple[Path, np.random.Generator]:
    """Worker ``w1`` decides 50 requests and learns their feedback, then stops: the state and join tables the
    next worker recovers. Returns the config folder and the random generator to go on with."""
    config_dir = write_config(tmp_path / "config")
    rng = np.random.default_rng(seed)
    w = worker(tmp_path, bootstrap, prefix, "w1", config_dir)
    try:
        async with Loop(bootstrap, prefix) as loop:
            await loop.run(50, rng, batch=50, timeout_s=90)
    finally:
        assert w.terminate() == 0, w.log_tail()
    return config_dir, rng


async def chat_state(bootstrap: str, prefix: str, observed: int, timeout_s: float = 90.0) -> Any:
    """The newest state of ``chat`` on the topic once it has ``observed`` outcomes (or the last one read)."""
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        raw = (await read_compacted(bootstrap, f"{prefix}.state")).get(orjson.dumps("chat"))
        if raw is not None and raw != BAD:
            state = decode_state(raw)
            if observations(state) >= observed:
                return state
        await asyncio.sleep(0.5)
    return state


async def test_an_undecodable_state_is_dead_lettered_and_learning_goes_on(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    config_dir = write_config(tmp_path / "config")
    rng = np.random.default_rng(5)
    w = worker(tmp_path, kafka_bootstrap, unique_prefix, "w1", config_dir)
    try:
        async with Loop(kafka_bootstrap, unique_prefix) as loop:
            await loop.run(100, rng, batch=50, timeout_s=90)
        before = await chat_state(kafka_bootstrap, unique_prefix, 100)
        assert before is not None and observations(before) == 100
        assert w.terminate() == 0, w.log_tail()
        key = orjson.dumps("chat")
        async with producer(kafka_bootstrap, acks="all") as p:
            sent = await p.send_and_wait(
                f"{unique_prefix}.state", key=key, value=BAD, partition=partition_for(key, 2)
            )
        # a new worker recovers the bad record into its learner's table: its partition must learn on
        port = free_port()
        web = {"BANDITROUTE_WEB_ENABLED": "true", "BANDITROUTE_WEB_PORT": str(port)}
        w = worker(tmp_path, kafka_bootstrap, unique_prefix, "w2", config_dir, **web)
        async with Loop(kafka_bootstrap, unique_prefix) as loop:
            await loop.run(100, rng, batch=50, timeout_s=90)
        after = await chat_state(kafka_bootstrap, unique_prefix, 200)
        assert after is not None and observations(after) == 200, w.log_tail()  # from the last good state on
        assert after.version > before.version
        letters = [
            orjson.loads(r.value) for r in await read_all(kafka_bootstrap, f"{unique_prefix}.deadletter")
        ]
        assert [letter["reason"] for letter in letters] == ["undecodable_state"]
        letter = letters[0]
        assert base64.b64decode(letter["original"]) == BAD
        assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
            sent.topic,
            sent.partition,
            sent.offset,
        )
        assert "last good state" in letter["error"]
        # counted by reason in /api/stats and /metrics, and shown by `banditroute tail dlq`
        base = f"http://127.0.0.1:{port}"
        stats = await get_json(f"{base}/api/stats")
        assert stats["dead_letters"]["undecodable_state"] == 1
        assert stats["counters"]["bad_state_records"] == 1 and stats["counters"]["bad_states_replaced"] == 1
        text = (await asyncio.to_thread(get, f"{base}/metrics"))[2].decode()
        assert metric_samples(text, "banditroute_dead_letters_total")['{reason="undecodable_state"}'] == 1
        env = {
            **os.environ,
            "BANDITROUTE_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "BANDITROUTE_TOPIC_PREFIX": unique_prefix,
        }
        tailed = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "banditroute",
                "tail",
                "dlq",
                "--reason",
                "undecodable_state",
                "--format",
                "json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        [shown] = [orjson.loads(line) for line in tailed.stdout.splitlines() if line.strip()]
        assert shown["reason"] == "undecodable_state" and shown["source_offset"] == sent.offset
    finally:
        assert w.terminate() == 0, w.log_tail()


async def test_a_key_no_learner_writes_does_not_stop_table_recovery(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """State topic records whose key is not a JSON string (faust's recovery of the learner's table retried its
    failure forever, and the worker never decided anything): the worker decides and learns on. Both kinds of
    bad key are on each partition of one topic: either one alone stopped the recovery, so one worker's start
    shows both (a case each took two worker starts)."""
    config_dir, rng = await first_worker_learns_50(tmp_path, kafka_bootstrap, unique_prefix, 5)
    async with producer(kafka_bootstrap, acks="all") as p:
        for key in BAD_KEYS:
            for partition in (0, 1):
                await p.send_and_wait(f"{unique_prefix}.state", key=key, value=BAD, partition=partition)
    w = worker(tmp_path, kafka_bootstrap, unique_prefix, "w2", config_dir)
    try:
        async with Loop(kafka_bootstrap, unique_prefix) as loop:
            await loop.run(50, rng, batch=50, timeout_s=60)
        after = await chat_state(kafka_bootstrap, unique_prefix, 100)
        assert after is not None and observations(after) == 100, w.log_tail()
    finally:
        assert w.terminate() == 0, w.log_tail()


async def test_state_show_reads_keys_as_the_learners_table_does(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    """`banditroute state` (show, forget's check) read a record keyed 123 (JSON, not a string) as task type 123's
    state, which no worker uses or learns on (kafka/state_keys.py): it showed a state that is not the one routed."""
    from banditroute.cli.output import Ctx
    from banditroute.cli.state_cmd import _read_states
    from banditroute.core import encode_state, new_state
    from banditroute.core.models import ModelSpec
    from banditroute.kafka.admin import admin_client, create_topics, new_topic
    from banditroute.settings import Settings

    settings = Settings.model_validate({"kafka_bootstrap": kafka_bootstrap, "topic_prefix": unique_prefix})
    topic = settings.topic("state")
    async with admin_client(kafka_bootstrap) as admin:
        await create_topics(admin, [new_topic(topic, 1, {"cleanup.policy": "compact"})])
    routed = new_state((ModelSpec("a", 0.001),))
    forged = new_state((ModelSpec("forged", 0.001),))
    async with producer(kafka_bootstrap, acks="all") as p:
        await p.send_and_wait(topic, key=orjson.dumps("123"), value=encode_state(routed))
        await p.send_and_wait(topic, key=b"123", value=encode_state(forged))
    states = await _read_states(Ctx(settings, "json"))
    assert list(states) == ["123"] and states["123"].names == ("a",)


@pytest.mark.parametrize("table", ["request_to_pending", "request_to_early_feedback"])
async def test_a_record_no_join_writes_does_not_stop_the_join(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, table: str
) -> None:
    """The join's changelogged tables are recovered by faust as the learner's is: a record on their changelog
    topics whose key is not a JSON string stopped that recovery (faust retried it forever, and the worker never
    decided anything), and one whose value is not a join entry stopped the join's rebuild of its deadlines
    (retried forever too). The worker decides, joins and learns on. The three kinds of bad record are on each
    partition of the table's changelog together: any one of them alone stopped the worker, so one worker's
    start shows all three (a case each took two worker starts)."""
    config_dir, rng = await first_worker_learns_50(tmp_path, kafka_bootstrap, unique_prefix, 6)
    async with producer(kafka_bootstrap, acks="all") as p:
        for key in (*BAD_KEYS, b'"r-forged"'):  # the last one: a JSON string key, its value no join entry
            for partition in range(4):
                await p.send_and_wait(
                    f"{unique_prefix}-{table}-changelog", key=key, value=BAD, partition=partition
                )
    w = worker(tmp_path, kafka_bootstrap, unique_prefix, "w2", config_dir)
    try:
        async with Loop(kafka_bootstrap, unique_prefix) as loop:
            await loop.run(50, rng, batch=50, timeout_s=60)
        after = await chat_state(kafka_bootstrap, unique_prefix, 100)
        assert after is not None and observations(after) == 100, w.log_tail()
    finally:
        assert w.terminate() == 0, w.log_tail()


async def test_a_decision_whose_request_id_holds_a_bad_join_record_does_not_lose_the_others(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """A join table record no join wrote, under a request id that a request then uses: the worker's own decision
    of that request reaches the join in memory with the others of its batch (a handoff). The join failed on it,
    and the rest of the handoffs taken with it were neither joined nor read again from the topic (the reader
    passes over the worker's own decisions): their feedback was never learnt. Now that decision is
    dead-lettered as ``internal_error`` and the others are joined and learnt."""
    config_dir, rng = await first_worker_learns_50(tmp_path, kafka_bootstrap, unique_prefix, 8)
    collide = "r-collides-with-a-bad-join-record"
    async with producer(kafka_bootstrap, acks="all") as p:
        for partition in range(4):
            await p.send_and_wait(
                f"{unique_prefix}-request_to_pending-changelog",
                key=orjson.dumps(collide),
                value=BAD,
                partition=partition,
            )
    w = worker(tmp_path, kafka_bootstrap, unique_prefix, "w2", config_dir)
    try:
        async with Loop(kafka_bootstrap, unique_prefix) as loop:
            await loop.run(50, rng, batch=50, timeout_s=90)  # the worker is up and joins
            requests = [request()]
            requests += [request(request_id=collide)] + [request() for _ in range(98)]
            await loop.answer(requests, rng, timeout_s=90)
        after = await chat_state(kafka_bootstrap, unique_prefix, 100 + 99)
        assert after is not None and observations(after) == 100 + 99, w.log_tail()
        letters = [
            orjson.loads(r.value) for r in await read_all(kafka_bootstrap, f"{unique_prefix}.deadletter")
        ]
        about = [d for d in letters if collide.encode() in base64.b64decode(d["original"])]
        # the decision (what the join keeps of it) and its feedback, both internal errors of the join
        assert sorted((d["source_topic"].rsplit(".", 1)[-1], d["reason"]) for d in about) == [
            ("decisions", "internal_error"),
            ("feedback", "internal_error"),
        ], about
    finally:
        assert w.terminate() == 0, w.log_tail()
