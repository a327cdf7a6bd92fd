"""A worker stopped with SIGTERM while it is still setting up exits 0 (faust's own handler is not installed yet;
the signal's default action made it exit -15)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path


def _sigterm_while_connecting(tmp_path: Path, *args: str) -> int:
    """The exit code of ``banditroute worker ARGS`` stopped by SIGTERM once it connects to a "broker" that
    accepts connections and never answers (it is past its imports, creating its topics or checking)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(120)
        env = {
            **os.environ,
            "BANDITROUTE_KAFKA_BOOTSTRAP": f"127.0.0.1:{silent.getsockname()[1]}",
            "BANDITROUTE_DATA_DIR": str(tmp_path / "data"),
            "BANDITROUTE_WEB_ENABLED": "false",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "banditroute", "worker", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            conn, _ = silent.accept()
            conn.close()
            proc.send_signal(signal.SIGTERM)
            return proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_sigterm_while_the_worker_sets_up_exits_cleanly(tmp_path: Path) -> None:
    assert _sigterm_while_connecting(tmp_path) == 0


def test_sigterm_stops_a_worker_check_without_saying_ok(tmp_path: Path) -> None:
    """``worker --check`` answers whether the worker could start: stopped by SIGTERM it has not said so."""
    assert _sigterm_while_connecting(tmp_path, "--check") != 0
