"""The step loop (``WorkspaceRunner``) driven directly, on the fake runtime and an in-memory cache.

Each step's ``run`` names a handler below; the fake runtime plays the
handler the rendered script names, so templates in ``run`` are checked by
what the handler receives. The same behaviour end to end, through `runner
run` and Docker, is in tests/test_run_local.py and tests/test_cache_run.py.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from runner.cache import CacheEntry
from runner.env import HostEnv, plan_env
from runner.errors import CacheError
from runner.execute.runtime import StepExit
from runner.execute.steps import RunContext, RunLimits, WorkspaceResult, WorkspaceRunner
from runner.plan import Workspace
from runner.redact import Redactor
from runner.secrets.value import Secret
from runner.spec import load_spec_text
from runner.testing import FakeRuntime, FakeSecretStore, FakeStepRun, MemoryStepCache
from tests.helpers import make_repo

IMAGE = "runner-test/busybox:latest"
IMAGE_ID = "sha256:" + "c" * 64
VALUE = "steps-unit-secret-value-1234"
NAMESPACE = "user:alice"
TEMPLATE = (
    "changesetTemplate:\n  title: unit\n  body: unit\n  branch: unit\n"
    "  commit:\n    message: unit\n"
)

Handler = Callable[[FakeStepRun], int | StepExit]


class Events:
    """A ``Reporter`` that keeps every event."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def event(self, name: str, **fields: Any) -> None:
        with self._lock:
            self.items.append({"event": name, **fields})

    def close(self) -> None:
        pass

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.items if e["event"] == name]

    def lines(self, stream: str = "stdout") -> list[str]:
        return [e["line"] for e in self.named("step.output") if e["stream"] == stream]


@dataclass
class Harness:
    """One repository, and what a run of a spec over it needs."""

    workspace: Workspace
    tmp: Path
    handlers: dict[str, Handler] = field(default_factory=dict)
    cache: MemoryStepCache = field(default_factory=MemoryStepCache)
    cancel: threading.Event = field(default_factory=threading.Event)
    runtime: FakeRuntime = field(init=False)

    def __post_init__(self) -> None:
        self.runtime = FakeRuntime(handler=self._play, images={IMAGE: IMAGE_ID})

    def _play(self, run: FakeStepRun) -> int | StepExit:
        return self.handlers[run.step.script.strip()](run)

    def run(
        self,
        steps: str,
        *,
        timeout_s: float = 30,
        log_cap: int | None = None,
        cache: bool = True,
    ) -> tuple[WorkspaceResult, Events]:
        spec = load_spec_text(
            f"name: unit\non:\n  - repository: {self.workspace.repository}\nsteps:\n{steps}"
            + TEMPLATE,
            "spec.yaml",
        )
        store = FakeSecretStore()
        meta, _ = store.set("TOKEN", NAMESPACE, Secret(VALUE), actor="alice")
        events = Events()
        ctx = RunContext(
            run_id="run-unit",
            spec=spec,
            spec_dir=self.tmp,
            namespace=NAMESPACE,
            env_plan=plan_env(spec, NAMESPACE, store),
            secrets={meta.id: Secret(VALUE)},
            host=HostEnv(),
            host_macs={},
            images={IMAGE: IMAGE_ID},
            runtime=self.runtime,
            redactor=Redactor({"TOKEN": VALUE}),
            reporter=events,
            limits=RunLimits(timeout_s=timeout_s, capture_limit=1 << 20, log_cap_bytes=log_cap),
            cancel=self.cancel,
            cache=self.cache if cache else None,
            temp_root=self.tmp / "work",
        )
        return WorkspaceRunner(ctx, self.workspace).run(), events


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    repo = make_repo(tmp_path / "repos", "github.com/acme/app", {"README.md": "hello\n"})
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    workspace = Workspace(
        repository="github.com/acme/app",
        repo_path=repo,
        branch="main",
        commit=commit,
        path="",
        only_fetch_workspace=False,
        search_result_paths=(),
    )
    (tmp_path / "work").mkdir()
    yield Harness(workspace, tmp_path)
    # Every run removes its temporary workspace, whatever happened in it.
    assert list((tmp_path / "work").iterdir()) == []


def step(run: str, *extra: str) -> str:
    return f"  - run: {run}\n    container: {IMAGE}\n" + "".join(f"    {e}\n" for e in extra)


def writes(path: str, text: str) -> Handler:
    def handler(run: FakeStepRun) -> int:
        run.host_path(path).write_text(text)
        return 0

    return handler


# Success and failure ------------------------------------------------------------------------


