"""Ctrl-C in every phase of a workspace: noticed, cleaned up, exit 130.

`runner run --json` runs as a subprocess on the real engine; the test waits
for the `workspace.phase` (or `step.started`) event that says which phase the
workspace is in, sends SIGINT, and then checks what is left: no temporary
folder under TMPDIR, no container of the run. The phase comes from the event
stream, never from a sleep; how fast each phase reacts is measured by
`make bench` (`interrupt_latency_s`), not here.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.interrupts import generated_repo
from runner.errors import GitError
from runner.execute.workspace import LocalWorkspace
from runner.git import CANCELED, git, git_pipe
from runner.plan import Workspace
from tests import helpers
from tests.helpers import RUNNER, TEST_IMAGE, make_repo, runner_env

# Enough files that preparing, diffing and cleaning each take a while here
# and on a fast machine (the test never depends on how long).
LARGE_FILES = 6000

Event = dict[str, Any]


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("interrupt-repos")
    generated_repo(root, "github.com/acme/large", LARGE_FILES)
    make_repo(root, "github.com/acme/small", {"README.md": "# small\n"})
    return root


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return runner_env(tmp_path / "home", TMPDIR=str(tmp))


class Run:
    """A `runner run --json` subprocess whose events are read as they come."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [RUNNER, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[Event] = []
        self.stderr: list[str] = []
        self._queue: queue.Queue[Event | None] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self._queue.put(json.loads(line))
        self._queue.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def wait_for(self, matches: Callable[[Event], bool], timeout: float = 120) -> Event:
        """The first event (from now on) that ``matches``; fails if the run ends first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no matching event within {timeout} s") from None
            if event is None:
                raise AssertionError(f"the run ended first: {self.events}")
            self.events.append(event)
            if matches(event):
                return event

    def interrupt(self) -> tuple[int, str]:
        """SIGINT, as Ctrl-C sends it; the exit code and stderr once runner is done."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=180)
        for reader in self._readers:
            reader.join(timeout=10)
        while (event := self._queue.get(timeout=10)) is not None:
            self.events.append(event)
        return code, "".join(self.stderr)

    def named(self, name: str) -> list[Event]:
        return [e for e in self.events if e["event"] == name]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


Interrupt = Callable[[str, str, Callable[[Event], bool]], tuple[Run, list[Event]]]


@pytest.fixture
def interrupt(
    tmp_path: Path, repos: Path, env: dict[str, str], docker_client: Any
) -> Iterator[Interrupt]:
    """Run one step on a repository, SIGINT once an event matches; check what is left.

    Exit 130, no `runner-ws-*` folder under TMPDIR, no container of the run;
    returns the run and its `workspace.finished` events.
    """
    runs: list[Run] = []

    def interrupt(
        repository: str, script: str, when: Callable[[Event], bool]
    ) -> tuple[Run, list[Event]]:
        spec = tmp_path / "spec" / "batch.yaml"
        spec.parent.mkdir(exist_ok=True)
        spec.write_text(
            f"name: interrupt\non:\n  - repository: {repository}\nsteps:\n"
            f"  - run: {json.dumps(script)}\n    container: {TEST_IMAGE}\n"
            "changesetTemplate:\n  title: t\n  body: b\n  branch: runner/t\n"
            "  commit:\n    message: m\n"
        )
        out = tmp_path / "out"
        args = ["run", str(spec), "--repos-root", str(repos), "--out", str(out), "--json"]
        run = Run([*args, "--no-cache"], env)
        runs.append(run)
        run_id = run.wait_for(lambda e: e["event"] == "run.started")["run_id"]
        run.wait_for(when)
        code, stderr = run.interrupt()
        assert code == 130, stderr
        assert list(Path(env["TMPDIR"]).glob("runner-ws-*")) == []
        label = f"org.runner.run-id={run_id}"
        assert docker_client.containers.list(all=True, filters={"label": label}) == []
        return run, run.named("workspace.finished")

    yield interrupt
    for run in runs:
        run.kill()


def phase(name: str, **more: Any) -> Callable[[Event], bool]:
    def matches(event: Event) -> bool:
        return (
            event["event"] == "workspace.phase"
            and event.get("phase") == name
            and all(event.get(k) == v for k, v in more.items())
        )

    return matches


pytestmark = [pytest.mark.docker]


@pytest.mark.slow
def test_ctrl_c_while_preparing_stops_writing_files_and_removes_them(
    interrupt: Interrupt,
) -> None:
    run, finished = interrupt("github.com/acme/large", "true", phase("preparing"))
    assert run.named("step.started") == []  # it was stopped before any step
    assert [e["status"] for e in finished] == ["canceled"], finished
    # stopped inside the preparation (between files, or a git killed), not after it
    assert re.search(r"canceled while preparing|git \S+ .* was stopped", finished[0]["error"])


