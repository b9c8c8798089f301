"""What a user sees of `runner run`, on the real engine: in a terminal, in logs, in events."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests import helpers
from tests.display_support import (
    SPEC_TAIL,
    Terminal,
    display_repos,
    display_spec,
    screen_text,
    state_env,
)
from tests.helpers import TEST_IMAGE, run_runner, set_secret

pytestmark = pytest.mark.docker

FAILING = "github.com/acme/repo-07"
OVERALL = re.compile(r"^workspaces .* (\d+)/(\d+) ")
TOKEN_VALUE = "display-token-0123456789"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return state_env(tmp_path)


def run_args(tmp_path: Path, *extra: str) -> list[str]:
    """`runner run` of the spec display_spec wrote, over the repositories under tmp_path."""
    spec, repos = tmp_path / "spec" / "batch.yaml", tmp_path / "repos"
    return ["run", str(spec), "--repos-root", str(repos), "--out", str(tmp_path / "out"), *extra]


def overall(lines: list[str]) -> tuple[int, int] | None:
    """The (done, total) of the overall line, with its index from the bottom."""
    for line in lines:
        match = OVERALL.match(line)
        if match:
            return int(match[1]), int(match[2])
    return None


@pytest.mark.slow
def test_twenty_workspaces_at_j2_in_a_terminal_show_the_count_moving(
    tmp_path: Path, env: dict[str, str]
) -> None:
    names = display_repos(tmp_path / "repos", 20, failing=FAILING)
    display_spec(tmp_path / "spec" / "batch.yaml", sleep_s=1)
    term = Terminal(run_args(tmp_path, "-j", "2", "--no-cache"), env, columns=120, rows=30)
    counts: list[int] = []
    most_rows = 0
    while term.pump(0.05):
        screen = term.lines()
        seen = overall(screen)
        if seen is None:
            continue
        done, total = seen
        assert total == 20
        if not counts or counts[-1] != done:
            counts.append(done)
        if done < 20:
            # the overall line is the last line drawn, and below it nothing
            drawn = [i for i, line in enumerate(screen) if line]
            assert OVERALL.match(screen[drawn[-1]]), screen_text(screen)
            # only running workspaces have rows: finished ones do not pile up
            rows = [line for line in screen if "github.com/acme/repo-" in line]
            most_rows = max(most_rows, len(rows))
            assert len(rows) <= 2, screen_text(screen)
    code = term.wait()
    everything = term.all_lines()
    assert code == 3, screen_text(everything)  # one workspace failed
    assert [c for c in counts if 0 < c < 20][2:], counts  # at least three counts before 20
    assert counts == sorted(counts) and counts[-1] == 20
    assert most_rows >= 1
    # The final table names each workspace once: no live line is left over.
    for name in names:
        named = [line for line in everything if name in line and not line.endswith(".log")]
        assert len(named) == 1, (name, screen_text(everything))
    # Below it, the failed workspace's log (runner.execute.workspace_logs).
    assert any(line.strip().endswith(f"{FAILING}/_root/main.log") for line in everything)
    failed_row = everything.index(next(line for line in everything if FAILING in line))
    assert everything[failed_row].startswith("failed ")
    assert everything[failed_row + 1].strip() == (
        "└ step 1 failed with exit code 3: the tests asked this one to fail"
    )
    assert not any(":." in line for line in everything)
    # The last line, wrapped when the summary's path is longer than the terminal is wide
    # (pytest's temporary folders grow a digit every 900 sessions).
    last = max(i for i, line in enumerate(everything) if line.startswith("19 changed, 1 failed"))
    assert everything[last].startswith("19 changed, 1 failed; summary: ")
    assert "".join(everything[last:]).endswith("summary.json")


def test_verbose_prints_step_output_redacted_on_the_terminal(
    tmp_path: Path, env: dict[str, str]
) -> None:
    set_secret(env, "DISPLAY_TOKEN", TOKEN_VALUE, "--user", "alice")
    display_repos(tmp_path / "repos", 1)
    spec = tmp_path / "spec" / "batch.yaml"
    spec.parent.mkdir()
    spec.write_text(
        "name: verbose\non:\n  - repository: github.com/acme/repo-01\nsteps:\n"
        '  - run: echo "the token is $DISPLAY_TOKEN"; echo plain-output-line\n'
        f"    container: {TEST_IMAGE}\n    env: [DISPLAY_TOKEN]\n" + SPEC_TAIL
    )
    out = tmp_path / "out"
    args = run_args(tmp_path, "--no-cache")

    quiet = Terminal(args, env)
    assert quiet.wait() == 0, screen_text(quiet.all_lines())
    assert not any("plain-output-line" in line for line in quiet.all_lines())

    term = Terminal([*args, "-v"], env)
    code = term.wait()
    lines = term.all_lines()
    assert code == 0, screen_text(lines)
    assert "github.com/acme/repo-01 · step 1 │ the token is [REDACTED:DISPLAY_TOKEN]" in lines
    assert "github.com/acme/repo-01 · step 1 │ plain-output-line" in lines
    assert (
        helpers.scan_bytes(term.transcript + quiet.transcript, helpers.leak_forms([TOKEN_VALUE]))
        == []
    )
    left = [out, Path(env["RUNNER_HOME"]), Path(env["TMPDIR"])]
    assert helpers.scan_tree(left, [TOKEN_VALUE]) == []

    # The audit log calls a local run a run (an executor's access is a job's).
    run_id = json.loads((out / "summary.json").read_text())["run_id"]
    log = run_runner(["secret", "log", "DISPLAY_TOKEN"], env)
    assert f"run {run_id}, step 1" in log.stdout
    assert "job " not in log.stdout


def test_without_a_terminal_a_failure_says_why_in_logs_and_table(
    tmp_path: Path, env: dict[str, str]
) -> None:
    display_repos(tmp_path / "repos", 2, failing="github.com/acme/repo-02")
    display_spec(tmp_path / "spec" / "batch.yaml", sleep_s=0)
    proc = run_runner(run_args(tmp_path), env)
    assert proc.returncode == 3, proc.stderr
    reason = "step 1 failed with exit code 3: the tests asked this one to fail"
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    finished = {r["repository"]: r for r in records if r.get("event") == "workspace.finished"}
    assert finished["github.com/acme/repo-02"]["error"] == reason
    lines = proc.stdout.splitlines()
    row = next(i for i, line in enumerate(lines) if "github.com/acme/repo-02" in line)
    assert lines[row].split()[0] == "failed"
    assert lines[row + 1] == f"  └ {reason}"
    assert "└" not in "".join(lines[:row])  # the changed workspace has no reason line


def test_json_events_tell_each_workspace_phase_as_it_happens(
    tmp_path: Path, env: dict[str, str]
) -> None:
    display_repos(tmp_path / "repos", 3)
    display_spec(tmp_path / "spec" / "batch.yaml", sleep_s=0)
    proc = run_runner(run_args(tmp_path, "--json", "-j", "1"), env)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    for n in (1, 2, 3):
        mine = [e for e in events if e.get("repository") == f"github.com/acme/repo-{n:02d}"]
        # (file counts come only when preparing or cleaning takes a while)
        mine = [e for e in mine if "files" not in e]
        story = [e["event"] + (f":{e['phase']}" if "phase" in e else "") for e in mine]
        assert story == [
            "workspace.started",
            "workspace.phase:preparing",
            "step.started",
            "step.finished",
            "workspace.phase:diffing",  # what step 1 changed
            "workspace.phase:diffing",  # the workspace's diff
            "workspace.phase:cleaning",
            "workspace.finished",
        ]
        assert mine[4]["step"] == 1 and "step" not in mine[5]
    phases = [e for e in events if e["event"] == "workspace.phase"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"]) for e in phases)
    # At -j 1 each workspace finishes before the next starts: the events say so as it happens.
    names = [e["event"] for e in events]
    second_start = [i for i, name in enumerate(names) if name == "workspace.started"][1]
    assert names.index("workspace.finished") < second_start
