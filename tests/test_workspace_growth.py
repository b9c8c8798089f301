"""A workspace's cost follows the work: borrowed objects, an index written with its stat
cache, diffs of only what changed, and full cache hits that write no tree at all.

The first tests compare the workspace's patches with those of the plain way
(a fresh repository, `git add -A -f`, `git add -A`, `git diff`) on trees made
to trip it up; the next drive the step loop on the fake runtime; the last one
runs `runner run` twice on the real engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.errors import CacheError, ExecutionError
from runner.execute.run import sweep_leftovers
from runner.execute.workspace import PREPARING, LocalWorkspace, read_blobs
from runner.git import git as git_bytes
from runner.patch import apply_delta, written
from runner.plan import Workspace
from runner.testing import FakeRuntime, FakeStepRun
from tests.helpers import TEST_IMAGE, git, make_repo, run_runner, runner_env
from tests.test_steps_unit import VALUE, Harness, step, writes

Mutation = Callable[[Path], None]


def workspace_of(repo: Path) -> Workspace:
    commit = git(repo, "rev-parse", "HEAD")
    return Workspace("github.com/acme/app", repo, "main", commit, "", False, ())


def plain_git(repo: Path, *args: str) -> bytes:
    """git as the old workspace ran it: no user config, no conversions by default."""
    return subprocess.run(
        ["git", "-c", "core.autocrlf=false", "-c", "core.quotePath=false", *args],
        cwd=repo,
        env={"PATH": os.environ["PATH"], "GIT_CONFIG_GLOBAL": "/dev/null", "LC_ALL": "C"},
        capture_output=True,
        check=True,
    ).stdout


def tricky_repo(root: Path) -> Path:
    repo = make_repo(
        root,
        "app",
        {
            ".gitignore": "*.log\nbuild/\n",
            "a.txt": "aaaa\n",
            "keep/x.py": "print(1)\n",
            "mv/old.txt": "".join(
                f"line {i} of a file long enough to be renamed\n" for i in range(40)
            ),
            "exec.sh": "echo hi\n",
            "gone.txt": "bye\n",
            "becomes-link.txt": "a file, then a link\n",
        },
    )
    (repo / "data.bin").write_bytes(bytes(range(256)) * 8)
    (repo / "link").symlink_to("a.txt")
    (repo / "ignored.log").write_text("tracked although ignored\n")
    (Path(os.fsdecode(bytes(repo) + b"/caf\xe9.txt"))).write_bytes(b"latin-1 name\n")
    git(repo, "add", "-A", "-f")
    git(repo, "commit", "-q", "-m", "tricky")
    return repo


def mutate(tree: Path) -> None:
    """What a step might do, at once after preparing (the same second: racy stat data)."""
    (tree / "a.txt").write_text("bbbb\n")  # same size, same second
    (tree / "mv" / "old.txt").rename(tree / "mv" / "new.txt")
    (tree / "exec.sh").chmod(0o755)
    (tree / "link").unlink()
    (tree / "link").symlink_to("keep/x.py")
    (tree / "new-link").symlink_to("a.txt")
    (tree / "becomes-link.txt").unlink()
    (tree / "becomes-link.txt").symlink_to("a.txt")
    data = bytearray((tree / "data.bin").read_bytes())
    data[100:104] = b"\0\1\2\3"
    (tree / "data.bin").write_bytes(bytes(data))
    (tree / "new.bin").write_bytes(b"\0\xff" * 300)
    (tree / "gone.txt").unlink()
    (tree / "new.log").write_text("ignored, never in the diff\n")
    (tree / "build").mkdir()
    (tree / "build" / "out.txt").write_text("ignored folder\n")
    (tree / "ignored.log").write_text("tracked, so changed\n")
    (tree / "empty" / "dirs").mkdir(parents=True)
    base = bytes(tree)
    Path(os.fsdecode(base + b"/caf\xe9.txt")).write_bytes(b"changed under a latin-1 name\n")
    Path(os.fsdecode(base + b"/na\xefve.txt")).write_bytes(b"added under a latin-1 name\n")


def crlf_repo(root: Path) -> Path:
    """A CRLF file committed before `.gitattributes` marked it `text`: `git add` normalises it."""
    repo = make_repo(root, "app", {"README.md": "# app\n"})
    (repo / "crlf.txt").write_bytes(b"one\r\ntwo\r\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "crlf")
    (repo / ".gitattributes").write_text("*.txt text\n")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-q", "-m", "attributes")
    return repo


def touch_crlf(tree: Path) -> None:
    (tree / "README.md").write_text("# changed\n")
    (tree / "crlf.txt").write_bytes((tree / "crlf.txt").read_bytes())  # rewritten, not changed


@pytest.mark.parametrize(
    ("make", "change"),
    [(tricky_repo, mutate), (crlf_repo, touch_crlf)],
    ids=["tricky-tree", "normalising-attributes"],
)
def test_the_patch_is_the_one_a_fresh_repository_gives(
    make: Callable[[Path], Path], change: Mutation, tmp_path: Path
) -> None:
    repo = make(tmp_path / "repos")
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    local = LocalWorkspace.create(workspace_of(repo), run_id="same", temp_root=temp_root)
    try:
        # The plain way, on a copy of the same files: what the workspace did before.
        ref = tmp_path / "ref"
        shutil.copytree(local.tree_dir, ref, symlinks=True)
        plain_git(ref, "init", "-q")
        plain_git(ref, "add", "-A", "-f")
        ref_base = plain_git(ref, "write-tree").decode().strip()
        assert local.baseline == ref_base
        change(local.tree_dir)
        change(ref)
        plain_git(ref, "add", "-A")
        ref_tree = plain_git(ref, "write-tree").decode().strip()
        tree = local.snapshot()
        assert tree == ref_tree
        expected = plain_git(
            ref, "diff", "--binary", "--no-color", "--full-index", ref_base, ref_tree
        )
        assert local.diff(local.baseline, tree) == expected
        listed = plain_git(ref, "diff-tree", "-r", "-M", "--name-status", ref_base, ref_tree)
        changes = local.changes(local.baseline, tree)
        assert len(changes.paths) == len(listed.splitlines())
        assert not (local.tree_dir / ".git").exists()  # a step sees only the files
    finally:
        local.remove()
    assert list(temp_root.iterdir()) == []
    if make is tricky_repo:
        assert b"new.log" not in expected and b"build/" not in expected
        assert b"+tracked, so changed" in expected
        assert b"rename from mv/old.txt" in expected
        assert b"old mode 100644\nnew mode 100755" in expected
        assert b"GIT binary patch" in expected
        assert b"+bbbb" in expected
        # What a full cache hit checks, read from the patch alone: each binary
        # file whole as the step left it (a delta applied to the commit's blob).
        parts = {p.path: p for p in written(expected)}
        assert parts["data.bin"].base is not None  # a delta, not the whole file
        for name in ("data.bin", "new.bin"):
            part = parts[name]
            data = part.data
            if part.base is not None:
                data = apply_delta(read_blobs(repo, [part.base])[0], data)
            assert data == (ref / name).read_bytes()
        assert parts["a.txt"].data == b"bbbb\n"
        assert b"tracked, so changed\n" in parts["ignored.log"].data
        assert "gone.txt" not in parts


def test_a_cancel_in_the_middle_of_a_large_export_stops_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repos", "app", {f"src/f{i}.txt": f"{i}\n" for i in range(600)})
    (repo / "big.bin").write_bytes(os.urandom(4 << 20))  # several chunks of its own
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "big")
    before = git(repo, "count-objects", "-v")
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    cancel = threading.Event()

    def progress(phase: str, done: int, total: int | None) -> None:
        if phase == PREPARING and done == 300:
            cancel.set()

    with pytest.raises(ExecutionError, match=r"canceled while preparing .*300 of 601 files"):
        LocalWorkspace.create(
            workspace_of(repo), run_id="big", temp_root=temp_root, cancel=cancel, progress=progress
        )
    assert list(temp_root.iterdir()) == []
    assert git(repo, "count-objects", "-v") == before  # nothing written into the user's objects


def test_the_sweep_removes_what_an_interrupted_run_left_read_only_folders_too(
    tmp_path: Path,
) -> None:
    runs, temp_root = tmp_path / "runs", tmp_path / "tmp"
    runs.mkdir()
    temp_root.mkdir()
    (runs / "gone-run").write_text("999999999\n")  # no such process
    left = temp_root / "runner-ws-gone-run-abc" / "repo" / "deep"
    left.mkdir(parents=True)
    for i in range(600):
        (left / f"f{i}").write_text("x")
    (left / "locked").mkdir()
    (left / "locked" / "file").write_text("x")
    (left / "locked").chmod(0o500)
    other = temp_root / "runner-ws-live-run-abc"
    other.mkdir()
    (runs / "live-run").write_text(f"{os.getpid()}\n")  # this process: alive
    swept = sweep_leftovers(FakeRuntime(), runs, temp_root, "org.runner.run-id")
    assert swept >= 1
    assert sorted(p.name for p in temp_root.iterdir()) == ["runner-ws-live-run-abc"]
    assert sorted(p.name for p in runs.iterdir()) == ["live-run"]


def test_a_cancellable_git_gets_all_of_a_large_input_however_slowly_it_reads(
    tmp_path: Path,
) -> None:
    # A cached diff goes to `git apply` on stdin while the cancel event is
    # polled: each poll that finds git still busy must go on sending the input.
    data = os.urandom(1 << 20) * 48
    oid = git_bytes(["hash-object", "--stdin"], cwd=tmp_path, input=data, cancel=threading.Event())
    expected = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert oid.decode().strip() == expected


# -- the step loop, on the fake runtime ------------------------------------------------


def test_a_patch_that_shows_no_bytes_or_a_delta_for_another_blob_is_refused() -> None:
    # Either way the full hit cannot check what the diff writes: the caller
    # then writes the workspace and checks its files instead.
    hidden = (
        b"diff --git a/x.bin b/x.bin\nindex 1..2 100644\nBinary files a/x.bin and b/x.bin differ\n"
    )
    with pytest.raises(CacheError, match=r"x\.bin"):
        list(written(hidden))
    delta = bytes([3, 4, 0x90, 4])  # for a 3-byte blob: copy 4 bytes from offset 0
    assert apply_delta(b"abc", bytes([3, 3, 0x90, 3])) == b"abc"
    with pytest.raises(CacheError):
        apply_delta(b"abcd", delta)  # the delta says its blob has 3 bytes
    with pytest.raises(CacheError):
        apply_delta(b"abc", delta)  # 3 bytes copied where it promised 4


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    repo = make_repo(
        tmp_path / "repos", "github.com/acme/app", {"README.md": "hello\n", "src/a.py": "a = 1\n"}
    )
    (tmp_path / "work").mkdir()
    return Harness(
        Workspace(
            "github.com/acme/app", repo, "main", git(repo, "rev-parse", "HEAD"), "", False, ()
        ),
        tmp_path,
    )


def _no_tree(*args: object, **kwargs: object) -> LocalWorkspace:
    raise AssertionError("a full cache hit wrote a workspace")


def test_a_full_cache_hit_starts_no_container_and_writes_no_tree(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def edit(run: FakeStepRun) -> int:
        run.host_path("src/a.py").write_text("a = 2\n")
        run.stdout("edited\n")
        return 0

    h.handlers["edit"] = edit
    h.handlers["add"] = writes("new.txt", "new\n")
    spec = step("edit", "outputs:", "  said:\n        value: ${{ step.stdout }}") + step("add")
    first, _ = h.run(spec)
    assert first.status == "changed", first.error
    assert len(h.runtime.steps) == 2

    monkeypatch.setattr(LocalWorkspace, "create", _no_tree)
    again, events = h.run(spec)
    assert again.status == "changed", again.error
    assert len(h.runtime.steps) == 2  # no container this time
    assert (again.diff, again.outputs, again.changes) == (first.diff, first.outputs, first.changes)
    assert (again.steps_run, again.steps_cached) == (0, 2)
    assert [e["event"] for e in events.items] == ["workspace.started", "step.cached", "step.cached"]
    assert list((h.tmp / "work").iterdir()) == []  # the scratch index is gone too


def test_a_full_cache_hit_still_refuses_a_secret_hidden_in_a_binary_file(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A binary patch shows the file's bytes compressed and encoded: only the
    # file itself shows the value. The cache keeps the entry (its diff shows
    # nothing); the check must still read the file on a full hit.
    def leak(run: FakeStepRun) -> int:
        run.host_path("blob.bin").write_bytes(b"\0\1" + VALUE.encode() + b"\0" * 64)
        return 0

    h.handlers["leak"] = leak
    first, _ = h.run(step("leak"))
    assert first.status == "failed" and "TOKEN" in (first.error or ""), first.error
    monkeypatch.setattr(LocalWorkspace, "create", _no_tree)
    again, events = h.run(step("leak"))
    assert len(h.runtime.steps) == 1  # the entry answered
    assert again.status == "failed", again
    assert "TOKEN" in (again.error or "") and "blob.bin" in (again.error or "")
    assert again.diff == b""
    assert VALUE not in json.dumps(events.items)
    assert list((h.tmp / "work").iterdir()) == []


def test_a_cached_diff_into_a_submodule_folder_is_answered_without_a_tree(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A submodule is an empty folder in the workspace: the diff adds a file in
    # it, which git would not apply to the commit's tree. The entry is read,
    # never applied, so the re-run still needs no tree.
    repo = h.workspace.repo_path
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{sha},vendor/lib")
    git(repo, "commit", "-q", "-m", "a submodule")
    h.workspace = workspace_of(repo)
    h.handlers["vendor"] = writes("vendor/lib/patch.txt", "patched\n")
    first, _ = h.run(step("vendor"))
    assert first.status == "changed", first.error
    monkeypatch.setattr(LocalWorkspace, "create", _no_tree)
    again, events = h.run(step("vendor"))
    assert (again.status, again.diff) == ("changed", first.diff)
    assert len(h.runtime.steps) == 1
    assert events.named("workspace.phase") == []


def test_a_full_cache_hit_refuses_a_secret_a_binary_delta_completes(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The commit's binary file holds the value's first half; the step adds the
    # second half after it. Neither the delta nor the old blob shows the value:
    # only the file rebuilt from both does.
    repo = h.workspace.repo_path
    noise = hashlib.sha256(b"noise").digest() * 128
    half = len(VALUE) // 2
    (repo / "blob.bin").write_bytes(b"\0" + noise + VALUE[:half].encode() + noise)
    git(repo, "add", "blob.bin")
    git(repo, "commit", "-q", "-m", "a binary file")
    h.workspace = workspace_of(repo)

    def complete(run: FakeStepRun) -> int:
        path = run.host_path("blob.bin")
        data = path.read_bytes()
        cut = 1 + len(noise) + half
        path.write_bytes(data[:cut] + VALUE[half:].encode() + data[cut:])
        return 0

    h.handlers["complete"] = complete
    first, _ = h.run(step("complete"))
    assert first.status == "failed" and "blob.bin" in (first.error or ""), first.error
    [key] = h.cache._entries
    entry = h.cache.get(key)
    assert entry is not None and b"\ndelta " in entry.diff  # the cache holds a delta
    monkeypatch.setattr(LocalWorkspace, "create", _no_tree)
    again, events = h.run(step("complete"))
    assert len(h.runtime.steps) == 1  # the entry answered
    assert again.status == "failed" and "TOKEN" in (again.error or ""), again
    assert "blob.bin" in (again.error or "")
    assert VALUE not in json.dumps(events.items)


# -- on the real engine ----------------------------------------------------------------


@pytest.mark.docker
def test_a_cached_re_run_gives_the_same_patch_with_no_container_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    files = {f"pkg/m{i}.py": f"# Copyright 2020\nx = {i}\n" for i in range(120)}
    make_repo(tmp_path / "repos", "github.com/acme/app", {**files, ".gitignore": "*.log\n"})
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = runner_env(tmp_path / "home", TMPDIR=str(temp))
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: growth\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: sed -i s/2020/2021/ pkg/m1.py pkg/m7.py && echo log > run.log\n"
        f"    container: {TEST_IMAGE}\n"
        f"  - run: mkdir -p new && printf 'added\\n' > new/file.txt && rm pkg/m3.py\n"
        f"    container: {TEST_IMAGE}\n"
        "changesetTemplate:\n  title: t\n  body: b\n  branch: growth\n"
        "  commit:\n    message: m\n"
    )
    patches: list[bytes] = []
    runs: list[list[dict[str, object]]] = []
    for out in ("out1", "out2"):
        proc = run_runner(
            [
                "run",
                str(spec),
                "--repos-root",
                str(tmp_path / "repos"),
                "--out",
                str(tmp_path / out),
                "--json",
            ],
            env,
        )
        assert proc.returncode == 0, proc.stderr
        runs.append([json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")])
        [patch] = (tmp_path / out).rglob("*.patch")
        patches.append(patch.read_bytes())
        assert list(temp.iterdir()) == []  # nothing left once the run has exited
    assert patches[0] == patches[1]
    assert b"-# Copyright 2020" in patches[0] and b"+added" in patches[0]
    assert b"deleted file mode" in patches[0] and b"run.log" not in patches[0]
    names = [[e["event"] for e in events] for events in runs]
    assert names[0].count("step.started") == 2
    assert "step.started" not in names[1] and names[1].count("step.cached") == 2
    assert "workspace.phase" not in names[1]  # no tree prepared, diffed or removed
