"""A workspace holds exactly the commit's files, whatever `.gitattributes` says.

The first tests prepare workspaces directly (`LocalWorkspace.create`, no
engine); the last ones run `runner run` on the real engine and look at what a
step saw through the patch it produced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from runner.errors import ExecutionError, GitError
from runner.execute.workspace import CLEANING, PREPARING, LocalWorkspace
from runner.plan import Workspace
from tests.helpers import TEST_IMAGE, git, make_repo, run_runner, runner_env

LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 12345\n"
)

# attribute case -> (.gitattributes, files); each file's committed bytes must
# reach the workspace unchanged, and every file must be there.
ATTRIBUTE_CASES: dict[str, tuple[str, dict[str, str]]] = {
    "export-ignore": (
        ".github export-ignore\ndocs/** export-ignore\n",
        {
            ".github/CODE_OF_CONDUCT.md": "Be nice.\n",
            ".github/workflows/ci.yml": "on: push\n",
            "docs/guide.md": "# Guide\n",
        },
    ),
    "export-subst": (
        "version.txt export-subst\n",
        {"version.txt": "commit $Format:%H$ on $Format:%cd$\n"},
    ),
    "text eol=crlf": ("*.txt text eol=crlf\n", {"notes.txt": "one\ntwo\n"}),
    "ident": ("*.c ident\n", {"main.c": "/* $Id$ */\nint main(void) { return 0; }\n"}),
    # committed from a UTF-16 working file: the commit stores UTF-8
    "working-tree-encoding": (
        "*.u16 working-tree-encoding=UTF-16\n",
        {"hello.u16": "hello, world\n"},
    ),
    "filter=lfs": ("*.bin filter=lfs diff=lfs merge=lfs -text\n", {"model.bin": LFS_POINTER}),
}

# Enough files for a tree that once came as a pack (objects are borrowed now).
PACK_FROM_FILES = 32


def workspace_of(repo: Path, *, path: str = "", only_fetch: bool = False) -> Workspace:
    return Workspace(
        repository="github.com/acme/app",
        repo_path=repo,
        branch="main",
        commit=git(repo, "rev-parse", "HEAD"),
        path=path,
        only_fetch_workspace=only_fetch,
        search_result_paths=(),
    )


def files_on_disk(tree: Path) -> dict[str, bytes]:
    """Every file under ``tree`` but the workspace's own .git: path -> bytes (a link's target)."""
    found: dict[str, bytes] = {}
    for folder, subfolders, names in os.walk(tree):
        subfolders[:] = [s for s in subfolders if not (folder == str(tree) and s == ".git")]
        for name in names:
            full = Path(folder, name)
            rel = full.relative_to(tree).as_posix()
            found[rel] = os.readlink(full).encode() if full.is_symlink() else full.read_bytes()
    return found


def files_of_commit(repo: Path) -> dict[str, bytes]:
    """What the commit stores: path -> blob bytes (submodules left out: they have none)."""
    listing = git(repo, "ls-tree", "-r", "-z", "HEAD")
    found = {}
    for record in listing.split("\0"):
        if not record:
            continue
        meta, path = record.split("\t", 1)
        _, kind, oid = meta.split()
        if kind == "blob":
            found[path] = subprocess.run(
                ["git", "cat-file", "blob", oid], cwd=repo, capture_output=True, check=True
            ).stdout
    return found


def piped(repo: Path, text: str, *args: str) -> str:
    """git with ``text`` on its stdin (git's plumbing accepts what porcelain refuses)."""
    return subprocess.run(
        ["git", *args], cwd=repo, input=text, capture_output=True, text=True, check=True
    ).stdout.strip()


def fingerprint(folder: Path) -> str:
    """A hash over every file name and content under ``folder`` (the user's repository)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def temp_root(tmp_path: Path) -> Path:
    root = tmp_path / "tmp"
    root.mkdir()
    return root


@pytest.mark.parametrize("case", sorted(ATTRIBUTE_CASES))
def test_each_attribute_leaves_the_commit_s_bytes_and_every_file(
    case: str, tmp_path: Path, temp_root: Path
) -> None:
    attributes, files = ATTRIBUTE_CASES[case]
    repo = make_repo(tmp_path / "repos", "app", {".gitattributes": attributes, "README.md": "#\n"})
    for rel, text in files.items():
        target = repo / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text.encode("utf-16" if rel.endswith(".u16") else "utf-8"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", case)
    assert files_of_commit(repo).keys() >= files.keys()
    before = fingerprint(repo)
    local = LocalWorkspace.create(workspace_of(repo), run_id="attr", temp_root=temp_root)
    try:
        assert files_on_disk(local.tree_dir) == files_of_commit(repo)
        # the baseline is the commit's own tree: nothing to charge a step with
        assert local.baseline == git(repo, "rev-parse", "HEAD^{tree}")
        assert local.snapshot() == local.baseline
    finally:
        local.remove()
    assert list(temp_root.iterdir()) == []
    assert fingerprint(repo) == before  # the user's repository is only read


def test_the_repository_s_own_info_attributes_cannot_hide_files(
    tmp_path: Path, temp_root: Path
) -> None:
    repo = make_repo(tmp_path / "repos", "app", {"README.md": "# app\n", "src/a.py": "x = 1\n"})
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "attributes").write_text("* export-ignore\n*.py export-subst\n")
    local = LocalWorkspace.create(workspace_of(repo), run_id="info", temp_root=temp_root)
    try:
        assert files_on_disk(local.tree_dir) == files_of_commit(repo)
    finally:
        local.remove()


@pytest.mark.parametrize("count", [1, PACK_FROM_FILES - 2, PACK_FROM_FILES - 1])
def test_loose_or_packed_the_baseline_is_the_commit_s_tree(
    count: int, tmp_path: Path, temp_root: Path
) -> None:
    files = {f"d{i % 3}/f{i}.txt": f"{i}\r\n" for i in range(count)}
    repo = make_repo(tmp_path / "repos", "app", {".gitattributes": "*.txt -text\n", **files})
    local = LocalWorkspace.create(workspace_of(repo), run_id="pack", temp_root=temp_root)
    try:
        assert files_on_disk(local.tree_dir) == files_of_commit(repo)
        assert local.baseline == git(repo, "rev-parse", "HEAD^{tree}")
        # no second object store: the user's objects are borrowed
        stored = [p.name for p in (local.git_dir / "objects").rglob("*") if p.is_file()]
        assert stored == ["alternates"]
        (local.tree_dir / "d0" / "f0.txt").write_text("changed\n")
        assert b"+changed" in local.diff(local.baseline, local.snapshot())
    finally:
        local.remove()


def test_a_repository_on_another_file_system_is_only_read(tmp_path: Path) -> None:
    # A git that wrote temporary files into the user's repository and renamed
    # them into the workspace would fail across file systems.
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    repos = Path(tempfile.mkdtemp(dir=shm))
    try:
        files = {f"src/f{i}.py": f"x = {i}\n" for i in range(PACK_FROM_FILES)}  # packed
        repo = make_repo(repos, "app", files)
        before = fingerprint(repo)
        local = LocalWorkspace.create(workspace_of(repo), run_id="shm", temp_root=tmp_path)
        try:
            assert files_on_disk(local.tree_dir) == files_of_commit(repo)
            assert local.baseline == git(repo, "rev-parse", "HEAD^{tree}")
        finally:
            local.remove()
        assert fingerprint(repo) == before
    finally:
        shutil.rmtree(repos)


def test_a_submodule_is_an_empty_folder_and_is_not_fetched(tmp_path: Path, temp_root: Path) -> None:
    sub = make_repo(tmp_path / "repos", "lib", {"lib.go": "package lib\n"})
    repo = make_repo(
        tmp_path / "repos",
        "app",
        {".gitmodules": '[submodule "vendor/lib"]\n\tpath = vendor/lib\n\turl = ../lib\n'},
    )
    sha = git(sub, "rev-parse", "HEAD")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{sha},vendor/lib")
    git(repo, "commit", "-q", "-m", "add a submodule")
    local = LocalWorkspace.create(workspace_of(repo), run_id="sub", temp_root=temp_root)
    try:
        folder = local.tree_dir / "vendor" / "lib"
        assert folder.is_dir() and not folder.is_symlink()
        assert list(folder.iterdir()) == []
        assert files_on_disk(local.tree_dir) == files_of_commit(repo)
        # an untouched submodule is no change
        assert local.diff(local.baseline, local.snapshot()) == b""
    finally:
        local.remove()


def test_links_and_executable_bits_are_kept(tmp_path: Path, temp_root: Path) -> None:
    repo = make_repo(tmp_path / "repos", "app", {"README.md": "# app\n", "bin/run.sh": "echo\n"})
    (repo / "bin" / "run.sh").chmod(0o755)
    (repo / "docs").mkdir()
    (repo / "docs" / "readme").symlink_to("../README.md")
    (repo / "outside").symlink_to("/etc/passwd")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "links")
    local = LocalWorkspace.create(workspace_of(repo), run_id="links", temp_root=temp_root)
    try:
        tree = local.tree_dir
        assert os.access(tree / "bin" / "run.sh", os.X_OK)
        assert not os.access(tree / "README.md", os.X_OK)
        assert os.readlink(tree / "docs" / "readme") == "../README.md"
        assert os.readlink(tree / "outside") == "/etc/passwd"
        assert local.baseline == git(repo, "rev-parse", "HEAD^{tree}")
    finally:
        local.remove()


def test_only_fetch_workspace_keeps_the_folder_and_the_ignore_and_attribute_files_above(
    tmp_path: Path, temp_root: Path
) -> None:
    repo = make_repo(
        tmp_path / "repos",
        "app",
        {
            ".gitignore": "*.log\n",
            ".gitattributes": "* -text\n",
            "a/.gitignore": "build/\n",
            "a/b/.gitignore": "dist/\n",
            "a/b/x.txt": "x\n",
            "a/other.txt": "not mine\n",
            "c/y.txt": "y\n",
        },
    )
    ws = workspace_of(repo, path="a/b", only_fetch=True)
    local = LocalWorkspace.create(ws, run_id="only", temp_root=temp_root)
    try:
        assert sorted(files_on_disk(local.tree_dir)) == [
            ".gitattributes",
            ".gitignore",
            "a/.gitignore",
            "a/b/.gitignore",
            "a/b/x.txt",
        ]
    finally:
        local.remove()


@pytest.mark.parametrize("name", [".git", ".GIT", ".."])
def test_a_crafted_tree_with_a_dangerous_path_is_refused(
    name: str, tmp_path: Path, temp_root: Path
) -> None:
    repo = make_repo(tmp_path / "repos", "app", {"README.md": "# app\n"})
    blob = piped(repo, "", "hash-object", "-w", "--stdin")  # an empty file
    config = piped(repo, f"100644 blob {blob}\tconfig\n", "mktree")
    tree = piped(repo, f"040000 tree {config}\t{name}\n", "mktree")
    commit = git(repo, "commit-tree", tree, "-m", "crafted")
    ws = Workspace("github.com/acme/app", repo, "main", commit, "", False, ())
    with pytest.raises(ExecutionError, match="will not write"):
        LocalWorkspace.create(ws, run_id="crafted", temp_root=temp_root)
    assert list(temp_root.iterdir()) == []


def test_progress_counts_files_while_preparing_and_cleaning(
    tmp_path: Path, temp_root: Path
) -> None:
    files = {f"src/f{i}.txt": f"{i}\n" for i in range(30)}
    repo = make_repo(tmp_path / "repos", "app", files)
    calls: list[tuple[str, int, int | None]] = []
    local = LocalWorkspace.create(
        workspace_of(repo),
        run_id="progress",
        temp_root=temp_root,
        progress=lambda phase, done, total: calls.append((phase, done, total)),
    )
    preparing = [c for c in calls if c[0] == PREPARING]
    assert preparing[0] == (PREPARING, 0, 30) and preparing[-1] == (PREPARING, 30, 30)
    assert [c[1] for c in preparing] == list(range(31))
    calls.clear()
    local.remove()
    assert calls[0][:2] == (CLEANING, 0)
    total = calls[0][2]
    assert total is not None and total > 30  # the files and the baseline's repository
    assert calls[-1] == (CLEANING, total, total)
    assert list(temp_root.iterdir()) == []


def test_a_cancel_between_files_stops_preparing_and_removes_what_was_written(
    tmp_path: Path, temp_root: Path
) -> None:
    repo = make_repo(tmp_path / "repos", "app", {f"f{i}.txt": "x\n" for i in range(40)})
    cancel = threading.Event()
    phases: list[str] = []

    def progress(phase: str, done: int, total: int | None) -> None:
        phases.append(phase)
        if phase == PREPARING and done == 5:
            cancel.set()

    with pytest.raises(ExecutionError, match=r"canceled while preparing .*5 of 40 files"):
        LocalWorkspace.create(
            workspace_of(repo),
            run_id="cancel",
            temp_root=temp_root,
            cancel=cancel,
            progress=progress,
        )
    assert phases[-1] == CLEANING
    assert list(temp_root.iterdir()) == []


def test_a_cancel_before_any_git_stops_at_once(tmp_path: Path, temp_root: Path) -> None:
    repo = make_repo(tmp_path / "repos", "app", {"README.md": "# app\n"})
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GitError) as info:
        LocalWorkspace.create(
            workspace_of(repo), run_id="early", temp_root=temp_root, cancel=cancel
        )
    assert info.value.detail == "canceled"
    assert list(temp_root.iterdir()) == []


# -- on the real engine ------------------------------------------------------------------

TAIL = """
changesetTemplate:
  title: Fix the code of conduct
  body: Made by runner
  branch: runner/coc
  commit:
    message: Fix the code of conduct
"""


def _app_repo(root: Path) -> Path:
    """ansible's shape: `.github` export-ignored, a version file with export-subst, LFS."""
    sub = make_repo(root / "upstream", "lib", {"lib.go": "package lib\n"})
    repo = make_repo(
        root / "repos",
        "github.com/acme/app",
        {
            ".gitattributes": (
                ".github export-ignore\nversion.txt export-subst\n"
                "*.bin filter=lfs diff=lfs merge=lfs -text\n"
            ),
            ".github/CODE_OF_CONDUCT.md": "Be nice.\n",
            ".gitmodules": '[submodule "vendor/lib"]\n\tpath = vendor/lib\n\turl = ../lib\n',
            "README.md": "# app\n",
            "version.txt": "$Format:%H$\n",
            "model.bin": LFS_POINTER,
        },
    )
    git(
        repo,
        "update-index",
        "--add",
        "--cacheinfo",
        f"160000,{git(sub, 'rev-parse', 'HEAD')},vendor/lib",
    )
    git(repo, "commit", "-q", "-m", "add a submodule")
    return repo


@pytest.mark.docker
def test_a_step_sees_the_files_the_query_found_and_the_commit_s_bytes(
    tmp_path: Path, docker_client: Any
) -> None:
    repo = _app_repo(tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = runner_env(tmp_path / "home", TMPDIR=str(tmp))
    spec = tmp_path / "spec" / "batch.yaml"
    spec.parent.mkdir()
    spec.write_text(
        "name: coc\non:\n  - repositoriesMatchingQuery: file:CODE_OF_CONDUCT\nsteps:\n"
        "  - run: |\n"
        "      sed -i 's/Be nice/Be kind/' ${{ join repository.search_result_paths \" \" }}\n"
        "      cp version.txt version-seen.txt\n"
        "      cp model.bin pointer-seen.txt\n"
        '      [ -d vendor/lib ] && [ -z "$(ls -A vendor/lib)" ] && echo empty > submodule-seen.txt\n'
        f"    container: {TEST_IMAGE}\n" + TAIL
    )
    out = tmp_path / "out"
    proc = run_runner(
        ["run", str(spec), "--repos-root", str(tmp_path / "repos"), "--out", str(out), "--json"],
        env,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    finished = [e for e in events if e["event"] == "workspace.finished"]
    assert [e["status"] for e in finished] == ["changed"], finished
    patch = (out / "github.com/acme/app/_root/runner-coc.patch").read_text()
    assert "-Be nice.\n+Be kind." in patch  # the export-ignored file was there to change
    assert "+$Format:%H$" in patch  # export-subst did not rewrite it
    assert "+version https://git-lfs.github.com/spec/v1" in patch  # the pointer, not smudged
    assert "+empty" in patch  # the submodule is an empty folder
    assert "Subproject" not in patch and "160000" not in patch
    check = subprocess.run(
        ["git", "apply", "--check", "-"], cwd=repo, input=patch.encode(), capture_output=True
    )
    assert check.returncode == 0, check.stderr
    assert list(tmp.glob("runner-ws-*")) == []
