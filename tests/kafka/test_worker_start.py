"""A worker started the way a new user starts it: in an empty folder, with only the broker and a prefix set.

It creates its data folder, falls back to the packaged configuration (saying so), logs one "worker ready"
line, and a client whose request is not answered is told why: no worker in the decide group, or workers that
are behind (a stopped worker process keeps its group membership until its session times out).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka


def _env(bootstrap: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITROUTE_")}
    env.update(
        BANDITROUTE_KAFKA_BOOTSTRAP=bootstrap,
        BANDITROUTE_TOPIC_PREFIX=prefix,
        BANDITROUTE_APP_ID=prefix,
        BANDITROUTE_WEB_ENABLED="false",
        BANDITROUTE_SESSION_TIMEOUT_S="30",  # the stopped worker must stay a member while the client asks
    )
    return env


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "banditroute", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _wait_for_line(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout_s: float = 90.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace")
        if needle in text:
            return text
        assert proc.poll() is None, f"worker exited with {proc.returncode}:\n{text[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no {needle!r} within {timeout_s} s:\n{path.read_text(errors='replace')[-3000:]}")


def test_route_without_worker_says_no_worker_runs(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    done = _cli(
        _env(kafka_bootstrap, unique_prefix), tmp_path, "route", "--task-type", "summarise", "--timeout", "1"
    )
    assert done.returncode == 3, done.stderr
    assert f"no worker is running for {unique_prefix} (group {unique_prefix} has no members" in done.stderr


def test_worker_starts_in_an_empty_folder_and_a_stopped_one_is_reported_with_its_lag(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    env = _env(kafka_bootstrap, unique_prefix)
    check = _cli(env, tmp_path, "worker", "--check")
    assert check.returncode == 0, check.stderr
    assert "packaged defaults" in check.stdout and check.stdout.rstrip().endswith("ok")
    assert "native extension: " in check.stdout

    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "banditroute", "worker"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    try:
        text = _wait_for_line(log_path, "worker ready", worker)
        assert (tmp_path / ".banditroute" / "worker").is_dir()  # created with its parent
        ready = [line for line in text.splitlines() if "worker ready" in line]
        assert len(ready) == 1 and "requests partitions [0, 1, 2, 3]" in ready[0]
        assert "using the packaged defaults" in text

        answered = _cli(env, tmp_path, "route", "--task-type", "summarise", "--format", "json")
        assert answered.returncode == 0, answered.stderr
        assert '"is_default_route":false' in answered.stdout

        worker.send_signal(signal.SIGSTOP)  # still a group member, but nothing is decided
        try:
            stalled = _cli(env, tmp_path, "route", "--task-type", "summarise", "--timeout", "2")
        finally:
            worker.send_signal(signal.SIGCONT)
        assert stalled.returncode == 3, stalled.stderr
        # lag 1: the stalled request; 2 if the worker was stopped before it committed the first one (its
        # commit follows the decision by a produce acknowledgement and up to 50 ms)
        assert re.search(r"workers are running but did not answer within 2 s \(lag [12]\)", stalled.stderr), (
            stalled.stderr
        )
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert worker.returncode == 0, log_path.read_text(errors="replace")[-3000:]


def test_worker_check_without_a_broker_exits_3(tmp_path: Path) -> None:
    from banditroute.kafka.local import free_port

    env = _env(f"127.0.0.1:{free_port()}", "nobroker")
    done = _cli(env, tmp_path, "worker", "--check")
    assert done.returncode == 3
    assert "cannot reach Kafka at 127.0.0.1:" in done.stderr


def test_a_decisions_topic_that_refuses_the_workers_batches_stops_it_at_start_with_the_fix(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """A decisions topic made beforehand with a ``max.message.bytes`` below the worker's 512 KiB record batches
    would refuse its sends at the first full batch, in the middle of a busy hour. The worker, and its
    ``--check``, refuse it at start instead, naming the topic and the setting to raise."""
    import asyncio

    from banditroute.kafka.admin import ensure_topics, new_topic

    decisions = f"{unique_prefix}.decisions"
    asyncio.run(
        ensure_topics(kafka_bootstrap, None, [new_topic(decisions, 4, {"max.message.bytes": "100000"})])
    )
    env = _env(kafka_bootstrap, unique_prefix)
    for args in (("worker", "--check"), ("worker",)):
        done = _cli(env, tmp_path, *args)
        assert done.returncode == 3, (args, done.stdout, done.stderr)
        assert (
            f"max.message.bytes below the 524288 bytes of the worker's record batches on topic '{decisions}' (100000)"
            in done.stderr
        )
        assert "--add-config max.message.bytes=524288" in done.stderr


def test_a_join_table_changelog_that_refuses_the_workers_batches_stops_it_at_start(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """The join writes its tables' changelogs (made by faust, with the broker's default) in record batches of up to
    512 KiB too: one a ``max.message.bytes`` below that refuses (MessageSizeTooLargeError) fails the join's flush
    at every try once a batch is that large, so the worker refuses it at start, as it does the topics it names."""
    import asyncio

    from banditroute.kafka.admin import ensure_topics, new_topic

    changelog = f"{unique_prefix}-request_to_pending-changelog"  # faust's name: <app id>-<table>-changelog
    asyncio.run(
        ensure_topics(kafka_bootstrap, None, [new_topic(changelog, 4, {"max.message.bytes": "100000"})])
    )
    done = _cli(_env(kafka_bootstrap, unique_prefix), tmp_path, "worker", "--check")
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert f"on topic '{changelog}' (100000)" in done.stderr
