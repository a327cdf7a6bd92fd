"""State retention on the real broker: idle states leave memory and come back from the topic; ``state forget``
removes one for good."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tests.kafka.router_world import MODELS_YAML, Loop, learned_states, observations, write_config
from tests.reliability.support import (
    assert_states_equal,
    reference_states,
    start_web_worker,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

POLICY = """defaults:
  lam: 10.0
  half_life: null
  join: {wait_s: 60}
limits:
  idle_evict_s: 2
"""


def counters(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stats", timeout=10) as resp:  # noqa: S310
        data: dict[str, Any] = orjson.loads(resp.read())["counters"]
        return data


async def test_idle_states_are_evicted_and_read_back_and_forget_is_for_good(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    prefix = unique_prefix
    config_dir = write_config(tmp_path / "config", MODELS_YAML, POLICY)
    worker, port = start_web_worker(tmp_path, kafka_bootstrap, prefix, config_dir)
    rng = np.random.default_rng(3)
    try:
        async with Loop(kafka_bootstrap, prefix) as loop:
            await loop.run(60, rng, batch=20, timeout_s=90)

            async def chat_has(n: int) -> bool:
                states = await learned_states(kafka_bootstrap, prefix)
                return "chat" in states and observations(states["chat"]) == n

            assert await wait_until(lambda: chat_has(60), 60)

            async def evicted() -> bool:
                return int((await asyncio.to_thread(counters, port)).get("states_evicted", 0)) >= 1

            assert await wait_until(evicted, 60), "the idle state was not evicted"
            # traffic returns: the learner reads the state back and goes on from it, not from the prior
            await loop.run(40, rng, batch=20, timeout_s=90)
            assert await wait_until(lambda: chat_has(100), 60), (
                "learning did not continue from the evicted state"
            )
            assert_states_equal(
                await learned_states(kafka_bootstrap, prefix),
                await reference_states(kafka_bootstrap, prefix, config_dir),
            )
            assert int((await asyncio.to_thread(counters, port)).get("states_restored", 0)) >= 1

            env = {"BANDITROUTE_KAFKA_BOOTSTRAP": kafka_bootstrap, "BANDITROUTE_TOPIC_PREFIX": prefix}
            missing = run_cli(["state", "forget", "nosuch", "--yes"], env)
            assert missing.returncode != 0 and "no learnt state 'nosuch'" in missing.stderr
            done = run_cli(["state", "forget", "chat", "--yes"], env)
            assert done.returncode == 0, done.stderr
            assert "chat" not in await learned_states(kafka_bootstrap, prefix)

            async def dropped() -> bool:  # the worker has read the tombstone and let go of the state
                return int((await asyncio.to_thread(counters, port)).get("states_forgotten", 0)) >= 1

            assert await wait_until(dropped, 60), "the worker still holds the forgotten state"
            await loop.run(20, rng, batch=20, timeout_s=90)
            assert await wait_until(lambda: chat_has(20), 60), "a forgotten state came back"
    finally:
        code = worker.terminate()
    assert code == 0, f"worker exited with {code}; see {tmp_path}/w0.log"


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "banditroute", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_a_read_back_reads_on_past_the_place_to_the_end_of_the_partition(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """The read-back of an evicted state takes the first record of its key from the remembered place on, however
    far (compaction removes the record there once a later one of the key is written; before, only the first 100
    records were looked at and a miss started the key from the prior); None only when the partition holds no
    record of it up to its end, or a tombstone."""
    from banditroute.config import Registry, RouterConfig
    from banditroute.kafka.admin import admin_client, create_topics, new_topic
    from banditroute.kafka.state_reader import StateReader
    from banditroute.routing import StateView
    from tests.kafka.helpers import producer

    topic = f"{unique_prefix}.state"
    async with admin_client(kafka_bootstrap) as admin:
        await create_topics(admin, [new_topic(topic, 1)])
    async with producer(kafka_bootstrap, acks="all") as p:
        first = await p.send_and_wait(topic, key=orjson.dumps("other"), value=b"o", partition=0)
        for i in range(300):
            await p.send(topic, key=orjson.dumps(f"other{i}"), value=b"o", partition=0)
        await p.send_and_wait(topic, key=orjson.dumps("chat"), value=b"the state of chat", partition=0)
        await p.send_and_wait(topic, key=orjson.dumps("gone"), value=None, partition=0)
    view = StateView()
    registry = Registry(RouterConfig.load(write_config(tmp_path / "config", MODELS_YAML, POLICY)))
    reader = StateReader(
        view, registry, bootstrap=kafka_bootstrap, state_topic=topic, catalog_topic="unused", security={}
    )
    try:
        for key in ("chat", "gone", "never"):
            view.remember(key, (0, first.offset))
        assert await reader.fetch("chat") == b"the state of chat"
        assert await reader.fetch("gone") is None  # a tombstone follows the place: forgotten
        assert await reader.fetch("never") is None  # nothing of it up to the end
        assert (reader.restored, reader.restore_missed, reader.restore_failed) == (1, 2, 0)
    finally:
        reader.stop()
        if reader._fetcher is not None:
            await reader._fetcher.stop()


async def test_a_read_back_whose_client_is_stopped_under_it_fails_and_the_next_one_reads(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """The reader stops its read-back client when it restarts. A read-back that was using that client fails as
    :class:`StateReadFailed` (nothing known, the learner reads the batch again) rather than with aiokafka's
    ``ConsumerStoppedError``, which no caller expects; the next read-back makes a new client and reads."""
    from banditroute.config import Registry, RouterConfig
    from banditroute.kafka.admin import admin_client, create_topics, new_topic
    from banditroute.kafka.state_reader import StateReader, StateReadFailed
    from banditroute.routing import StateView
    from tests.kafka.helpers import producer

    topic = f"{unique_prefix}.state"
    async with admin_client(kafka_bootstrap) as admin:
        await create_topics(admin, [new_topic(topic, 1)])
    async with producer(kafka_bootstrap, acks="all") as p:
        first = await p.send_and_wait(
            topic, key=orjson.dumps("chat"), value=b"the state of chat", partition=0
        )
    view = StateView()
    registry = Registry(RouterConfig.load(write_config(tmp_path / "config", MODELS_YAML, POLICY)))
    reader = StateReader(
        view, registry, bootstrap=kafka_bootstrap, state_topic=topic, catalog_topic="unused", security={}
    )
    try:
        view.remember("chat", (0, first.offset))
        assert await reader.fetch("chat") == b"the state of chat"
        stopped = reader._fetcher
        assert stopped is not None
        await stopped.stop()  # as the reader's restart does, here between two read-backs
        with pytest.raises(StateReadFailed, match="ConsumerStoppedError"):
            await reader.fetch("chat")
        # the stopped client's request connected again before it failed: that connection is closed too
        assert not [conn for conn in stopped._client._conns.values() if conn.connected()]
        assert reader.restore_failed == 1
        assert await reader.fetch("chat") == b"the state of chat"
        assert reader._fetcher is not stopped
        assert (reader.restored, reader.restore_failed) == (2, 1)
    finally:
        reader.stop()
        if reader._fetcher is not None:
            await reader._fetcher.stop()
