"""Security on a dedicated SASL_PLAINTEXT / SCRAM-SHA-256 broker: authenticated worker, client and CLI end to
end; no secret in logs or --help; localhost-only web binding by default; forged feedback moves no posterior;
per-tenant state isolates tenants; size bounds keep one event from exhausting memory."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from banditroute.client import RouterClient, read_topic
from banditroute.core import decode_state
from banditroute.events import MAX_ORIGINAL_BYTES
from banditroute.kafka.local import LocalKafka, free_port
from banditroute.settings import Settings
from tests.kafka.router_world import MODELS_YAML, POLICY_YAML, request, write_config
from tests.reliability.support import rss_kb, start_worker, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(420)]

USER = "router-svc"
PASSWORD = f"pw-{uuid.uuid4().hex}"  # a value that cannot appear anywhere by accident
SECRET_MARKERS = (PASSWORD, PASSWORD[3:])


def sasl_env(bootstrap: str, password: str = PASSWORD) -> dict[str, str]:
    return {
        "BANDITROUTE_KAFKA_BOOTSTRAP": bootstrap,
        "BANDITROUTE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "BANDITROUTE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "BANDITROUTE_KAFKA_SASL_USERNAME": USER,
        "BANDITROUTE_KAFKA_SASL_PASSWORD": password,
    }


def sasl_settings(bootstrap: str, prefix: str, password: str = PASSWORD) -> Settings:
    return Settings.model_validate(
        {
            "kafka_bootstrap": bootstrap,
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "SCRAM-SHA-256",
            "kafka_sasl_username": USER,
            "kafka_sasl_password": password,
            "topic_prefix": prefix,
        }
    )


def cli(args: list[str], env: dict[str, str], timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "banditroute", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


async def states_of(settings: Settings) -> dict[str, Any]:
    latest: dict[str, bytes] = {}
    async for rec in read_topic(settings, settings.topic("state")):
        if rec.key is not None and rec.value is not None:
            latest[orjson.loads(rec.key)] = rec.value
    return {k: decode_state(v) for k, v in latest.items()}


async def letters_of(settings: Settings) -> list[dict[str, Any]]:
    try:
        return [orjson.loads(r.value) async for r in read_topic(settings, settings.topic("deadletter"))]
    except LookupError:
        return []


def snapshot(state: Any) -> tuple[Any, ...]:
    return (state.version, state.names, (state.stats * state.scale).round(12).tolist(), dict(state.applied))


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    broker = LocalKafka(
        free_port(), data_dir=Path(tmp_path_factory.mktemp("sasl-broker")), sasl_scram=(USER, PASSWORD)
    )
    broker.up(timeout_s=120)
    try:
        yield broker
    finally:
        broker.down(purge=True)


def test_web_binds_to_localhost_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from banditroute.app import Router

    for name in list(os.environ):
        if name.startswith("BANDITROUTE_"):
            monkeypatch.delenv(name)
    settings = Settings()
    assert settings.web_host == "127.0.0.1"
    config_dir = write_config(tmp_path / "config")
    router = Router(settings.model_copy(update={"config_dir": config_dir, "data_dir": tmp_path / "data"}))
    assert router.app.conf.web_bind == "127.0.0.1"
    assert router.app.conf.web_host == "127.0.0.1"


def test_help_never_shows_secrets(sasl_broker: LocalKafka) -> None:
    env = sasl_env(sasl_broker.bootstrap)
    for args in (["worker", "--help"], ["route", "--help"], ["feedback", "--help"], ["--help"]):
        out = cli(args, env)
        assert out.returncode == 0, out.stderr
        for marker in SECRET_MARKERS:
            assert marker not in out.stdout + out.stderr, f"{args} shows the SASL password"


async def test_sasl_scram_end_to_end_with_forgery_tenants_and_bounds(
    sasl_broker: LocalKafka, unique_prefix: str, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    bootstrap, prefix = sasl_broker.bootstrap, unique_prefix
    settings = sasl_settings(bootstrap, prefix)
    config_dir = write_config(tmp_path / "config", MODELS_YAML, POLICY_YAML + "per_tenant: [chat]\n")
    worker = start_worker(
        tmp_path, bootstrap, prefix, "w1", config_dir, BANDITROUTE_LOG_LEVEL="info", **sasl_env(bootstrap)
    )
    log_path = tmp_path / "w1.log"
    try:
        # -- a client with the credentials: decisions and feedback, learned per tenant ---------------------
        async with RouterClient(settings, timeout_s=20.0, start_timeout_s=30.0) as client:
            assert client.degraded is None, client.degraded
            decided: dict[str, list[Any]] = {"acme": [], "globex": []}
            for tenant in ("acme", "globex") * 10:
                d = await client.route("chat", tenant=tenant)
                assert not d.is_default_route and d.decision_id == f"d:{d.request_id}"
                decided[tenant].append(d)
            for d in decided["globex"]:
                assert d.model is not None
                await client.feedback(
                    request_id=d.request_id,
                    decision_id=d.decision_id,
                    model=d.model,
                    quality=1.0,
                    cost_usd=0.001,
                )

            async def globex_learned() -> dict[str, Any] | None:
                states = await states_of(settings)
                key = "globex|chat"
                return states if key in states and states[key].observations.sum() == 10 else None

            states = await wait_until(globex_learned, timeout_s=60)
            assert states, "the worker did not learn tenant globex's feedback"
            assert set(states) == {"globex|chat"}
            globex_before = snapshot(states["globex|chat"])

            # -- tenant acme's traffic (real and forged) never moves globex's posterior --------------------
            for d in decided["acme"][:5]:
                assert d.model is not None
                await client.feedback(
                    request_id=d.request_id,
                    decision_id=d.decision_id,
                    model=d.model,
                    quality=0.0,
                    cost_usd=0.01,
                )
            target = decided["globex"][0]
            forged: list[tuple[str, dict[str, Any]]] = []
            forged.append(  # replay of globex's joined feedback with the same idempotency key
                (
                    "duplicate_feedback",
                    {"request_id": target.request_id, "model": target.model, "quality": 0.0},
                )
            )
            forged.append(  # another key for an already joined request
                (
                    "duplicate_feedback",
                    {
                        "request_id": target.request_id,
                        "model": target.model,
                        "quality": 0.0,
                        "idempotency_key": "forged-1",
                    },
                )
            )
            forged.append(  # a request nobody made
                (
                    "unknown_request",
                    {"request_id": f"ghost-{uuid.uuid4().hex}", "model": "budget", "quality": 0.0},
                )
            )
            forged.append(  # a decision id that is not the request's
                (
                    "unknown_request",
                    {
                        "request_id": decided["globex"][1].request_id,
                        "decision_id": decided["acme"][9].decision_id,
                        "model": decided["globex"][1].model,
                        "quality": 0.0,
                        "idempotency_key": "forged-2",
                    },
                )
            )
            for _, fields in forged:
                await client.feedback(cost_usd=0.001, **fields)

        # a request restricted to two models cannot be credited to the third
        async with RouterClient(settings, timeout_s=20.0, start_timeout_s=30.0) as client:
            narrow = await client.route("chat", tenant="acme", candidates=["premium", "balanced"])
            assert narrow.model in ("premium", "balanced")
            await client.feedback(
                request_id=narrow.request_id,
                model="budget",
                quality=1.0,
                cost_usd=0.0,
                idempotency_key="forged-3",
            )
        expected_reasons = sorted([r for r, _ in forged] + ["model_mismatch"])

        async def all_rejected() -> list[str] | None:
            reasons = sorted(dl["reason"] for dl in await letters_of(settings))
            return reasons if len(reasons) >= len(expected_reasons) else None

        reasons = await wait_until(all_rejected, timeout_s=60)
        assert reasons == expected_reasons

        async def acme_learned() -> dict[str, Any] | None:
            st = await states_of(settings)
            return st if "acme|chat" in st and st["acme|chat"].observations.sum() == 5 else None

        states = await wait_until(acme_learned, timeout_s=60)
        assert states, "tenant acme's real feedback was not learned (or forged feedback was)"
        await asyncio.sleep(1.0)
        states = await states_of(settings)
        assert snapshot(states["globex|chat"]) == globex_before, "tenant acme moved tenant globex's posterior"
        assert states["acme|chat"].observations.sum() == 5
        assert set(states) == {"globex|chat", "acme|chat"}

        # -- bounds: oversized and over-long events are dead-lettered, the worker stays small ---------------
        rss_before = rss_kb(worker.proc.pid)
        big = 900_000
        producer = AIOKafkaProducer(max_request_size=2_000_000, **producer_kwargs(settings))
        await producer.start()
        try:
            bounded: list[tuple[str, str, bytes]] = []
            for _ in range(10):
                blob = orjson.dumps({**request(), "metadata": {"x": "y" * big}})
                for suffix in ("requests", "feedback", "catalog"):
                    bounded.append(("payload_too_large", suffix, blob))
            limits = [
                {"metadata": {f"k{i}": i for i in range(33)}},
                {"metadata": {f"k{i}": "v" * 250 for i in range(20)}},
                {"candidates": [f"m{i}" for i in range(65)]},
                {"task_type": "t" * 129},
                {"request_id": "r" * 129},
                {"tenant": "a" * 129},
            ]
            for change in limits:
                bounded.append(("validation_error", "requests", orjson.dumps({**request(), **change})))
            for _reason, suffix, blob in bounded:
                await producer.send_and_wait(settings.topic(suffix), key=b"k", value=blob)
        finally:
            await producer.stop()
        n_before = len(expected_reasons)

        async def bounded_letters() -> list[dict[str, Any]] | None:
            letters = await letters_of(settings)
            return letters[n_before:] if len(letters) >= n_before + len(bounded) else None

        letters = await wait_until(bounded_letters, timeout_s=60)
        assert letters, "oversized events were not all dead-lettered"
        assert sorted(dl["reason"] for dl in letters) == sorted(r for r, *_ in bounded)
        for dl in letters:
            if dl["reason"] == "payload_too_large":
                assert dl["original_size"] > big and dl["original_truncated"]
                assert len(base64.b64decode(dl["original"])) == MAX_ORIGINAL_BYTES
        rss_after = rss_kb(worker.proc.pid)
        assert rss_after - rss_before < 150_000, f"worker RSS grew {rss_after - rss_before} kB"
        assert worker.alive()

        # -- the CLI with the credentials from the environment ---------------------------------------------
        env = {**sasl_env(bootstrap), "BANDITROUTE_TOPIC_PREFIX": prefix}
        out = cli(["route", "-t", "chat", "--tenant", "acme", "--format", "json", "--timeout", "30"], env)
        assert out.returncode == 0, out.stderr
        decision = orjson.loads(out.stdout.strip().splitlines()[-1])
        assert decision["decision_id"].startswith("d:") and not decision["is_default_route"]
        shown = cli(["state", "--format", "json"], env)
        assert shown.returncode == 0, shown.stderr
        assert "globex" in shown.stdout and "acme" in shown.stdout
        for marker in SECRET_MARKERS:
            assert marker not in out.stdout + out.stderr + shown.stdout + shown.stderr

        # -- wrong credentials: refused, and the client degrades to its default route without hanging ------
        bad = sasl_settings(bootstrap, prefix, password="not-the-password")
        t1 = time.monotonic()
        async with RouterClient(bad, timeout_s=2.0, start_timeout_s=5.0, default_route="budget") as intruder:
            assert intruder.degraded is not None
            fallback = await intruder.route("chat", tenant="globex")
            assert fallback.is_default_route
        assert time.monotonic() - t1 < 20
        plain = cli(
            ["route", "-t", "chat", "--format", "json", "--timeout", "3"],
            {"BANDITROUTE_KAFKA_BOOTSTRAP": bootstrap, "BANDITROUTE_TOPIC_PREFIX": prefix},
        )
        assert plain.returncode != 0
        print(f"\nsecurity (SASL/SCRAM): {time.monotonic() - t0:.1f} s")
    finally:
        code = worker.terminate()
    log = log_path.read_text(encoding="utf-8", errors="replace")
    assert "Authenticated as" in log
    for marker in SECRET_MARKERS:
        assert marker not in log, "the SASL password appears in the worker log"
    assert code == 0, f"worker exited with {code}; see {log_path}"


def producer_kwargs(settings: Settings) -> dict[str, Any]:
    return {"bootstrap_servers": settings.kafka_bootstrap, **settings.aiokafka_security()}
