"""A pip-installed banditroute runs outside the repository.

The wheel is built with ``python -m build`` and installed into a new virtualenv in a temporary folder; from
there, with no ``BANDITROUTE_*`` variable but the broker address, the installed command runs ``init``,
``kafka up`` (on a port of its own), a ``worker``, ``route``, ``feedback``, ``tail decisions --limit 1``
and ``kafka down``.

Dependencies: pip resolves and installs the wheel's declared requirements (pinned by ``constraints.txt``)
offline from a wheelhouse, ``--no-index --find-links``. The wheelhouse is filled once per machine and
dependency set by ``pip wheel`` from PyPI and kept under ``$BANDITROUTE_HOME`` (like the Kafka jars), so a
missing or wrong requirement in ``pyproject.toml`` still fails here; only the downloads are cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from banditroute.kafka.local import default_home, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str], timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    assert done.returncode == 0, (
        f"{argv} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done


def _wheelhouse() -> Path:
    """The folder of dependency wheels for this dependency set (filled from PyPI on first use)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    key = hashlib.sha256(repr(project["dependencies"]).encode() + (ROOT / "constraints.txt").read_bytes())
    return default_home() / f"wheelhouse-{key.hexdigest()[:12]}"


def _build_wheel(out: Path) -> Path:
    source = out / "source"  # a copy, so that the build leaves nothing in the checkout
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", ".*_cache", "artifacts"
        ),
        symlinks=True,
    )
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out / "dist"), str(source)])
    (wheel,) = (out / "dist").glob("banditroute-*.whl")
    return wheel


def test_built_wheel_runs_outside_the_checkout(tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    t = time.monotonic()
    wheel = _build_wheel(tmp_path)
    timings["build"] = time.monotonic() - t

    t = time.monotonic()
    house = _wheelhouse()
    if not house.is_dir():
        partial = house.with_name(house.name + f".partial-{os.getpid()}")
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "-c",
                str(ROOT / "constraints.txt"),
                "-w",
                str(partial),
                str(wheel),
            ],
            timeout=600,
        )
        for built in partial.glob("banditroute-*.whl"):
            built.unlink()  # the wheelhouse holds dependencies only; the wheel under test comes from dist/
        try:
            partial.rename(house)
        except OSError:  # another run filled it meanwhile
            shutil.rmtree(partial, ignore_errors=True)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-index",
            "--find-links",
            str(house),
            str(wheel),
        ],
        timeout=600,
    )
    timings["install"] = time.monotonic() - t

    user = tmp_path / "elsewhere"
    user.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BANDITROUTE_", "KAFKA_")) and k != "PYTHONPATH"
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    port = free_port()
    env["BANDITROUTE_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{port}"
    env["BANDITROUTE_WEB_ENABLED"] = "false"

    def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return _run([str(venv / "bin" / "banditroute"), *args], timeout=timeout, cwd=user, env=env)

    where = _run([str(python), "-c", "import banditroute; print(banditroute.__file__)"], cwd=user, env=env)
    assert where.stdout.strip().startswith(str(venv)), where.stdout  # the installed copy, not the checkout

    t = time.monotonic()
    cli("init")
    assert (user / "config" / "models.yaml").is_file() and (
        user / "config" / "scenarios" / "default.yaml"
    ).is_file()
    cli("kafka", "up", "--port", str(port), timeout=150)
    worker = None
    try:
        log_path = user / "worker.log"
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                [str(venv / "bin" / "banditroute"), "worker"], cwd=user, env=env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 120
        while "worker ready" not in log_path.read_text(errors="replace"):
            assert worker.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "no 'worker ready' line"
            time.sleep(0.2)
        assert "packaged defaults" not in log_path.read_text()  # it found the config/ that init wrote

        decision = json.loads(cli("route", "--task-type", "summarise", "--format", "json").stdout)
        assert decision["is_default_route"] is False
        cli(
            "feedback",
            "--request-id",
            decision["request_id"],
            "--model",
            decision["model"],
            "--quality",
            "0.9",
            "--cost-usd",
            "0.002",
        )
        tail = cli("tail", "decisions", "--limit", "1", "--format", "json").stdout.splitlines()
        assert [json.loads(line)["request_id"] for line in tail] == [decision["request_id"]]
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=30)
        down = subprocess.run(
            [str(venv / "bin" / "banditroute"), "kafka", "down", "--port", str(port), "--purge"],
            cwd=user,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    timings["run"] = time.monotonic() - t
    print({k: round(v, 1) for k, v in timings.items()})
    assert down.returncode == 0, down.stderr
    assert worker.returncode == 0, log_path.read_text(errors="replace")[-3000:]
