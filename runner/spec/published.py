"""`changesetTemplate.published` rules, read as Sourcegraph reads them.

A rule is ``PATTERN: value`` or ``PATTERN@BRANCH: value``. PATTERN is a glob
over the repository name in the syntax of github.com/gobwas/glob with no
separators (Sourcegraph's ``overridable`` package compiles it so, as src-cli
does for ``matches``): ``*``, ``?``, ``[…]``, ``{a,b}`` and ``\\`` escapes.
BRANCH, after the first ``@``, addresses one changeset by its head branch
(without ``refs/heads/``). The last matching rule wins; none matching gives
None, which leaves publishing to the user.
"""

from __future__ import annotations

from functools import lru_cache

from runner.spec.glob import Glob
from runner.spec.models import Published, PublishedRule


def split_rule(pattern: str) -> tuple[str, str]:
    """(repository glob, head branch) of a rule; the branch is "" when any branch matches."""
    glob, _, branch = pattern.partition("@")
    return glob, branch


@lru_cache(maxsize=256)
def _compiled(glob: str) -> Glob:
    # Validation refused patterns that do not compile; changesets are many, rules few.
    return Glob(glob)


def published_for(
    published: Published | tuple[PublishedRule, ...], repository: str, head_branch: str
) -> bool | str | None:
    """The ``published`` value of the changeset on ``head_branch`` in ``repository``."""
    if not isinstance(published, tuple):
        return published
    for rule in reversed(published):
        glob, branch = split_rule(rule.pattern)
        if branch and branch != head_branch:
            continue
        if _compiled(glob).match(repository):
            return rule.value
    return None
