"""Local broker tooling: clear errors for bad states, without starting Java."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from banditroute.kafka import local
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


def test_down_reaps_a_broker_whose_main_thread_exited_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JVM's /proc state reads "Z" once its main thread is gone while other threads still shut down: ``down``
    must still wait for the process and reap it (else a zombie and a ResourceWarning at interpreter exit)."""
    import subprocess
    import sys
    import time

    from banditroute.kafka import local

    shutting_down = (
        "import ctypes, signal, threading, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: None)\n"  # like a JVM: SIGTERM starts a slow shutdown
        "threading.Thread(target=time.sleep, args=(1.0,)).start()\n"
        "ctypes.CDLL(None).pthread_exit(None)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", shutting_down])
    monkeypatch.setitem(local._CHILDREN, child.pid, child)
    broker = LocalKafka(1, data_dir=tmp_path)
    (tmp_path / "broker.pid").write_text(str(child.pid))
    deadline = time.monotonic() + 10
    while local._pid_alive(child.pid) and time.monotonic() < deadline:  # the main thread has exited: "Z"
        time.sleep(0.01)
    assert child.poll() is None  # ... but the process still runs
    assert broker.down(timeout_s=10) == f"stopped (pid {child.pid})"
    assert child.returncode is not None and child.pid not in local._CHILDREN


def test_a_fetch_that_waited_for_another_finds_its_jars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The suite's workers (pytest -n 2) each start a broker: a fetch waits while another holds the lock, then
    takes the jars that one fetched instead of deleting them to fetch again (there is no Maven here)."""
    import fcntl
    import threading

    broker = LocalKafka(1, home=tmp_path, data_dir=tmp_path / "data")
    monkeypatch.setattr("banditroute.kafka.local.shutil.which", lambda _name: None)
    with pytest.raises(BrokerError, match="Maven"):
        broker.fetch()  # nothing fetched, nobody fetching: this one would have to fetch
    got: list[Path] = []
    with open(broker.lib_dir.parent / ".fetch.lock", "wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process fetching
        waiter = threading.Thread(target=lambda: got.append(broker.fetch()))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive() and not got  # waits for the lock
        broker.lib_dir.mkdir(parents=True)
        (broker.lib_dir / ".complete").write_text("done")
    waiter.join(10)
    assert got == [broker.lib_dir]


def test_the_controller_port_is_never_the_listener_port(monkeypatch: pytest.MonkeyPatch) -> None:
    ports = iter([9400, 9400, 9401])  # the listener's port comes back free first, as it once did
    monkeypatch.setattr(local, "free_port", lambda: next(ports))
    assert local.other_free_port(9400) == 9401