def test_ctrl_c_during_a_step_kills_its_container_and_cleans_up(
    interrupt: Interrupt, env: dict[str, str]
) -> None:
    tmp = Path(env["TMPDIR"])

    def step_running(event: Event) -> bool:
        if event["event"] != "step.started":
            return False
        deadline = time.monotonic() + 60
        while not list(tmp.glob("runner-ws-*/repo/started")) and time.monotonic() < deadline:
            time.sleep(0.05)
        return True

    run, finished = interrupt("github.com/acme/small", "touch started; sleep 300", step_running)
    assert [e["status"] for e in finished] == ["canceled"], run.events
    assert "step 1 was canceled" in finished[0]["error"]


@pytest.mark.slow
def test_ctrl_c_while_diffing_stops_git_and_cleans_up(interrupt: Interrupt) -> None:
    # The step changes every file: recording that (git add) takes a while.
    change_all = "find . -name '*.txt' | xargs sed -i 's/line/LINE/'"
    run, finished = interrupt("github.com/acme/large", change_all, phase("diffing", step=1))
    assert [e["exit_code"] for e in run.named("step.finished")] == [0]  # the step was done
    # ... and its changes were never recorded: git was stopped, no changeset
    assert [e["status"] for e in finished] == ["canceled"], finished
    assert "was stopped: the run was canceled" in finished[0]["error"], run.events


@pytest.mark.slow
def test_ctrl_c_while_cleaning_still_removes_the_whole_workspace(interrupt: Interrupt) -> None:
    _, finished = interrupt("github.com/acme/large", "true", phase("cleaning"))
    # the workspace was done; removing it is the clean-up, so it is not cut short
    assert [e["status"] for e in finished] == ["unchanged"], finished


# -- the pieces: a git that blocks, a removal under cancel ----------------------------


@pytest.mark.parametrize("with_input", [False, True])
def test_a_blocked_git_is_killed_when_the_cancel_event_is_set(
    tmp_path: Path, with_input: bool
) -> None:
    fifo = tmp_path / "patch"
    os.mkfifo(fifo)  # git apply blocks opening it: nobody writes
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    try:
        with pytest.raises(GitError) as info:
            git(
                ["apply", str(fifo)], cwd=tmp_path, cancel=cancel, input=b"" if with_input else None
            )
    finally:
        timer.cancel()
    assert info.value.detail == CANCELED
    assert "was stopped" in info.value.message


def test_a_blocked_git_pipe_is_killed_at_both_ends_when_the_cancel_event_is_set(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "patch"
    os.mkfifo(fifo)
    repo = make_repo(tmp_path, "app", {"a.txt": "a\n"})
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    try:
        with pytest.raises(GitError) as info:  # the consumer waits for a producer that waits
            git_pipe(
                ["apply", str(fifo)],
                ["hash-object", "--stdin"],
                first_cwd=tmp_path,
                second_cwd=repo,
                cancel=cancel,
            )
    finally:
        timer.cancel()
    assert info.value.detail == CANCELED


def test_a_failing_git_pipe_names_the_git_that_failed_first(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "app", {"a.txt": "a\n"})
    with pytest.raises(GitError, match="git pack-objects failed"):
        git_pipe(
            ["pack-objects", "--revs", "--stdout"],
            ["index-pack", "--stdin"],
            first_cwd=repo,
            second_cwd=repo,
            input=b"0123456789012345678901234567890123456789\n",
        )
    piped = git_pipe(
        ["pack-objects", "--revs", "--stdout", "-q"],
        ["index-pack", "--stdin"],
        first_cwd=repo,
        second_cwd=make_repo(tmp_path, "other", {"b.txt": "b\n"}),
        input=b"HEAD^{tree}\n",
    )
    assert piped.startswith(b"pack\t")


def test_a_git_finishing_normally_is_not_disturbed_by_a_cancel_event(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "app", {"a.txt": "a\n"})
    out = git(["cat-file", "--batch"], cwd=repo, input=b"HEAD:a.txt\n", cancel=threading.Event())
    assert out.endswith(b"\na\n\n")


def test_removing_a_workspace_never_stops_early_even_when_canceled(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repos", "app", {f"d{i % 7}/f{i}.txt": "x\n" for i in range(300)})
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    cancel = threading.Event()
    ws = Workspace(
        "github.com/acme/app", repo, "main", helpers.git(repo, "rev-parse", "HEAD"), "", False, ()
    )
    local = LocalWorkspace.create(ws, run_id="rm", temp_root=temp_root, cancel=cancel)
    (local.tree_dir / "link-to-repo").symlink_to(repo)  # removed, never followed
    cancel.set()
    local.remove()
    assert list(temp_root.iterdir()) == []
    assert (repo / "d0").is_dir()
