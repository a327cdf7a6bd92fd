"""The README works as written: its shell and Python blocks run, in order, as a new user would run them.

They run in a fresh empty folder, with the ``banditroute`` command of this environment on ``PATH`` and no
``BANDITROUTE_*`` variable other than those the README sets, against the worker the README starts (``banditroute
worker &``), on the suite's real broker. Two things differ from a user's machine, both because the machine is
shared: the README's bootstrap address ``127.0.0.1:9092`` is replaced by the suite's broker, the worker's
web server gets a free port instead of 6066 (``BANDITROUTE_WEB_PORT``), and the client's 2 s timeout before it
falls back to its default route becomes 30 s (the test asserts that the worker answered; on a machine that also
runs the rest of the suite, 2 s would measure the machine's load, not the README). With an external broker
(``KAFKA_BOOTSTRAP_SERVERS``) the blocks also get a fresh topic prefix, since the default one may be in use.
Blocks and lines the README marks ``# not run by tests/docs: <reason>`` are skipped (see ``readme.py``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from banditroute.kafka.local import _pid_alive as _alive  # a zombie counts as gone
from banditroute.kafka.local import free_port
from tests.docs.readme import CODE, Block, describe, readme_blocks

README_BOOTSTRAP = "127.0.0.1:9092"
README_CLIENT_TIMEOUT, SUITE_CLIENT_TIMEOUT = "timeout_s=2.0", "timeout_s=30.0"
USAGE = (
    "banditroute worker &",
    "RouterClient(",
    'RouterClient(mode="local"',
    "SyncRouterClient(",
    "banditroute route --task-type",
    "banditroute route --file",
    "client.feedback(",
    "banditroute feedback --request-id",
    "banditroute feedback --file",
    "banditroute tail decisions",
    "banditroute tail feedback",
    "banditroute tail dlq",
    "banditroute state",
    "banditroute catalog add",
    "banditroute catalog list",
    "banditroute config push",
    "banditroute bench route",
    "read_topic(",
    "banditroute replay",
    "banditroute evaluate",
)


def _runnable() -> list[Block]:
    return [b for b in readme_blocks() if b.lang in CODE and b.skip_reason is None]


def test_every_code_block_is_run_or_skipped_with_a_reason() -> None:
    blocks = readme_blocks()
    assert [b for b in blocks if b.lang in ("sh", "console", "py", "python3")] == [], "use bash/shell/python"
    for line in describe(blocks):
        assert "no reason given" not in line, line
    text = "".join(b.runnable for b in _runnable())
    missing = [snippet for snippet in USAGE if snippet not in text]
    assert not missing, f"usage the README test no longer runs: {missing}"


class Session:
    """Runs README blocks one after another in one folder, carrying the environment the blocks export."""

    def __init__(self, folder: Path, env: dict[str, str], bootstrap: str) -> None:
        self.folder = folder
        self.env = env
        self.bootstrap = bootstrap
        self.background: list[int] = []

    def run(self, block: Block, n: int) -> subprocess.CompletedProcess[str]:
        out, err = self.folder / f".block{n}.out", self.folder / f".block{n}.err"
        text = block.runnable.replace(README_BOOTSTRAP, self.bootstrap)
        text = text.replace(README_CLIENT_TIMEOUT, SUITE_CLIENT_TIMEOUT)
        env_file, pids = self.folder / f".block{n}.env", self.folder / f".block{n}.pids"
        if block.lang == "python":
            script = self.folder / f".block{n}.py"
            script.write_text(text)
            argv = [sys.executable, str(script)]
        else:
            trailer = f"\njobs -p > {pids}\nenv -0 > {env_file}\n"
            argv = ["bash", "-euo", "pipefail", "-c", text + trailer]
        with open(out, "w") as stdout, open(err, "w") as stderr:
            # files, not pipes: a background worker keeps its stderr open after the block's shell exits
            code = subprocess.run(
                argv,
                cwd=self.folder,
                env=self.env,
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                timeout=180,
                check=False,
            ).returncode
        done = subprocess.CompletedProcess(argv, code, out.read_text(), err.read_text())
        if block.lang != "python" and env_file.exists():
            self.env = dict(
                kv.split("=", 1) for kv in env_file.read_text().split("\0") if "=" in kv and kv[0] != "="
            )
            started = [int(p) for p in pids.read_text().split()]
            self.background += started
            if started:
                self._wait_ready(err, started)
        return done

    def _wait_ready(self, err: Path, pids: list[int], timeout_s: float = 120.0) -> None:
        """A block that starts the worker in the background is followed, as the README says, by its "worker
        ready" line (the user sees it on the terminal) before the next block runs."""
        deadline = time.monotonic() + timeout_s
        while "worker ready" not in err.read_text(errors="replace"):
            alive = [p for p in pids if _alive(p)]
            assert alive, f"the background worker exited:\n{err.read_text(errors='replace')[-3000:]}"
            assert time.monotonic() < deadline, f"no 'worker ready' in {timeout_s} s"
            time.sleep(0.2)

    def stop(self) -> list[str]:
        """Stop what the blocks left running (SIGTERM, then SIGKILL); returns problems seen."""
        problems = []
        for pid in self.background:
            if not _alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
                problems.append(f"pid {pid} ignored SIGTERM for 30 s")
        return problems


def _user_env(bootstrap: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BANDITROUTE_", "KAFKA_", "PYTEST", "COV_")) and k != "PYTHONPATH"
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["BANDITROUTE_WEB_PORT"] = str(free_port())
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        prefix = f"readme{uuid.uuid4().hex[:8]}"
        env.update(BANDITROUTE_TOPIC_PREFIX=prefix, BANDITROUTE_APP_ID=prefix)
    return env


@pytest.mark.kafka
def test_readme_blocks_run_in_order(kafka_bootstrap: str, tmp_path: Path) -> None:
    assert shutil.which("jq"), "the README's shell examples use jq (apt-get install jq; `make test` does)"
    folder = tmp_path / "user"
    folder.mkdir()
    session = Session(folder, _user_env(kafka_bootstrap), kafka_bootstrap)
    timings = []
    try:
        for n, block in enumerate(_runnable()):
            started = time.monotonic()
            done = session.run(block, n)
            timings.append(f"README.md:{block.line} {block.lang} {time.monotonic() - started:.1f} s")
            assert done.returncode == 0, (
                f"README.md:{block.line} ({block.section}) exited {done.returncode}\n--- block\n{block.runnable}"
                f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
            )
            complaints = [
                ln
                for ln in done.stderr.splitlines()
                if ln.startswith(("error:", "warning:", "note:", "Traceback"))
            ]
            assert not complaints, f"README.md:{block.line} complained: {complaints}"
            if "decision.is_default_route)" in block.text:  # the worker answered, not the default route
                assert README_CLIENT_TIMEOUT in block.text, (
                    "the suite's longer client timeout no longer applies"
                )
                assert done.stdout.split()[-1] == "False", done.stdout
    finally:
        problems = session.stop()
        print("\n".join(timings))
    assert not problems, problems
    worker_log = (folder / ".block0.err").read_text(errors="replace")
    assert worker_log.count("worker ready") == 1
    assert "using the packaged defaults" in worker_log  # no config folder in the user's folder
    assert (folder / ".banditroute" / "worker").is_dir()
