"""Git, run with an isolated configuration.

No user or system config, no hooks, no prompts, no pager: a user's
``~/.gitconfig`` (or a repository's hooks) must not change what runner
computes, and nothing may block on a terminal.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from runner.errors import ExecutionError

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


class GitError(ExecutionError):
    pass


def git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    git_dir: Path | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> bytes:
    """Run git and return its stdout. Raises ``GitError`` with git's message."""
    cmd = ["git", *_OPTIONS]
    if git_dir is not None:
        cmd += ["--git-dir", str(git_dir)]
    cmd += list(args)
    proc = subprocess.run(
        cmd, cwd=cwd, env=dict(_ENV), input=input, capture_output=True, check=False
    )
    if check and proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = message[-1] if message else f"exit code {proc.returncode}"
        raise GitError(f"git {args[0]} failed in {cwd or git_dir}: {detail}")
    return proc.stdout


def git_text(args: Sequence[str], *, cwd: Path | None = None, git_dir: Path | None = None) -> str:
    return git(args, cwd=cwd, git_dir=git_dir).decode("utf-8", "replace").strip()


def is_repository(path: Path) -> bool:
    return (path / ".git").exists()
