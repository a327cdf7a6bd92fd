"""Local broker tooling: clear errors for bad states, without starting Java."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from banditroute.kafka.local import BrokerError, LocalKafka


def test_status_reports_stale_pid(tmp_path: Path) -> None:
    broker = LocalKafka(1, data_dir=tmp_path)
    (tmp_path / "broker.pid").write_text("999999999")
    status = broker.status()
    assert not status.running
    assert "stale pid" in status.detail
    assert "stale pid" in broker.down()
    assert not (tmp_path / "broker.pid").exists()


def test_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match="taken by another process"):
            LocalKafka(port, data_dir=tmp_path).up(timeout_s=5)


def test_corrupt_data_folder_is_named(tmp_path: Path) -> None:
    broker = LocalKafka(1, data_dir=tmp_path)
    broker.log_dir.mkdir(parents=True)
    (broker.log_dir / "meta.properties").write_text("garbage")
    broker.props_file.write_text("x=y")
    with pytest.raises(BrokerError, match="corrupt"):
        broker._check_data_dir()


def test_missing_maven_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match="Maven"):
        LocalKafka(1, home=tmp_path, data_dir=tmp_path / "d").fetch()
