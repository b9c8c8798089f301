"""A workspace's phases as events, from the step loop over a real workspace on disk.

The fake runtime plays the step; the workspace's files are written and
removed for real, so the file counts are those of the repository.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import pytest

from runner.execute import steps as steps_module
from runner.report import PhaseEvents
from tests.helpers import git, make_repo
from tests.test_steps_unit import Harness, h, step, writes

__all__ = ["h"]  # the fixture, shared with the step loop's own tests

FILES = 300


@pytest.fixture
def every_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pacing: each file the workspace reports is an event (the pacing has its own test)."""
    monkeypatch.setattr(steps_module, "PhaseEvents", functools.partial(PhaseEvents, interval=0))


def test_preparing_stepping_diffing_and_cleaning_are_reported_in_order(
    h: Harness, tmp_path: Path, every_file: None
) -> None:
    files = {f"src/file-{i:03d}.txt": f"{i}\n" for i in range(FILES)}
    repo = make_repo(tmp_path / "big", "github.com/acme/big", files)
    h.workspace = dataclasses.replace(
        h.workspace, repo_path=repo, commit=git(repo, "rev-parse", "HEAD")
    )
    h.handlers["write"] = writes("new.txt", "new\n")
    result, events = h.run(step("write"), cache=False)
    assert result.status == "changed", result.error

    story = [_phase(e) for e in events.items]
    preparing = [e for e in events.named("workspace.phase") if e["phase"] == "preparing"]
    cleaning = [e for e in events.named("workspace.phase") if e["phase"] == "cleaning"]
    # preparing counts up to every file of the commit, with the total known
    assert preparing[0] == {
        "event": "workspace.phase",
        "run_id": "run-unit",
        "repository": "github.com/acme/app",
        "path": "",
        "branch": "main",
        "phase": "preparing",
    }
    counted = [e["files"] for e in preparing if "files" in e]
    assert counted[-1] == FILES and counted == sorted(counted)
    assert {e["total_files"] for e in preparing if "files" in e} == {FILES}
    # cleaning counts what the workspace holds, its own repository included
    assert cleaning[-1]["files"] == cleaning[-1]["total_files"] > FILES
    # and the order of the phases, each run of counts seen once
    assert _squeeze(story) == [
        "workspace.started",
        "preparing",
        "step.started",
        "step.finished",
        "diffing step 1",
        "diffing",
        "cleaning",
    ]


def _phase(event: dict[str, Any]) -> str:
    if event["event"] != "workspace.phase":
        return str(event["event"])
    return str(event["phase"]) + (f" step {event['step']}" if "step" in event else "")


def _squeeze(story: list[str]) -> list[str]:
    return [name for i, name in enumerate(story) if i == 0 or story[i - 1] != name]
