"""The command line's surface: help lists the commands, every command has --help."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from banditroute.cli import COMMANDS, main


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for name in COMMANDS:
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output


def test_console_script_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "banditroute", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "kafka" in proc.stdout
