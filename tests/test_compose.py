"""docker-compose.yml cannot run here (no Docker engine), so its structure is checked against the code."""

from __future__ import annotations

from pathlib import Path

import yaml

from banditroute.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict[str, dict[str, dict[str, object]]]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_services_present() -> None:
    services = _compose()["services"]
    assert set(services) >= {"kafka", "worker", "simulator"}
    assert str(services["kafka"]["image"]).startswith("apache/kafka:")
    kafka_env = services["kafka"]["environment"]
    assert isinstance(kafka_env, dict)
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_worker_environment_matches_settings() -> None:
    known = {f"BANDITROUTE_{name.upper()}" for name in Settings.model_fields}
    for name in ("worker", "simulator"):
        env = _compose()["services"][name]["environment"]
        assert isinstance(env, dict)
        unknown = set(env) - known
        assert not unknown, f"{name} sets variables the code never reads: {sorted(unknown)}"
        assert env["BANDITROUTE_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_compose_ports_bind_localhost() -> None:
    for service in _compose()["services"].values():
        for port in service.get("ports", []) or []:  # type: ignore[union-attr]
            assert str(port).startswith("127.0.0.1:"), f"{port} would listen on every interface"
