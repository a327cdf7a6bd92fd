"""Local mode on the real broker: a client deciding in-process from the replicated snapshot.

* decisions of a local-mode client are joined and learnt exactly once by a worker, also when the client is
  SIGKILLed right after publishing and when the worker is SIGKILLed while joining them;
* a local-mode client and a worker on the same snapshot give the same eligible sets, plans (mean utilities)
  and propensities, and choice shares that agree within sampling error;
* staleness and a snapshot not yet loaded fall back (to the default route or to a worker), saying why;
* memory: only the states of the routed (or named) task types are held; others are read when first routed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner

from banditroute.cli import main
from banditroute.client import RouterClient, SyncRouterClient, default_route_reason, ensure_topics
from banditroute.config import PACKAGED_CONFIG
from banditroute.core import new_state
from banditroute.core.codec import encode_state
from banditroute.core.state import replace_state
from banditroute.events import RoutingDecision
from banditroute.settings import Settings
from tests.kafka.router_world import observations, wait_learned, write_config
from tests.reliability.support import decisions_of, start_web_worker, start_worker

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def _settings(bootstrap: str, prefix: str, config_dir: Path) -> Settings:
    return Settings.model_validate(
        {
            "kafka_bootstrap": bootstrap,
            "topic_prefix": prefix,
            "config_dir": str(config_dir),
            "partitions": 4,
            "state_partitions": 2,
        }
    )


@contextlib.contextmanager
def local_client_process(
    bootstrap: str, prefix: str, config_dir: Path, count: int, seed: int
) -> Iterator[Any]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.kafka.local_client_proc",
            bootstrap,
            prefix,
            str(config_dir),
            str(count),
            str(seed),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "BANDITROUTE_LOG_LEVEL": "warning"},
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()


def _report_line(proc: Any, timeout_s: float) -> dict[str, Any]:
    """The client's JSON report (it has published everything by then); its other output in the error."""
    deadline = time.monotonic() + timeout_s
    seen: list[bytes] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(b"{"):
            return dict(orjson.loads(line))
        seen.append(line)
    raise AssertionError(f"no report from the local client: {b''.join(seen).decode(errors='replace')}")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - localhost test server
        return str(resp.read().decode())


async def _learned(bootstrap: str, prefix: str, expected: int) -> float:
    states = await wait_learned(bootstrap, prefix, expected, timeout_s=120)
    return sum(observations(s) for s in states.values())


async def _route_all(client: RouterClient, n: int, concurrency: int = 25) -> list[RoutingDecision]:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> RoutingDecision:
        async with sem:
            return await client.route("chat", timeout_s=60.0)

    return list(await asyncio.gather(*(one() for _ in range(n))))


def _assert_same_decisions(local: list[RoutingDecision], remote: list[RoutingDecision]) -> None:
    """Same state, same eligible set, same plan and propensities; shares within sampling error."""
    assert {d.state_version for d in local} == {d.state_version for d in remote}
    assert len({d.state_version for d in local}) == 1, "the state moved during the comparison"
    assert {frozenset(c.model for c in d.candidates) for d in local} == {
        frozenset(c.model for c in d.candidates) for d in remote
    }
    means: dict[str, set[float]] = defaultdict(set)
    propensities: dict[str, set[float]] = defaultdict(set)
    for d in [*local, *remote]:
        for c in d.candidates:
            means[c.model].add(round(c.mean_utility, 9))
        assert d.model is not None
        propensities[d.model].add(round(d.propensity, 9))
    assert all(len(v) == 1 for v in means.values()), means  # the plan: one posterior mean per model
    assert all(len(v) == 1 for v in propensities.values()), propensities
    n_local, n_remote = len(local), len(remote)
    shares_local = Counter(d.model for d in local)
    shares_remote = Counter(d.model for d in remote)
    print(
        f"\nshares local {dict(shares_local)} remote {dict(shares_remote)}; propensities {dict(propensities)}"
    )
    for model, values in propensities.items():
        p = next(iter(values))
        sd = math.sqrt(p * (1 - p) * (1 / n_local + 1 / n_remote))
        diff = abs(shares_local[model] / n_local - shares_remote[model] / n_remote)
        assert diff <= 4 * sd + 0.02, f"{model}: shares differ by {diff:.3f} (p={p:.3f}, sd={sd:.3f})"