def test_a_step_that_changes_a_file_makes_a_changed_workspace(h: Harness) -> None:
    def handler(run: FakeStepRun) -> int:
        run.stdout("writing\n")
        run.host_path("hello.txt").write_text("hi\n")
        return 0

    h.handlers["write-hello"] = handler
    result, events = h.run(step("write-hello"))
    assert result.status == "changed", result.error
    assert b"+++ b/hello.txt" in result.diff and b"+hi" in result.diff
    assert list(result.changes.added) == ["hello.txt"]
    assert (result.steps_run, result.steps_cached) == (1, 0)
    assert [e["event"] for e in events.items if e["event"] != "workspace.phase"] == [
        "workspace.started",
        "step.started",
        "step.output",
        "step.finished",
    ]
    assert events.named("step.finished")[0]["exit_code"] == 0
    assert events.lines() == ["writing"]
    [container] = h.runtime.steps
    assert container.image == IMAGE_ID
    assert container.workdir.startswith("/work")


def test_a_step_that_changes_nothing_leaves_the_workspace_unchanged(h: Harness) -> None:
    h.handlers["noop"] = lambda run: 0
    result, _ = h.run(step("noop"))
    assert result.status == "unchanged"
    assert result.diff.strip() == b""


def test_a_failing_step_fails_the_workspace_with_its_exit_code_and_redacted_stderr(
    h: Harness,
) -> None:
    def fail(run: FakeStepRun) -> int:
        run.stderr(f"bad {run.getenv('TOKEN')}\n")
        return 3

    h.handlers["fail"] = fail
    h.handlers["after"] = writes("after.txt", "x")
    result, events = h.run(step("fail", "env: [TOKEN]") + step("after"))
    assert result.status == "failed"
    assert result.error is not None
    assert "exit code 3" in result.error
    assert "bad [REDACTED:TOKEN]" in result.error
    assert VALUE not in result.error
    assert [e["exit_code"] for e in events.named("step.finished")] == [3]
    assert len(h.runtime.steps) == 1  # the later step never ran
    assert not result.infrastructure_failure


# Conditions and outputs ----------------------------------------------------------------------


def test_if_false_skips_and_if_template_decides(h: Harness) -> None:
    h.handlers["never"] = writes("never.txt", "x")
    h.handlers["app-only"] = writes("app.txt", "x")
    h.handlers["lib-only"] = writes("lib.txt", "x")
    result, events = h.run(
        step("never", "if: false")
        + step("app-only", 'if: ${{ matches repository.name "*/app" }}')
        + step("lib-only", 'if: ${{ matches repository.name "*/lib" }}')
    )
    assert result.status == "changed", result.error
    assert [e["step"] for e in events.named("step.skipped")] == [1, 3]
    assert [c.script.strip() for c in h.runtime.steps] == ["app-only"]
    assert b"app.txt" in result.diff
    assert b"never.txt" not in result.diff and b"lib.txt" not in result.diff


def test_outputs_of_a_step_feed_the_templates_of_a_later_one(h: Harness) -> None:
    def emit(run: FakeStepRun) -> int:
        run.stdout('{"count": 3, "names": ["a", "b"]}\n')
        run.stderr("config:\n  hooks: [lint, test]\n")
        return 0

    seen: list[str] = []

    def use(run: FakeStepRun) -> int:
        seen.append(run.step.script.strip())
        return 0

    h.handlers["emit"] = emit
    h.handlers["use 3 a,b test github.com/acme/app"] = use
    result, _ = h.run(
        step(
            "emit",
            "outputs:",
            "  data:\n        value: ${{ step.stdout }}\n        format: json",
            "  conf:\n        value: ${{ step.stderr }}\n        format: yaml",
            "  plain:\n        value: ${{ repository.name }}",
        )
        + step(
            'use ${{ outputs.data.count }} ${{ join outputs.data.names "," }}'
            " ${{ index outputs.conf.config.hooks 1 }} ${{ outputs.plain }}"
        )
    )
    assert result.status == "unchanged", result.error
    assert seen == ["use 3 a,b test github.com/acme/app"]
    assert result.outputs == {
        "data": {"count": 3, "names": ["a", "b"]},
        "conf": {"config": {"hooks": ["lint", "test"]}},
        "plain": "github.com/acme/app",
    }


# The cache ------------------------------------------------------------------------------------


def test_a_second_run_hits_the_cache_and_starts_no_container(h: Harness) -> None:
    def emit(run: FakeStepRun) -> int:
        run.stdout('{"n": 1}\n')
        run.host_path("one.txt").write_text("1\n")
        return 0

    h.handlers["one"] = emit
    h.handlers["two"] = writes("two.txt", "2\n")
    steps = step("one", "outputs:", "  n:\n        value: ${{ step.stdout }}\n        format: json")
    steps += step("two")
    first, _ = h.run(steps)
    assert (first.steps_run, first.steps_cached) == (2, 0)
    assert len(h.runtime.steps) == 2
    assert len(h.cache.keys()) == 2

    second, events = h.run(steps)
    assert len(h.runtime.steps) == 2  # no new container
    assert (second.status, second.steps_run, second.steps_cached) == ("changed", 0, 2)
    assert second.diff == first.diff
    assert second.outputs == first.outputs == {"n": {"n": 1}}
    assert [e["step"] for e in events.named("step.cached")] == [1, 2]
    assert events.named("step.started") == []


