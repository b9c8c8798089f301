"""Git, always run with an isolated environment.

Every git that runner starts (planning, workspaces, the query evaluator, the
executor's clone) goes through here. The environment is built from scratch,
never taken from the process: no user or system config, no hooks, no prompts,
no pager, a fixed locale and identity. So a user's ``~/.gitconfig`` or a stray
``GIT_DIR`` cannot change what runner computes, nothing blocks on a terminal,
and no variable of the process (a secret among them) reaches git.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from runner.errors import GitError

# PATH is fixed rather than inherited: git needs one to find its helpers.
_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_PAGER": "cat",
    "GIT_AUTHOR_NAME": "runner",
    "GIT_AUTHOR_EMAIL": "runner@localhost",
    "GIT_COMMITTER_NAME": "runner",
    "GIT_COMMITTER_EMAIL": "runner@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
    "LC_ALL": "C",
}
_OPTIONS = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.autocrlf=false",
    "-c",
    "core.quotePath=false",
)


def _command(args: Sequence[str], git_dir: Path | None) -> list[str]:
    cmd = ["git", *_OPTIONS]
    if git_dir is not None:
        cmd += ["--git-dir", str(git_dir)]
    return [*cmd, *args]


def _cannot_start(args: Sequence[str], where: Path | None, exc: OSError) -> GitError:
    detail = exc.strerror or str(exc)
    return GitError(f"git {args[0]} could not start in {where}: {detail}", detail=detail)


def git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    git_dir: Path | None = None,
    input: bytes | None = None,
) -> bytes:
    """Run git and return its stdout. Raises ``GitError`` with git's message."""
    where = cwd or git_dir
    try:
        proc = subprocess.run(
            _command(args, git_dir),
            cwd=cwd,
            env=dict(_ENV),
            input=input,
            capture_output=True,
            check=False,
        )
    except OSError as exc:
        raise _cannot_start(args, where, exc) from exc
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = message[-1] if message else f"exit code {proc.returncode}"
        raise GitError(f"git {args[0]} failed in {where}: {detail}", detail=detail)
    return proc.stdout


def git_text(args: Sequence[str], *, cwd: Path | None = None, git_dir: Path | None = None) -> str:
    """``git`` with its output decoded and stripped."""
    return git(args, cwd=cwd, git_dir=git_dir).decode("utf-8", "replace").strip()


def git_process(args: Sequence[str], *, cwd: Path) -> subprocess.Popen[bytes]:
    """A long-lived git (like ``cat-file --batch``) that answers on stdout what stdin asks.

    Its stderr is dropped; the caller owns the process and must close it.
    """
    try:
        return subprocess.Popen(
            _command(args, None),
            cwd=cwd,
            env=dict(_ENV),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        raise _cannot_start(args, cwd, exc) from exc


def is_repository(path: Path) -> bool:
    """Whether ``path`` is the top of a git work tree (it holds ``.git``)."""
    return (path / ".git").exists()