async def test_local_decisions_agree_and_are_learnt_exactly_once(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    prefix = unique_prefix
    config_dir = write_config(tmp_path / "config")
    settings = _settings(kafka_bootstrap, prefix, config_dir)
    web_worker, port = start_web_worker(tmp_path, kafka_bootstrap, prefix, config_dir)
    workers = [web_worker]
    try:
        async with RouterClient(settings, start_timeout_s=30.0) as remote:
            assert (await remote.route("chat", timeout_s=90.0)).worker_id is not None  # the worker decides

        # 1. a local client routes 300 and sends feedback; SIGKILLed right after publishing
        with local_client_process(kafka_bootstrap, prefix, config_dir, 300, seed=5) as proc:
            report = _report_line(proc, 120)
            proc.send_signal(signal.SIGKILL)
        assert report["local"] == 300
        assert await _learned(kafka_bootstrap, prefix, 300) == 300
        by_client = Counter(d["worker_id"] for d in await decisions_of(kafka_bootstrap, prefix))
        assert by_client[report["client_id"]] == 300
        # the worker counts them per client, on /metrics and in /api/stats (the dashboard's source)
        metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith(f'banditroute_local_decisions_total{{client="{report["client_id"]}"')
        )
        assert counted == 300, [line for line in metrics.splitlines() if "local_decisions" in line]
        stats = orjson.loads(await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/api/stats"))
        assert sum(stats["local_decisions_by_client"][report["client_id"]].values()) == 300

        # 2. the worker is SIGKILLed while it joins a second client's decisions; a new one takes over
        with local_client_process(kafka_bootstrap, prefix, config_dir, 300, seed=6) as proc:
            _report_line(proc, 120)
            workers[-1].kill()
            proc.send_signal(signal.SIGKILL)
        workers.append(start_worker(tmp_path, kafka_bootstrap, prefix, "w1", config_dir))
        assert await _learned(kafka_bootstrap, prefix, 600) == 600

        # 3. the same snapshot gives the same decisions in the worker and in a local client
        async with (
            RouterClient(settings, start_timeout_s=30.0) as remote,
            RouterClient(settings, mode="local", seed=11, start_timeout_s=30.0, staleness_s=5.0) as local,
        ):
            remote_decisions = await _route_all(remote, 400)
            local_decisions = await _route_all(local, 400)
            assert all(d.worker_id == local.client_id for d in local_decisions)
            assert all(d.worker_id != local.client_id for d in remote_decisions)
            _assert_same_decisions(local_decisions, remote_decisions)

            # 4. stale: the local client asks the worker and says why
            assert local.local is not None
            local.local.reader.stop()
            await asyncio.sleep(5.5)
            asked = await local.route("chat", timeout_s=60.0)
            assert asked.worker_id != local.client_id and not asked.is_default_route
            assert "local_fallback:stale" in asked.reasons.rules
            assert all(d.policy.version.startswith("files-") for d in remote_decisions + local_decisions)

        # 5. a configuration pushed to the config topic is applied by the worker and by local clients
        pushed = write_config(tmp_path / "pushed")
        (pushed / "rules.yaml").write_text(
            "rules:\n  - {name: pin-budget, task_types: [chat], pin: budget}\n"
        )
        out = await asyncio.to_thread(
            CliRunner().invoke,
            main,
            ["config", "push", str(pushed), "--format", "json"],
            env={"BANDITROUTE_KAFKA_BOOTSTRAP": kafka_bootstrap, "BANDITROUTE_TOPIC_PREFIX": prefix},
        )
        assert out.exit_code == 0, out.output
        assert orjson.loads(out.output)["version"] == 1
        async with (
            RouterClient(settings, start_timeout_s=30.0) as remote,
            RouterClient(settings, mode="local", start_timeout_s=30.0) as local,
        ):
            for client in (remote, local):
                deadline = time.monotonic() + 30
                decision = await client.route("chat", timeout_s=30.0)
                while decision.policy.version != "config-v1" and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)  # the worker polls its reader; the local client read it at start
                    decision = await client.route("chat", timeout_s=30.0)
                assert decision.policy.version == "config-v1"
                assert decision.model == "budget" and "pin-budget" in decision.reasons.rules
    finally:
        codes = [w.terminate() for w in workers]
    assert codes[-1] == 0, f"see {tmp_path}/w1.log"


