"""Git, always run with an isolated environment.

Every git that runner starts (planning, workspaces, the query evaluator, the
executor's clone) goes through here. The environment is built from scratch,
never taken from the process: no user or system config, no hooks, no prompts,
no pager, a fixed locale and identity. So a user's ``~/.gitconfig`` or a stray
``GIT_DIR`` cannot change what runner computes, nothing blocks on a terminal,
and no variable of the process (a secret among them) reaches git.

A git that can take seconds (over a large tree) is given the run's cancel
event: it is killed as soon as the event is set, and a ``GitError`` whose
detail is ``CANCELED`` raised.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

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


def _command(args: Sequence[str], git_dir: Path | None, work_tree: Path | None) -> list[str]:
    cmd = ["git", *_OPTIONS]
    if git_dir is not None:
        cmd += ["--git-dir", str(git_dir)]
    if work_tree is not None:
        cmd += ["--work-tree", str(work_tree)]
    return [*cmd, *args]


def _cannot_start(args: Sequence[str], where: Path | None, exc: OSError) -> GitError:
    detail = exc.strerror or str(exc)
    return GitError(f"git {args[0]} could not start in {where}: {detail}", detail=detail)


# What a git's stdin, stdout or stderr may be given as.
_Stream = int | IO[bytes] | None

# How often a cancellable git looks at its cancel event while git runs.
CANCEL_POLL_S = 0.05
# The ``detail`` of the GitError a canceled git raises.
CANCELED = "canceled"


def _canceled(args: Sequence[str], where: Path | None) -> GitError:
    return GitError(
        f"git {args[0]} in {where} was stopped: the run was canceled",
        detail=CANCELED,
        hint="run again to do the work that was stopped",
    )


def git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    git_dir: Path | None = None,
    work_tree: Path | None = None,
    input: bytes | None = None,
    cancel: threading.Event | None = None,
) -> bytes:
    """Run git and return its stdout. Raises ``GitError`` with git's message.

    With ``cancel``, git is killed as soon as the event is set (checked every
    ``CANCEL_POLL_S`` while it runs, and before it starts) and a ``GitError``
    with detail ``CANCELED`` is raised. ``work_tree`` with ``git_dir``: a
    repository whose git folder is kept apart from its files.
    """
    where = cwd or git_dir
    if cancel is not None and cancel.is_set():
        raise _canceled(args, where)
    stdin = subprocess.DEVNULL if input is None else subprocess.PIPE
    proc = _start(args, cwd=cwd, git_dir=git_dir, work_tree=work_tree, stdin=stdin)
    stdout, stderr = _communicate(proc, input, cancel, args, where)
    _check(args, where, proc.returncode, stderr)
    return stdout


def _start(
    args: Sequence[str],
    *,
    cwd: Path | None,
    git_dir: Path | None = None,
    work_tree: Path | None = None,
    stdin: _Stream,
    stdout: _Stream = subprocess.PIPE,
    stderr: _Stream = subprocess.PIPE,
) -> subprocess.Popen[bytes]:
    """git started in the isolated environment; ``GitError`` when it cannot start."""
    try:
        return subprocess.Popen(
            _command(args, git_dir, work_tree),
            cwd=cwd,
            env=dict(_ENV),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
        )
    except OSError as exc:
        raise _cannot_start(args, cwd or git_dir, exc) from exc


def _check(args: Sequence[str], where: Path | None, code: int, stderr: bytes) -> None:
    """A ``GitError`` with git's last line of stderr, unless git succeeded."""
    if code != 0:
        message = stderr.decode("utf-8", "replace").strip().splitlines()
        detail = message[-1] if message else f"exit code {code}"
        raise GitError(f"git {args[0]} failed in {where}: {detail}", detail=detail)