def test_a_changed_later_step_reruns_from_there_only(h: Harness) -> None:
    h.handlers["one"] = writes("one.txt", "1\n")
    h.handlers["two"] = writes("two.txt", "2\n")
    h.handlers["three"] = writes("three.txt", "3\n")
    h.run(step("one") + step("two"))
    result, events = h.run(step("one") + step("three"))
    assert [c.script.strip() for c in h.runtime.steps] == ["one", "two", "three"]
    assert (result.steps_run, result.steps_cached) == (1, 1)
    assert [e["step"] for e in events.named("step.cached")] == [1]
    assert b"one.txt" in result.diff and b"three.txt" in result.diff
    assert b"two.txt" not in result.diff


class FullCache(MemoryStepCache):
    """A cache that cannot store anything, as by the rule every cache follows."""

    def put(self, key: str, entry: CacheEntry, **_: Any) -> None:
        raise CacheError("the cache database is full")


def test_a_cache_that_cannot_store_never_fails_the_step(h: Harness) -> None:
    h.cache = FullCache()
    h.handlers["one"] = writes("one.txt", "1\n")
    with capture_logs() as logs:
        result, _ = h.run(step("one"))
    assert result.status == "changed", result.error
    assert any("could not write the cache entry" in log["event"] for log in logs)
    assert h.cache.keys() == []


def test_without_a_cache_every_step_runs_and_nothing_is_stored(h: Harness) -> None:
    h.handlers["one"] = writes("one.txt", "1\n")
    h.run(step("one"), cache=False)
    h.run(step("one"), cache=False)
    assert len(h.runtime.steps) == 2
    assert h.cache.keys() == []


# Timeout, cancel, log cap ------------------------------------------------------------------------


def test_a_step_over_its_timeout_fails_the_workspace(h: Harness) -> None:
    def slow(run: FakeStepRun) -> int:
        run.sleep(60)
        return 0

    h.handlers["slow"] = slow
    result, events = h.run(step("slow"), timeout_s=2)
    assert result.status == "failed"
    assert result.error is not None and "timed out after 2 s" in result.error
    assert events.named("step.finished")[0]["exit_code"] == 137


def test_a_run_canceled_before_a_step_runs_nothing(h: Harness) -> None:
    h.handlers["one"] = writes("one.txt", "1\n")
    h.cancel.set()
    result, _ = h.run(step("one"))
    assert result.status == "canceled"
    assert h.runtime.steps == []


def test_a_cancel_during_a_step_kills_it_and_cancels_the_workspace(h: Harness) -> None:
    def canceled_midway(run: FakeStepRun) -> int:
        run.stdout("started\n")
        h.cancel.set()
        run.sleep(60)
        return 0

    h.handlers["long"] = canceled_midway
    h.handlers["after"] = writes("after.txt", "x")
    result, _ = h.run(step("long") + step("after"))
    assert result.status == "canceled"
    assert result.error is not None and "canceled" in result.error
    assert [c.script.strip() for c in h.runtime.steps] == ["long"]


def test_steps_printing_over_the_log_cap_are_stopped(h: Harness) -> None:
    printed: list[int] = []

    def chatty(run: FakeStepRun) -> int:
        for i in range(100):
            run.stdout(f"line {i} " + "x" * 100 + "\n")
            printed.append(i)
        return 0

    h.handlers["chatty"] = chatty
    result, events = h.run(step("chatty"), log_cap=2048)
    assert result.status == "failed"
    assert result.error is not None
    assert "over the log cap of 2 KiB" in result.error
    assert "--log-cap" in result.error
    shown = events.lines()
    assert 0 < len(shown) < 20  # nothing more is shown once the cap is passed
    assert sum(len(line) + 1 for line in shown) <= 2048


# Secrets ------------------------------------------------------------------------------------------


def test_a_secret_a_step_prints_is_redacted_in_every_event(h: Harness) -> None:
    def leaky(run: FakeStepRun) -> int:
        token = run.getenv("TOKEN")
        run.stdout(f"token is {token}\n")
        run.stderr(f"half {token[:10]}|{token[10:]}\n" if token else "none\n")
        return 0

    h.handlers["leaky"] = leaky
    result, events = h.run(step("leaky", "env: [TOKEN]"))
    assert result.status == "unchanged", result.error
    [container] = h.runtime.steps
    assert container.secret_env["TOKEN"].reveal() == VALUE
    assert "TOKEN" not in container.env
    assert events.lines() == ["token is [REDACTED:TOKEN]"]
    assert VALUE not in json.dumps(events.items)


def test_a_step_writing_a_secret_into_a_file_fails_and_keeps_no_diff(h: Harness) -> None:
    def leaky(run: FakeStepRun) -> int:
        run.host_path("leaked.txt").write_text(f"{run.getenv('TOKEN')}\n")
        return 0

    h.handlers["leaky"] = leaky
    result, _ = h.run(step("leaky", "env: [TOKEN]"))
    assert result.status == "failed"
    assert result.error is not None
    assert "TOKEN" in result.error and "leaked.txt" in result.error
    assert result.diff == b""
    assert h.cache.keys() == []
