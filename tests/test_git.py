"""runner.git: every git runner starts ignores the process's environment and config."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runner.errors import GitError
from runner.git import git, git_process, git_text
from runner.query import LocalRepository, evaluate_query, parse_query


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git(["init", "-q", "-b", "main"], cwd=path)
    for name, text in files.items():
        (path / name).write_text(text)
    git(["add", "-A"], cwd=path)
    git(["commit", "-q", "-m", "files"], cwd=path)
    return path


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path]:
    """Two repositories, each with its own file on ``main``."""
    ours = make_repo(tmp_path / "ours", {"ours.txt": "needle in ours\n"})
    other = make_repo(tmp_path / "other", {"other.txt": "needle in other\n"})
    return ours, other


def _hostile_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _other: Path) -> None:
    home = tmp_path / "home"
    (home / ".config" / "git").mkdir(parents=True)
    for config in (home / ".gitconfig", home / ".config" / "git" / "config"):
        config.write_text("[core\nthis is not git config\n")
    for name in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))


def _hostile_git_dir(monkeypatch: pytest.MonkeyPatch, _tmp_path: Path, other: Path) -> None:
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))


def _hostile_env_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _other: Path) -> None:
    broken = tmp_path / "broken.gitconfig"
    broken.write_text("[core\nthis is not git config\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(broken))
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "include.path")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", str(broken))


def _hostile_objects(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _other: Path) -> None:
    monkeypatch.setenv("GIT_OBJECT_DIRECTORY", str(tmp_path / "no-objects"))


HOSTILE = {
    "~/.gitconfig": _hostile_home,
    "GIT_DIR": _hostile_git_dir,
    "GIT_CONFIG_*": _hostile_env_config,
    "GIT_OBJECT_DIRECTORY": _hostile_objects,
}


def _plain_git_listing(repo: Path) -> subprocess.CompletedProcess[bytes]:
    """git as the process would start it, inheriting its environment (the control)."""
    return subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "--name-only", "main"],
        capture_output=True,
        check=False,
    )


@pytest.mark.parametrize("hostile", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_process_environment_does_not_change_what_the_query_sees(
    hostile: str,
    repos: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ours, other = repos
    HOSTILE[hostile](monkeypatch, tmp_path, other)

    # The control: a git that inherits the environment fails or sees the other repository.
    plain = _plain_git_listing(ours)
    assert plain.returncode != 0 or plain.stdout.decode().split() != ["ours.txt"]

    local = [LocalRepository("ours", ours, "main")]
    found = evaluate_query(parse_query("needle"), local)
    assert [(m.repository.name, m.search_result_paths) for m in found] == [("ours", ("ours.txt",))]
    assert git_text(["ls-tree", "-r", "--name-only", "main"], cwd=ours) == "ours.txt"


def test_no_variable_of_the_process_reaches_git(
    repos: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, _ = repos
    monkeypatch.setenv("RUNNER_TEST_SECRET", "hunter2-value")
    # An alias starting with ! runs a shell command with git's own environment.
    seen = git_text(["-c", "alias.showenv=!env", "showenv"], cwd=ours)
    assert "hunter2-value" not in seen
    assert "RUNNER_TEST_SECRET" not in seen
    names = {line.split("=", 1)[0] for line in seen.splitlines()}
    assert "HOME" not in names
    assert "LC_ALL=C" in seen.splitlines()


def test_no_user_or_system_config_is_read(repos: tuple[Path, Path]) -> None:
    ours, _ = repos
    origins = git_text(["config", "--list", "--show-origin"], cwd=ours).splitlines()
    assert origins
    # Only the repository's own config and runner's command-line options remain.
    assert all(line.startswith(("file:.git/config", "command line:")) for line in origins)


def test_a_failing_git_raises_git_error_with_its_last_word(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.txt": "a\n"})
    with pytest.raises(GitError) as info:
        git(["rev-parse", "--verify", "no-such-branch^{commit}"], cwd=repo)
    assert info.value.detail
    assert info.value.detail in info.value.message
    assert "rev-parse" in info.value.message


def test_git_that_cannot_start_raises_git_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(GitError, match="could not start"):
        git(["status"], cwd=missing)
    with pytest.raises(GitError, match="could not start"):
        git_process(["cat-file", "--batch"], cwd=missing)


def test_git_process_answers_batch_requests(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.txt": "hello\n"})
    oid = git_text(["rev-parse", "main:a.txt"], cwd=repo)
    proc = git_process(["cat-file", "--batch"], cwd=repo)
    try:
        out, _ = proc.communicate(oid.encode() + b"\n", timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert out == f"{oid} blob 6\nhello\n\n".encode()
