"""A workspace's result → changeset specs in Sourcegraph's format.

Template fields are rendered with ``repository``, ``batch_change``,
``outputs`` and ``steps`` and trimmed, as Sourcegraph does. ``published``
resolves per changeset from the rules, last matching rule first.
``transformChanges.group`` splits the diff by directory into one changeset per
group branch; what no group takes stays on the template's branch.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runner.errors import TemplateError
from runner.execute.workspace import FileChanges
from runner.plan import Workspace
from runner.spec import template as tmpl
from runner.spec.models import (
    BatchSpec,
    ChangesetTemplate,
    Published,
    PublishedRule,
    TransformGroup,
)

DEFAULT_AUTHOR_NAME = "runner"
DEFAULT_AUTHOR_EMAIL = "runner@localhost"


class ChangesetError(TemplateError):
    pass


@dataclass(frozen=True)
class ChangesetSpec:
    repository: str
    path: str
    branch: str  # the head branch, without refs/heads/
    body: dict[str, Any]  # Sourcegraph's fields
    diff: bytes


def published_for(
    published: Published | tuple[PublishedRule, ...], repository: str, branch: str
) -> bool | str | None:
    """Resolve ``published`` for one changeset: the last matching rule wins."""
    if not isinstance(published, tuple):
        return published
    for rule in reversed(published):
        pattern, _, want_branch = rule.pattern.partition("@")
        if not fnmatch.fnmatchcase(repository, pattern):
            continue
        if want_branch and want_branch != branch:
            continue
        return rule.value
    return None


def _group_for(
    path: str, groups: Sequence[TransformGroup], repository: str
) -> TransformGroup | None:
    """The most specific group whose directory holds ``path``."""
    best: TransformGroup | None = None
    for group in groups:
        if group.repository and group.repository != repository:
            continue
        directory = group.directory.strip("/")
        inside = path == directory or path.startswith(directory + "/")
        if inside and (best is None or len(directory) > len(best.directory.strip("/"))):
            best = group
    return best


def build_changesets(
    spec: BatchSpec,
    workspace: Workspace,
    *,
    diff: bytes,
    changes: FileChanges,
    outputs: Mapping[str, Any],
    diff_for: Callable[[list[str] | None], bytes],
) -> list[ChangesetSpec]:
    """Changeset specs for a workspace with a non-empty diff.

    ``diff_for(paths)`` gives the diff limited to those paths (None: all).
    """
    template = spec.changeset_template
    if template is None or not diff.strip():
        return []
    context = {
        "repository": {
            "name": workspace.repository,
            "branch": workspace.branch,
            "search_result_paths": tmpl.SearchResultPaths(workspace.search_result_paths),
        },
        "batch_change": {"name": spec.name, "description": spec.description},
        "outputs": dict(outputs),
        "steps": {**changes.as_template(), "path": workspace.path},
    }
    fields = _render_fields(template, context)
    groups = spec.transform_groups
    if not groups:
        return [_spec(spec, workspace, template, fields, fields["branch"], diff)]

    paths = sorted({*changes.modified, *changes.added, *changes.deleted, *changes.renamed})
    by_branch: dict[str, list[str]] = {}
    rest: list[str] = []
    for path in paths:
        group = _group_for(path, groups, workspace.repository)
        if group is None:
            rest.append(path)
        else:
            by_branch.setdefault(group.branch, []).append(path)
    out = []
    if rest:
        out.append(_spec(spec, workspace, template, fields, fields["branch"], diff_for(rest)))
    for branch, chosen in by_branch.items():
        part = diff_for(chosen)
        if part.strip():
            out.append(_spec(spec, workspace, template, fields, branch, part))
    return out


def _render_fields(template: ChangesetTemplate, context: Mapping[str, Any]) -> dict[str, str]:
    def render(what: str, text: str | None) -> str:
        if text is None:
            return ""
        try:
            return str(tmpl.render_template(text, context)).strip()
        except TemplateError as exc:
            raise ChangesetError(
                f"changesetTemplate.{what} failed to render: {exc.message}"
            ) from None

    return {
        "title": render("title", template.title),
        "body": render("body", template.body),
        "branch": render("branch", template.branch),
        "message": render("commit.message", template.commit_message),
        "author_name": render("commit.author.name", template.author_name) or DEFAULT_AUTHOR_NAME,
        "author_email": render("commit.author.email", template.author_email)
        or DEFAULT_AUTHOR_EMAIL,
    }


def _spec(
    spec: BatchSpec,
    workspace: Workspace,
    template: ChangesetTemplate,
    fields: Mapping[str, str],
    branch: str,
    diff: bytes,
) -> ChangesetSpec:
    body = {
        "baseRepository": workspace.repository,
        "baseRef": f"refs/heads/{workspace.branch}",
        "baseRev": workspace.commit,
        "headRepository": workspace.repository,
        "headRef": f"refs/heads/{branch}",
        "title": fields["title"],
        "body": fields["body"],
        "published": published_for(template.published, workspace.repository, workspace.branch),
        "fork": template.fork,
        "commits": [
            {
                "message": fields["message"],
                "diff": diff.decode("utf-8", "surrogateescape"),
                "authorName": fields["author_name"],
                "authorEmail": fields["author_email"],
            }
        ],
    }
    return ChangesetSpec(workspace.repository, workspace.path, branch, body, diff)


def import_records(spec: BatchSpec) -> list[dict[str, str]]:
    return [
        {"baseRepository": item.repository, "externalID": external_id}
        for item in spec.import_changesets
        for external_id in item.external_ids
    ]
