"""Long errors wrap: one `error:` first line, then indented details.

A short error stays `error: WHAT — HINT` on one line. A long one, or one with
details (every missing secret with the command that creates it), is its
message on the first line and the rest indented below, wrapped to the
terminal's width, or 100 columns when stderr is not a terminal.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from runner.cli import _fail
from runner.cli._text import format_error
from runner.redact import active
from tests.helpers import RUNNER, leak_forms, run_runner, runner_env, scan_bytes

COMMAND = "`runner secret set GITHUB_TOKEN --user alice`"


def test_a_short_error_stays_on_one_line() -> None:
    assert format_error("no such job", "list jobs with `runner jobs`") == (
        "error: no such job — list jobs with `runner jobs`"
    )


def test_a_long_error_is_a_first_line_and_an_indented_hint() -> None:
    hint = "first do this, then that, " * 6 + f"and finally run {COMMAND}"
    text = format_error("the thing failed", hint, width=60)
    lines = text.splitlines()
    assert lines[0] == "error: the thing failed"
    assert all(line.startswith("  ") for line in lines[1:])
    assert all(len(line) <= 60 for line in lines)
    assert " ".join(line.strip() for line in lines[1:]) == hint
    assert any(COMMAND in line for line in lines)  # a command is never split


def test_details_replace_the_hint_one_per_line() -> None:
    details = [f"step {i} (line {i}): NAME_{i} — create it with {COMMAND}" for i in (1, 2)]
    text = format_error("2 secrets not found", "; ".join(details), details, width=100)
    assert text.splitlines() == ["error: 2 secrets not found", *[f"  {d}" for d in details]]


def test_the_first_line_is_never_broken() -> None:
    message = "a message " * 20
    assert format_error(message.strip(), "hint", width=40).splitlines()[0] == (
        f"error: {message.strip()}"
    )


SPEC = """name: many
on:
  - repository: github.com/acme/app
steps:
  - run: echo hi
    container: alpine
    env: [GITHUB_TOKEN, NPM_TOKEN]
  - run: echo again
    container: alpine
    env:
      - SONAR_LOGIN_TOKEN_FOR_THE_WHOLE_ORGANISATION
changesetTemplate:
  title: t
  branch: b
  commit:
    message: m
"""


def explain_missing(tmp_path: Path) -> tuple[list[str], Path]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    return [RUNNER, "env", "explain", str(spec)], spec


def test_missing_secrets_are_listed_one_per_line(tmp_path: Path) -> None:
    args, _ = explain_missing(tmp_path)
    proc = run_runner(args[1:], runner_env(tmp_path / "home"))
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert lines[first] == (
        "error: 3 secrets not found in user:alice, global: GITHUB_TOKEN, NPM_TOKEN, "
        "SONAR_LOGIN_TOKEN_FOR_THE_WHOLE_ORGANISATION"
    )
    details = lines[first + 1 :]
    assert details == [
        "  step 1 (line 7): GITHUB_TOKEN — create it with `runner secret set GITHUB_TOKEN --user "
        "alice`",
        "  step 1 (line 7): NPM_TOKEN — create it with `runner secret set NPM_TOKEN --user alice`",
        "  step 2 (line 11): SONAR_LOGIN_TOKEN_FOR_THE_WHOLE_ORGANISATION — create it with",
        "    `runner secret set SONAR_LOGIN_TOKEN_FOR_THE_WHOLE_ORGANISATION --user alice`",
    ]
    assert all(len(line) <= 100 for line in details)


def test_on_a_terminal_details_wrap_to_its_width(tmp_path: Path) -> None:
    args, _ = explain_missing(tmp_path)
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
    try:
        proc = subprocess.run(
            args,
            env=runner_env(tmp_path / "home"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=child,
            timeout=120,
            check=False,
        )
        os.close(child)
        child = -1
        raw = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal is closed once the child and we let go of it
                break
            if not chunk:
                break
            raw += chunk
    finally:
        if child != -1:
            os.close(child)
        os.close(main)
    assert proc.returncode == 1
    lines = raw.decode().replace("\r\n", "\n").splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    details = lines[first + 1 :]
    assert len(details) > 3  # narrower than 100 columns: the lines broke
    # Only a command too long for the width overflows, alone on its line (it stays copyable).
    too_long = [line.strip() for line in details if len(line) > 60]
    assert too_long == [
        "`runner secret set SONAR_LOGIN_TOKEN_FOR_THE_WHOLE_ORGANISATION --user alice`"
    ], details
    joined = " ".join(line.strip() for line in details)
    assert "create it with `runner secret set NPM_TOKEN --user alice`" in joined


def test_a_value_is_redacted_before_the_lines_are_broken(
    capsys: pytest.CaptureFixture[str],
) -> None:
    value = "alpha bravo charlie delta echo foxtrot golf"
    active().register("WRAP_TEST_SECRET", value)
    hint = "word " * 15 + value + " word" * 10
    assert _fail("it failed", 1, hint=hint) == 1
    err = capsys.readouterr().err
    assert "[REDACTED:WRAP_TEST_SECRET]" in err
    flat = " ".join(err.split())
    assert scan_bytes(flat.encode(), leak_forms([value])) == []
