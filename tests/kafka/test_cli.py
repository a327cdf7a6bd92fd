"""The client commands in a subprocess against the real broker (and, for ``route``, the real worker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


def _env(bootstrap: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITROUTE_")}
    env.update(
        BANDITROUTE_KAFKA_BOOTSTRAP=bootstrap,
        BANDITROUTE_TOPIC_PREFIX=prefix,
        BANDITROUTE_CONFIG_DIR=str(REPO / "config"),
        **extra,
    )
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 50.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "banditroute", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_catalog_add_then_list(kafka_bootstrap: str, unique_prefix: str) -> None:
    env = _env(kafka_bootstrap, unique_prefix)
    added = cli(
        env,
        "catalog",
        "add",
        "new-model",
        "--price-in",
        "0.001",
        "--price-out",
        "0.002",
        "--capability",
        "json,tools",
        "--lifecycle",
        "canary",
        "--format",
        "json",
    )
    assert added.returncode == 0, added.stderr
    assert json_lines(added.stdout)[0]["action"] == "added"
    bad = cli(env, "catalog", "add", "no-prices", "--format", "json")
    assert bad.returncode == 1 and "price_in_per_1k_usd" in bad.stderr
    listed = cli(env, "catalog", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    view = {e["model"]: e for e in json_lines(listed.stdout)}
    assert view["new-model"]["lifecycle"] == "canary"
    assert view["new-model"]["capabilities"] == ["json", "tools"]
    assert view["new-model"]["source"] == "catalog"
    assert view["small-fast"]["source"] == "config"  # from config/models.yaml
    updated = cli(env, "catalog", "update", "new-model", "--lifecycle", "active", "--format", "json")
    assert updated.returncode == 0, updated.stderr
    assert json_lines(updated.stdout)[0]["price_in_per_1k_usd"] == 0.001
    retired = cli(env, "catalog", "retire", "new-model", "--format", "json")
    assert retired.returncode == 0, retired.stderr
    view = {e["model"]: e for e in json_lines(cli(env, "catalog", "list", "--format", "json").stdout)}
    assert view["new-model"]["lifecycle"] == "retired"


def test_feedback_then_tail(kafka_bootstrap: str, unique_prefix: str) -> None:
    env = _env(kafka_bootstrap, unique_prefix)
    sent = cli(
        env,
        "feedback",
        "--request-id",
        "req-1",
        "--model",
        "small-fast",
        "--quality",
        "0.75",
        "--latency-ms",
        "321",
        "--cost-usd",
        "0.0004",
        "--format",
        "json",
    )
    assert sent.returncode == 0, sent.stderr
    invalid = cli(env, "feedback", "--request-id", "req-2", "--model", "small-fast", "--quality", "0.5")
    assert invalid.returncode == 1 and "cost_usd" in invalid.stderr
    tailed = cli(env, "tail", "feedback", "--limit", "1", "--format", "json")
    assert tailed.returncode == 0, tailed.stderr
    (event,) = json_lines(tailed.stdout)
    assert (event["request_id"], event["model"], event["quality"]) == ("req-1", "small-fast", 0.75)
    assert event["idempotency_key"] == "req-1:small-fast"
    none = cli(env, "tail", "feedback", "--model", "other", "--format", "json")
    assert none.returncode == 0 and none.stdout.strip() == ""


def test_tail_limit_prints_the_newest_events_of_all_partitions(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    """``--limit N`` prints the N newest events by timestamp, whichever partition holds them: the partitions are
    read one after another, so the newest event may be read first (it was the last read before)."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    env = _env(kafka_bootstrap, unique_prefix)
    sent = cli(env, "feedback", "--request-id", "req-0", "--model", "small-fast", "--quality", "0.5",
               "--cost-usd", "0.001", "--format", "json")  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    (template,) = json_lines(cli(env, "tail", "feedback", "--format", "json").stdout)
    topic = f"{unique_prefix}.feedback"

    async def produce() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            partitions = sorted(await producer.partitions_for(topic))
            now_ms = int(time.time() * 1000) + 60_000  # newer than req-0
            # the newest event in the first partition, older ones after it in the later partitions
            for age, partition in enumerate(partitions):
                request_id = f"req-{partition}-{age}"
                event = {**template, "request_id": request_id, "idempotency_key": f"{request_id}:small-fast"}
                await producer.send_and_wait(
                    topic, json.dumps(event).encode(), partition=partition, timestamp_ms=now_ms - 1000 * age
                )
            return len(partitions)
        finally:
            await producer.stop()

    n = asyncio.run(produce())
    assert n >= 2
    tailed = cli(env, "tail", "feedback", "--limit", "2", "--format", "json")
    assert tailed.returncode == 0, tailed.stderr
    assert [e["request_id"] for e in json_lines(tailed.stdout)] == ["req-1-1", "req-0-0"]  # oldest first


def test_route_with_worker_then_tail_decisions(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    env = _env(
        kafka_bootstrap,
        unique_prefix,
        BANDITROUTE_APP_ID=f"{unique_prefix}-app",
        BANDITROUTE_WEB_ENABLED="false",
        BANDITROUTE_DATA_DIR=str(tmp_path / "worker"),
    )
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "banditroute", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 120  # a worker starts in 5-24 s on a loaded 2-core machine
        routed = None
        while time.monotonic() < deadline:  # the first attempts may time out while the worker starts
            routed = cli(
                env, "route", "--task-type", "chat", "--tenant", "acme", "--timeout", "5", "--format", "json"
            )
            if routed.returncode == 0 or worker.poll() is not None:
                break
        assert routed is not None and routed.returncode == 0, (
            routed and routed.stderr,
            (tmp_path / "worker.log").read_text()[-3000:],
        )
        decision = json_lines(routed.stdout)[0]
        assert decision["task_type"] == "chat" and decision["model"] in {
            "gpt-large",
            "mid-tier",
            "small-fast",
        }
        assert decision["is_default_route"] is False
        tailed = cli(env, "tail", "decisions", "--limit", "1", "--task-type", "chat", "--format", "json")
        assert tailed.returncode == 0, tailed.stderr
        (seen,) = json_lines(tailed.stdout)
        assert seen["request_id"] == decision["request_id"]
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()


def test_unreachable_broker_exits_3() -> None:
    from banditroute.kafka.local import free_port

    env = _env(f"127.0.0.1:{free_port()}", "nobroker")
    routed = cli(env, "route", "--task-type", "chat", "--timeout", "1", "--format", "json")
    assert routed.returncode == 3, routed.stderr
    routed = cli(
        env,
        "route",
        "--task-type",
        "chat",
        "--timeout",
        "1",
        "--default-route",
        "small-fast",
        "--format",
        "json",
    )
    assert routed.returncode == 3
    assert json_lines(routed.stdout)[0]["is_default_route"] is True
    tailed = cli(env, "tail", "decisions", "--format", "json")
    assert tailed.returncode == 3