def _communicate(
    proc: subprocess.Popen[bytes],
    input: bytes | None,
    cancel: threading.Event | None,
    args: Sequence[str],
    where: Path | None,
) -> tuple[bytes, bytes]:
    """git's stdout and stderr; on cancel, git is killed first."""
    if cancel is None:
        with proc:
            return proc.communicate(input)
    # communicate may be called again after a timeout without losing output,
    # but not to go on sending input (it stops writing stdin when retried):
    # a thread of its own writes the input.
    feeder = None
    if input is not None and proc.stdin is not None:
        stdin, proc.stdin = proc.stdin, None
        feeder = threading.Thread(target=_send, args=(stdin, input), name="git-stdin")
        feeder.start()
    try:
        with proc:
            try:
                while True:
                    try:
                        return proc.communicate(timeout=CANCEL_POLL_S)
                    except subprocess.TimeoutExpired:
                        if cancel.is_set():
                            break
            except BaseException:  # KeyboardInterrupt or the like: leave no git behind
                proc.kill()
                raise
            proc.kill()
            proc.communicate()
    finally:
        if feeder is not None:
            feeder.join()  # git has ended: the write finished or failed
    raise _canceled(args, where)


def _send(stdin: IO[bytes], data: bytes) -> None:
    try:
        with stdin:
            stdin.write(data)
    except OSError:  # git ended (killed, or failed) before reading it all
        pass


def git_pipe(
    first: Sequence[str],
    second: Sequence[str],
    *,
    first_cwd: Path,
    second_cwd: Path,
    input: bytes = b"",
    cancel: threading.Event | None = None,
) -> bytes:
    """``git FIRST | git SECOND``, each in its own folder; SECOND's stdout.

    For moving objects between repositories (``pack-objects --stdout`` into
    ``index-pack --stdin``) without holding them in memory or writing into
    the first one. ``input`` goes to FIRST and must be small (it is written
    before SECOND starts reading). Either failing raises ``GitError``;
    ``cancel`` kills both.
    """
    if cancel is not None and cancel.is_set():
        raise _canceled(first, first_cwd)
    # The producer's stderr goes to a file: a pipe nobody reads until the end could fill.
    with tempfile.TemporaryFile() as errors:
        producer = _start(first, cwd=first_cwd, stdin=subprocess.PIPE, stderr=errors)
        with producer:
            out, err, code = _feed_and_consume(producer, second, second_cwd, input, cancel)
        errors.seek(0)
        # The producer first: when it fails, the consumer's complaint is only the echo.
        _check(first, first_cwd, producer.returncode, errors.read())
    _check(second, second_cwd, code, err)
    return out


def _feed_and_consume(
    producer: subprocess.Popen[bytes],
    second: Sequence[str],
    second_cwd: Path,
    input: bytes,
    cancel: threading.Event | None,
) -> tuple[bytes, bytes, int]:
    """The consumer's stdout, stderr and exit code."""
    assert producer.stdin is not None
    assert producer.stdout is not None
    try:
        # A producer that failed at once has closed its stdin: its stderr says why.
        with contextlib.suppress(BrokenPipeError):
            producer.stdin.write(input)
            producer.stdin.close()
        consumer = _start(second, cwd=second_cwd, stdin=producer.stdout)
    except BaseException:
        producer.kill()
        raise
    finally:
        producer.stdout.close()  # the consumer holds its own copy
    try:
        out, err = _communicate(consumer, None, cancel, second, second_cwd)
    except BaseException:
        producer.kill()
        raise
    producer.wait()
    return out, err, consumer.returncode


def git_text(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    git_dir: Path | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """``git`` with its output decoded and stripped."""
    return git(args, cwd=cwd, git_dir=git_dir, cancel=cancel).decode("utf-8", "replace").strip()


def git_process(
    args: Sequence[str], *, cwd: Path | None = None, git_dir: Path | None = None
) -> subprocess.Popen[bytes]:
    """A long-lived git (like ``cat-file --batch``) that answers on stdout what stdin asks.

    Its stderr is dropped; the caller owns the process and must close it.
    """
    return _start(args, cwd=cwd, git_dir=git_dir, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)


def is_repository(path: Path) -> bool:
    """Whether ``path`` is the top of a git work tree (it holds ``.git``)."""
    return (path / ".git").exists()
