"""`published` addressed by branch, end to end on the real engine.

The corpus spec ``utils/branch-addressing.yaml`` (Sourcegraph's example of
"addressing a single changeset by branch name") runs over two workspaces of
one repository; its rule ``github.com/sourcegraph/automation-*@BRANCH: draft``
names the head branch of the ``project1`` changeset only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import TEST_IMAGE, make_repo, run_runner, runner_env
from tests.test_spec_corpus import CORPUS

pytestmark = pytest.mark.docker

REPOSITORY = "github.com/sourcegraph/automation-testing"


def test_branch_addressing_publishes_only_the_addressed_changeset_as_a_draft(
    tmp_path: Path,
) -> None:
    text = (CORPUS / "utils/branch-addressing.yaml").read_text()
    # The spec's `on` and `workspaces` already name the repository made below; only the
    # image changes, to the local one the suite builds in place of alpine:3.
    assert "container: alpine:3" in text and f"in: {REPOSITORY}" in text
    spec = tmp_path / "spec" / "branch-addressing.yaml"
    spec.parent.mkdir()
    spec.write_text(text.replace("container: alpine:3", f"container: {TEST_IMAGE}"))
    repos = tmp_path / "repos"
    make_repo(repos, REPOSITORY, {"project1/package.json": "{}\n", "project2/package.json": "{}\n"})
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = runner_env(tmp_path / "home", TMPDIR=str(tmp))
    out = tmp_path / "out"

    proc = run_runner(
        ["run", str(spec), "--repos-root", str(repos), "--out", str(out), "--json"], env
    )

    assert proc.returncode == 0, proc.stderr
    changesets = {
        path.parent.name: json.loads(path.read_text())
        for path in (out / REPOSITORY).glob("*/*.json")
    }
    assert sorted(changesets) == ["project1", "project2"]
    one, two = changesets["project1"], changesets["project2"]
    assert one["headRef"] == "refs/heads/thorsten/branch-addressing-project1"
    assert two["headRef"] == "refs/heads/thorsten/branch-addressing-project2"
    assert one["published"] == "draft"
    assert two["published"] is None
    assert "+We are in project1" in one["commits"][0]["diff"]
