"""The batch spec as runner uses it, after validation.

Every piece keeps its position so that later stages (env resolution, run
errors) can point at the line that caused them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from runner.spec.yamlpos import Pos

OutputFormat = Literal["json", "yaml", "text"]
Published = bool | Literal["draft"] | None
EnvForm = Literal["null", "object", "list"]


@dataclass(frozen=True)
class EnvEntry:
    """One variable of ``step.env``.

    ``value`` is None for a bare ``NAME`` item (its value comes from outside
    the spec: a secret or an allowed host variable).
    """

    name: str
    value: str | None
    pos: Pos

    @property
    def is_bare(self) -> bool:
        return self.value is None


@dataclass(frozen=True)
class OutputDef:
    name: str
    value: str
    format: OutputFormat
    pos: Pos


@dataclass(frozen=True)
class MountDef:
    path: str
    mountpoint: str
    pos: Pos


@dataclass(frozen=True)
class FileDef:
    target: str
    content: str
    pos: Pos


@dataclass(frozen=True)
class Step:
    number: int  # counted from 1
    run: str
    container: str
    env: tuple[EnvEntry, ...]
    env_form: EnvForm
    files: tuple[FileDef, ...]
    outputs: tuple[OutputDef, ...]
    mounts: tuple[MountDef, ...]
    if_: bool | str | None
    pos: Pos
    definition: Any  # the step as written (plain data, before templating)


@dataclass(frozen=True)
class OnQuery:
    query: str
    pos: Pos


@dataclass(frozen=True)
class OnRepository:
    repository: str
    branches: tuple[str, ...]  # empty: the repository's default branch
    pos: Pos


@dataclass(frozen=True)
class WorkspaceConfig:
    root_at_location_of: str
    in_glob: str | None
    only_fetch_workspace: bool
    pos: Pos


@dataclass(frozen=True)
class TransformGroup:
    directory: str
    branch: str
    repository: str | None
    pos: Pos


@dataclass(frozen=True)
class ImportChangeset:
    repository: str
    external_ids: tuple[str, ...]
    pos: Pos


@dataclass(frozen=True)
class PublishedRule:
    pattern: str  # glob over the repository name, optionally with @branch
    value: bool | Literal["draft"]


@dataclass(frozen=True)
class ChangesetTemplate:
    title: str
    body: str
    branch: str
    fork: bool | None
    commit_message: str
    author_name: str | None
    author_email: str | None
    published: Published | tuple[PublishedRule, ...]
    pos: Pos


@dataclass(frozen=True)
class BatchSpec:
    path: str
    version: int
    name: str
    description: str
    on: tuple[OnQuery | OnRepository, ...]
    workspaces: tuple[WorkspaceConfig, ...]
    steps: tuple[Step, ...]
    transform_groups: tuple[TransformGroup, ...]
    import_changesets: tuple[ImportChangeset, ...]
    changeset_template: ChangesetTemplate | None
    raw: Any  # the whole spec as plain data