async def test_not_loaded_and_stale_fall_back_to_the_default_route(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    settings = _settings(kafka_bootstrap, unique_prefix, PACKAGED_CONFIG)
    # no state topic and none made: the snapshot never loads
    await ensure_topics(settings, ["requests", "feedback", "decisions", "shadow-decisions"])
    async with RouterClient(
        settings,
        mode="local",
        local_fallback="default",
        default_route="small-fast",
        ensure_topics=False,
        start_timeout_s=2.0,
    ) as client:
        decision = await client.route("chat")
        assert decision.is_default_route and default_route_reason(decision) == "local_not_loaded"
    async with RouterClient(
        settings, mode="local", local_fallback="default", default_route="small-fast", staleness_s=3.0
    ) as client:
        decided = await client.route("chat")
        assert not decided.is_default_route and decided.worker_id == client.client_id
        assert client.local is not None
        client.local.reader.stop()
        await asyncio.sleep(3.5)
        decision = await client.route("chat")
        assert decision.is_default_route and default_route_reason(decision) == "local_stale"
        # without a default route the caller is told why
        client.default_route = None
        with pytest.raises(Exception, match="local mode: stale"):
            await client.route("chat")
    # the synchronous client takes the same arguments, and decides the common call in the calling thread
    sync = SyncRouterClient(settings, mode="local", local_fallback="default", default_route="small-fast")
    with sync:
        decided = await asyncio.to_thread(sync.route, "chat")
        assert not decided.is_default_route and decided.worker_id == sync.client.client_id
        hops = 0
        through_loop = sync._call

        def counted(coro: Any) -> Any:
            nonlocal hops
            hops += 1
            return through_loop(coro)

        sync._call = counted  # type: ignore[method-assign]

        def route_many(thread: int) -> list[RoutingDecision]:
            return [sync.route("chat", tenant=f"t{thread}", metadata={"i": i}) for i in range(200)]

        routed = await asyncio.gather(*(asyncio.to_thread(route_many, t) for t in range(4)))
        assert hops == 0  # no call went through the client's loop thread
        sync._call = through_loop  # type: ignore[method-assign]
        assert (
            await asyncio.to_thread(sync.route, "chat", max_cost_usd=1.0)
        ).worker_id == sync.client.client_id
    routed_ids = {d.request_id for batch in routed for d in batch}
    assert len(routed_ids) == 800 and not any(d.is_default_route for batch in routed for d in batch)
    published = [
        d for d in await decisions_of(kafka_bootstrap, unique_prefix) if d["request_id"] in routed_ids
    ]
    assert sorted(d["request_id"] for d in published) == sorted(routed_ids)  # each on the topic once


async def test_holds_only_the_task_types_it_routes(kafka_bootstrap: str, unique_prefix: str) -> None:
    settings = _settings(kafka_bootstrap, unique_prefix, PACKAGED_CONFIG)
    async with RouterClient(settings, mode="local", local_fallback="default", default_route="small-fast"):
        pass  # makes the topics with the worker's layout
    from banditroute.config import Registry, RouterConfig

    models = Registry(RouterConfig.load(PACKAGED_CONFIG)).snapshot.models
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        base = new_state(models)
        futures = [
            await producer.send(
                settings.topic("state"),
                key=orjson.dumps(f"t{i}"),
                value=encode_state(replace_state(base, version=100 + i)),
            )
            for i in range(300)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    async with RouterClient(
        settings, mode="local", local_fallback="default", default_route="small-fast", task_types=["t0"]
    ) as client:
        local = client.local
        assert local is not None
        assert local.view.keys() == ["t0"]
        assert len(local.view.evicted) == 299  # positions only
        decision = await client.route("t7")
        assert decision.state_version == 107 and not decision.is_default_route
        assert sorted(local.view.keys()) == ["t0", "t7"]
        assert local.stats["states_read_back"] == 1
        assert (await client.route("t0")).state_version == 100


async def test_local_decisions_without_feedback_leave_the_join_and_its_changelog(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """A local-mode decision that no feedback follows expires after ``wait_s``; its resolution is written to the
    join's changelog and deleted there (a tombstone) once ``keep_joined_s`` has passed and the join's commit has
    passed the decision: what waits in the join is bounded by rate x (wait_s + keep_joined_s), not growing."""
    from tests.kafka.router_world import MODELS_YAML, read_compacted

    prefix = unique_prefix
    policy = "defaults:\n  lam: 10.0\n  half_life: null\n  join: {wait_s: 2, keep_joined_s: 1}\n"
    config_dir = write_config(tmp_path / "config", MODELS_YAML, policy)
    settings = _settings(kafka_bootstrap, prefix, config_dir)
    worker, port = start_web_worker(tmp_path, kafka_bootstrap, prefix, config_dir)
    try:
        async with RouterClient(settings, start_timeout_s=30.0) as remote:
            assert (await remote.route("chat", timeout_s=90.0)).worker_id is not None  # the worker decides
        async with RouterClient(settings, mode="local", seed=3, start_timeout_s=30.0) as local:
            decided = await _route_all(local, 200)
            assert all(d.worker_id == local.client_id for d in decided)
            await local.flush()

        async def stats() -> dict[str, Any]:
            return dict(orjson.loads(await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/api/stats")))

        def settled(seen: dict[str, Any]) -> bool:
            # The join takes an entry out of its table (join_in_flight) as it expires it, but counts it (and
            # writes its tombstone) only once the tick's batch is acknowledged: wait for the counters too.
            join = seen["join"]
            done = join["reward_timeouts"] >= 201 and join["expired_entries"] >= 201
            return bool(done and seen["join_in_flight"] == 0)

        deadline = time.monotonic() + 120
        seen = await stats()
        while time.monotonic() < deadline and not settled(seen):
            await asyncio.sleep(0.5)
            seen = await stats()
        assert seen["join"]["reward_timeouts"] == 201 and seen["join_in_flight"] == 0, seen["join"]
        assert seen["join"]["expired_entries"] == 201
        live = await read_compacted(kafka_bootstrap, f"{prefix}-request_to_pending-changelog")
        assert not {orjson.dumps(d.request_id) for d in decided} & set(
            live
        )  # each one's last record a tombstone
    finally:
        assert worker.terminate() == 0, worker.log_tail()
