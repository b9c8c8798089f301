"""A workspace's result → changeset specs in Sourcegraph's format.

Template fields are rendered with ``repository``, ``batch_change``,
``outputs`` and ``steps`` and trimmed, as Sourcegraph does. ``published``
resolves per changeset from the rules (runner.spec.published), by repository
and head branch. ``transformChanges.group`` splits the diff by directory into
one changeset per group branch, the last group whose directory holds a file
taking it, as Sourcegraph does; what no group takes stays on the template's
branch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runner.errors import ChangesetError, TemplateError
from runner.plan import Workspace
from runner.records import Frozen
from runner.spec import template as tmpl
from runner.spec.models import BatchSpec, ChangesetTemplate, TransformGroup
from runner.spec.published import published_for

DEFAULT_AUTHOR_NAME = "runner"
DEFAULT_AUTHOR_EMAIL = "runner@localhost"


@dataclass(init=False, repr=False, eq=False)  # a Frozen record: see runner.records
class FileChanges(Frozen):
    """The files a workspace's steps changed, by kind of change (paths in the repository)."""

    modified: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    renamed: tuple[str, ...] = ()

    def __init__(
        self,
        modified: tuple[str, ...] = (),
        added: tuple[str, ...] = (),
        deleted: tuple[str, ...] = (),
        renamed: tuple[str, ...] = (),
    ) -> None:
        self._fill(modified, added, deleted, renamed)

    def as_template(self) -> dict[str, list[str]]:
        """The lists as templates name them (``steps.modified_files`` …)."""
        return {
            "modified_files": list(self.modified),
            "added_files": list(self.added),
            "deleted_files": list(self.deleted),
            "renamed_files": list(self.renamed),
        }

    @property
    def paths(self) -> list[str]:
        """Every path changed, each once, sorted."""
        return sorted({*self.modified, *self.added, *self.deleted, *self.renamed})


@dataclass(init=False, repr=False, eq=False)  # a Frozen record: see runner.records
class ChangesetSpec(Frozen):
    """One changeset: its repository, path and branch, Sourcegraph's fields, its diff."""

    repository: str
    path: str
    branch: str  # the head branch, without refs/heads/
    body: dict[str, Any]  # Sourcegraph's fields
    diff: bytes

    def __init__(
        self, repository: str, path: str, branch: str, body: dict[str, Any], diff: bytes
    ) -> None:
        self._fill(repository, path, branch, body, diff)


def _group_directory(directory: str) -> str:
    """A group's directory as a path prefix: leading ``./``, ``/`` and ``~/`` dropped."""
    while directory.startswith(("./", "/", "~/")):
        directory = directory[directory.index("/") + 1 :]
    return directory.rstrip("/")


def _group_for(path: str, groups: Sequence[TransformGroup]) -> TransformGroup | None:
    """The last group whose directory holds ``path`` (a file named like a folder is not in it)."""
    chosen: TransformGroup | None = None
    for group in groups:
        directory = _group_directory(group.directory)
        if directory and path.startswith(directory + "/"):
            chosen = group
    return chosen


def _check_groups(groups: Sequence[TransformGroup], repository: str, branch: str) -> None:
    """Refuse groups that would give two changesets in one repository the same branch."""
    seen: set[str] = set()
    for group in groups:
        if group.branch == branch:
            raise ChangesetError(
                f"transformChanges: a group's branch {group.branch!r} is the changeset "
                f"template's own branch in {repository}",
                hint="give each group a branch of its own",
            )
        if group.branch in seen:
            raise ChangesetError(
                f"transformChanges: two groups give changesets in {repository} the branch "
                f"{group.branch!r}",
                hint="give each group a branch of its own",
            )
        seen.add(group.branch)


def build_changesets(
    spec: BatchSpec,
    workspace: Workspace,
    *,
    diff: bytes,
    changes: FileChanges,
    outputs: Mapping[str, Any],
) -> list[ChangesetSpec]:
    """Changeset specs for a workspace with a non-empty diff.

    With ``transformChanges`` groups, each changeset gets the sections of
    ``diff`` that touch its files.
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
        "batch_change_link": tmpl.BATCH_CHANGE_LINK,
    }
    fields = _render_fields(template, context)
    groups = [
        g for g in spec.transform_groups if not g.repository or g.repository == workspace.repository
    ]
    if not groups:
        return [_spec(spec, workspace, template, fields, fields["branch"], diff)]
    _check_groups(groups, workspace.repository, fields["branch"])

    by_branch: dict[str, list[str]] = {}
    rest: list[str] = []
    for path in changes.paths:
        group = _group_for(path, groups)
        if group is None:
            rest.append(path)
        else:
            by_branch.setdefault(group.branch, []).append(path)
    out = []
    if rest:
        out.append(
            _spec(spec, workspace, template, fields, fields["branch"], split_diff(diff, rest))
        )
    for branch, chosen in by_branch.items():
        part = split_diff(diff, chosen)
        if part.strip():
            out.append(_spec(spec, workspace, template, fields, branch, part))
    return out


def _render_fields(template: ChangesetTemplate, context: Mapping[str, Any]) -> dict[str, str]:
    def render(what: str, text: str | None) -> str:
        if text is None:
            return ""
        try:
            return tmpl.trim_space(tmpl.render_template(text, context))
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
        "published": published_for(template.published, workspace.repository, branch),
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


def split_diff(diff: bytes, paths: list[str] | None) -> bytes:
    """The sections of a git diff that touch ``paths`` (None: the whole diff)."""
    if paths is None:
        return diff
    wanted = [p.encode() for p in paths]
    out: list[bytes] = []
    for chunk in file_sections(diff):
        header = chunk.split(b"\n", 1)[0]
        if any(header.endswith(b" b/" + p) or (b" a/" + p + b" ") in header for p in wanted):
            out.append(chunk)
    return b"".join(out)


def file_sections(diff: bytes) -> list[bytes]:
    sections: list[bytes] = []
    marker = b"diff --git "
    pos = diff.find(marker)
    if pos < 0:
        return [diff] if diff else []
    while pos >= 0:
        nxt = diff.find(b"\n" + marker, pos + 1)
        end = len(diff) if nxt < 0 else nxt + 1
        sections.append(diff[pos:end])
        pos = -1 if nxt < 0 else nxt + 1
    return sections
