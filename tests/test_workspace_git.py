"""A step runs in a git repository, as Sourcegraph's steps do, and cannot change it.

src-cli commits the workspace's tree in a repository and an executor's
workspace is a clone, so specs may run `git diff`, `git ls-files`, or tools
that honour `.gitignore` only inside a repository. runner shows its own
bookkeeping repository read-only at `/work/.git`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import make_repo, run_runner, runner_env

pytestmark = pytest.mark.docker

SCRIPT = """\
echo more >> a.txt
echo noise > build.log
mkdir -p sub && echo new > sub/new.txt
echo "status:"; git status --short --untracked-files=all
echo "files:"; git ls-files
echo "diff:"; git diff --stat | tail -n 1
if git add -A 2>/dev/null; then echo "add: allowed"; else echo "add: refused"; fi
"""


def test_a_step_sees_the_workspace_as_a_repository_it_cannot_change(
    tmp_path: Path, debian_image: str
) -> None:
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"a.txt": "a\n", ".gitignore": "*.log\n"})
    spec = tmp_path / "spec.yaml"
    run = "".join(f"      {line}\n" for line in SCRIPT.splitlines())
    spec.write_text(
        "name: git-in-step\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: |\n{run}    container: {debian_image}\n"
        "changesetTemplate:\n  title: t\n  body: b\n  branch: runner/git\n"
        "  commit:\n    message: m\n"
    )
    env = runner_env(tmp_path / "home", TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "out"
    proc = run_runner(
        ["run", str(spec), "--repos-root", str(repos), "--out", str(out), "--json"], env
    )
    assert proc.returncode == 0, proc.stderr
    lines = [
        e["line"] for e in map(json.loads, proc.stdout.splitlines()) if e["event"] == "step.output"
    ]
    status = lines[lines.index("status:") + 1 : lines.index("files:")]
    files = lines[lines.index("files:") + 1 : lines.index("diff:")]
    # The commit's files are tracked; the step's change and new file show; the ignored
    # build.log does not (git honours the repository's .gitignore).
    assert sorted(files) == [".gitignore", "a.txt"]
    assert any(s.endswith("a.txt") for s in status) and any("sub/new.txt" in s for s in status)
    assert not any("build.log" in s for s in status)
    assert lines[lines.index("diff:") + 1].startswith(" 1 file changed, 1 insertion")
    assert "add: refused" in lines  # read-only: the bookkeeping stays runner's
    # The changeset is what the step changed, ignored file left out, and nothing of
    # runner's repository leaks into the workspace's diff.
    (patch,) = list(out.rglob("*.patch"))
    text = patch.read_text()
    assert "a/a.txt" in text and "sub/new.txt" in text
    assert "build.log" not in text and ".git/" not in text
