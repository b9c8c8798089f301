"""The CLI's contract from the conventions: streams and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runner.cli import run_cli


def test_help_lists_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--help"]) == 0
    out = capsys.readouterr().out
    assert "130 interrupted" in out


def test_unknown_command_is_a_usage_error_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["no-such-command"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert "--help" in captured.err


def test_console_script_runs_as_a_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "--version"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0
    assert "runner" in proc.stdout
