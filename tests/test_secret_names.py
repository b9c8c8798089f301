"""Secret names are taken as typed: one not in upper case is refused, never changed.

The same rule holds in the CLI, the coordinator's API and the web form (the
web form's case is in test_web_pages.py); a step's env name still finds the
secret of the same name in upper case, and the missing-secret hint names
the command that works.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.errors import SecretValidationError
from runner.secrets.names import check_name, normalize_name
from tests.helpers import run_runner, runner_env, scan_tree
from tests.test_queue_support import World, sqlite_world

VALUE = "lower-case-test-value-0123"


@settings(max_examples=80, deadline=None)
@given(st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,40}", fullmatch=True))
def test_a_name_is_kept_as_typed_or_refused_never_changed(text: str) -> None:
    try:
        upper = normalize_name(text)
    except SecretValidationError:
        upper = None
    if upper is not None and upper == text:
        assert check_name(text) == text
        return
    with pytest.raises(SecretValidationError) as info:
        check_name(text)
    if upper is not None:  # a valid name in another case: the suggestion is its upper case
        assert info.value.hint == f"did you mean {upper}?"


def test_the_cli_refuses_a_lower_case_name_with_the_upper_case_suggestion(tmp_path: Path) -> None:
    env = runner_env(tmp_path / "home")
    proc = run_runner(["secret", "set", "lower_case", "--user", "alice"], env, input=VALUE)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        "error: secret name 'lower_case' is not upper case — did you mean LOWER_CASE?"
    )
    for command in (["secret", "rm", "Lower_Case", "--user", "alice"], ["secret", "log", "x_y"]):
        proc = run_runner(command, env)
        assert proc.returncode == 1
        assert "is not upper case — did you mean" in proc.stderr
    listed = run_runner(["secret", "list", "--json"], env)
    assert json.loads(listed.stdout) == []  # nothing stored under LOWER_CASE either
    proc = run_runner(["secret", "set", "LOWER_CASE", "--user", "alice"], env, input=VALUE)
    assert (proc.returncode, proc.stdout) == (0, "created LOWER_CASE v1 in user:alice\n")
    assert scan_tree([tmp_path / "home"], [VALUE]) == []


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with sqlite_world(tmp_path) as w:
        yield w


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_the_api_refuses_it_too(world: World) -> None:
    auth = {"Authorization": f"Bearer {world.token['alice']}"}
    answer = world.http.put("/api/secrets/user:alice/gh_token", json={"value": VALUE}, headers=auth)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert (error["type"], error["message"], error["hint"]) == (
        "SecretValidationError",
        "secret name 'gh_token' is not upper case",
        "did you mean GH_TOKEN?",
    )
    assert world.secrets.list() == []
    assert VALUE not in answer.text


SPEC = """name: hint
on:
  - repository: github.com/acme/app
steps:
  - run: echo hi
    container: alpine
    env:
      - github_token
changesetTemplate:
  title: t
  branch: b
  commit:
    message: m
"""


def test_the_missing_secret_hint_gives_a_command_that_works(tmp_path: Path) -> None:
    env = runner_env(tmp_path / "home")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    proc = run_runner(["env", "explain", str(spec)], env)
    assert proc.returncode == 1
    command = re.search(r"`(runner secret set [^`]+)`", proc.stderr)
    assert command is not None, proc.stderr
    assert command[1] == "runner secret set GITHUB_TOKEN --user alice"
    # Following the hint makes the spec's `github_token` resolve.
    done = run_runner(command[1].split()[1:], env, input=VALUE)
    assert done.returncode == 0, done.stderr
    proc = run_runner(["env", "explain", str(spec)], env)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"github_token\s+secret GITHUB_TOKEN from user:alice v1", proc.stdout)
