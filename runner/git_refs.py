"""A repository's current branch and a branch's commit, read from its files.

Planning asks every repository for both; a git process for each costs a few
milliseconds, which a fully cached re-run over many repositories pays several
times over. The plain layouts (a `.git` folder or a bare repository; loose or
packed refs under `refs/heads`) are read here; anything else (a worktree, a
symbolic branch, a name git would resolve another way) answers None, and the
caller asks git, whose answer (and error) stays the reference.
"""

from __future__ import annotations

import re
from pathlib import Path

_OBJECT_ID = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
# Names git resolves only as `refs/heads/<name>` when no other ref shadows them.
_PLAIN_BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]*")


def git_dir(repo: Path) -> Path | None:
    """The repository's own git folder, or None for a layout left to git."""
    dot = repo / ".git"
    if dot.is_dir():
        found = dot
    elif (repo / "HEAD").is_file() and (repo / "objects").is_dir():
        found = repo  # bare
    else:
        return None  # a `.git` file (worktree, submodule) or not a repository
    # A worktree's refs live elsewhere; a reftable repository keeps none in files.
    if (found / "commondir").exists() or (found / "reftable").exists():
        return None
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def head_branch(repo: Path) -> str | None:
    """``git symbolic-ref --short HEAD``'s answer for a plain layout, else None."""
    gd = git_dir(repo)
    head = _read(gd / "HEAD") if gd is not None else None
    if gd is None or head is None or not head.startswith("ref: refs/heads/"):
        return None  # detached, or unusual: git says so in its own words
    branch = head.removeprefix("ref: refs/heads/")
    # With a tag of the same name, git shortens it as `heads/<name>`.
    return None if _shadowed(gd, branch, _packed(gd)) else branch


def _packed(gd: Path) -> dict[str, str]:
    text = _read(gd / "packed-refs") or ""
    refs: dict[str, str] = {}
    for line in text.splitlines():
        if line and line[0] not in "#^":
            oid, _, name = line.partition(" ")
            refs[name] = oid
    return refs


def branch_commit(repo: Path, branch: str) -> str | None:
    """``git rev-parse --verify <branch>^{commit}`` for a plain branch, else None.

    None also when the name could mean something other than the branch (a
    file in the git folder, `refs/<name>`, a tag of that name): git's own
    order of meanings then decides.
    """
    gd = git_dir(repo)
    if gd is None or not _PLAIN_BRANCH.fullmatch(branch) or ".." in branch:
        return None
    if _OBJECT_ID.fullmatch(branch) or (gd / branch).exists():
        return None
    packed = _packed(gd)
    if _shadowed(gd, branch, packed):
        return None
    loose = _read(gd / "refs" / "heads" / branch)
    if loose is None:
        loose = packed.get(f"refs/heads/{branch}")
    return loose if loose is not None and _OBJECT_ID.fullmatch(loose) else None


def _shadowed(gd: Path, branch: str, packed: dict[str, str]) -> bool:
    """Whether a ref git looks at before `refs/heads/<branch>` exists."""
    shadows = (f"refs/{branch}", f"refs/tags/{branch}")
    return any((gd / s).exists() or s in packed for s in shadows)
