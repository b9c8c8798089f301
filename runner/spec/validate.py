"""Validation of a loaded spec: the schema, the rules beyond it, templates.

It walks the positioned YAML once, collects every problem (never stopping at
the first) and builds the models when there are none. Given the folder that
`mount` paths are relative to, it also checks each one there
(runner.spec.mounts); without it, mounts are checked later, where the files are.

Each `repositoriesMatchingQuery` goes through the parser `runner run` uses
(runner.query): a malformed query is a problem at its position; a query
Sourcegraph accepts but runner cannot evaluate locally (structural search,
`repo:has.file(…)`) is a *warning*: the spec is valid, and `runner run` and
`runner env explain` refuse that query.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from runner.errors import MountPathError, Problem, QueryError, TemplateError
from runner.query import parse_query
from runner.spec import template as tmpl
from runner.spec.glob import Glob, GlobError
from runner.spec.models import (
    BatchSpec,
    ChangesetTemplate,
    EnvEntry,
    EnvForm,
    FileDef,
    ImportChangeset,
    MountDef,
    OnQuery,
    OnRepository,
    OutputDef,
    OutputFormat,
    Published,
    PublishedRule,
    Step,
    TransformGroup,
    WorkspaceConfig,
)
from runner.spec.mounts import resolve_mount
from runner.spec.published import split_rule
from runner.spec.yamlpos import Pos, YNode

NAME_RE = re.compile(r"^[\w.-]+$", re.ASCII)
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# The objects templates can walk, and their fields.
FIXED_FIELDS: dict[str, frozenset[str]] = {
    "repository": frozenset({"name", "branch", "search_result_paths"}),
    "batch_change": frozenset({"name", "description"}),
    "previous_step": frozenset(
        {"modified_files", "added_files", "deleted_files", "renamed_files", "stdout", "stderr"}
    ),
    "step": frozenset(
        {"modified_files", "added_files", "deleted_files", "renamed_files", "stdout", "stderr"}
    ),
    "steps": frozenset({"modified_files", "added_files", "deleted_files", "renamed_files", "path"}),
}
STEP_ROOTS = tmpl.STEP_ROOTS  # Sourcegraph's: `step` too, empty before the step runs
OUTPUT_ROOTS = tmpl.STEP_ROOTS
CHANGESET_ROOTS = tmpl.CHANGESET_ROOTS
RUNTIME_ROOTS = frozenset({"previous_step", "step", "steps", "outputs"})

TOP_KEYS = (
    "version",
    "name",
    "description",
    "on",
    "workspaces",
    "steps",
    "transformChanges",
    "importChangesets",
    "changesetTemplate",
)
STEP_KEYS = ("run", "container", "env", "files", "outputs", "mount", "if")


def _kind_name(node: YNode) -> str:
    if node.kind == "map":
        return "a mapping"
    if node.kind == "seq":
        return "a list"
    value = node.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string"


@dataclass(frozen=True)
class SpecCheck:
    """What checking a spec found: the model (None if invalid), problems, warnings.

    ``hint`` says what to do about the problems when the generic advice
    (fix the spec, validate again) would not help.
    """

    spec: BatchSpec | None
    problems: list[Problem]
    warnings: list[Problem] = field(default_factory=list)
    hint: str | None = None


class _Validator:
    def __init__(self, path: str, mount_root: Path | None) -> None:
        self.path = path
        self.mount_root = mount_root
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    # -- reporting ---------------------------------------------------------
    def err(self, pos: Pos, message: str) -> None:
        self.problems.append(Problem(self.path, pos.line, pos.column, message))

    def warn(self, pos: Pos, message: str) -> None:
        self.warnings.append(Problem(self.path, pos.line, pos.column, message))

    # -- shapes ------------------------------------------------------------
    def mapping(
        self,
        node: YNode,
        where: str,
        allowed: Collection[str] | None,
        required: Iterable[str] = (),
    ) -> bool:
        """Check that ``node`` is a mapping with known and required keys."""
        if node.kind != "map":
            self.err(node.pos, f"{where} must be a mapping, not {_kind_name(node)}")
            return False
        if allowed is not None:
            for key, key_node, _ in node.items():
                if key not in allowed:
                    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    options = ", ".join(allowed)
                    self.err(
                        key_node.pos,
                        f"unknown key {key!r} in {where}{hint} (allowed: {options})",
                    )
        for key in required:
            if key not in node.value:
                self.err(node.pos, f"{where} is missing the required key {key!r}")
        return True

    def string(self, node: YNode | None, where: str, *, allow_empty: bool = True) -> str | None:
        if node is None:
            return None
        if node.kind != "scalar" or not isinstance(node.value, str):
            hint = " (quote it)" if node.kind == "scalar" and node.value is not None else ""
            self.err(node.pos, f"{where} must be a string, not {_kind_name(node)}{hint}")
            return None
        if not allow_empty and not node.value:
            self.err(node.pos, f"{where} must not be empty")
            return None
        return node.value  # type: ignore[no-any-return,unused-ignore]

    def boolean(self, node: YNode | None, where: str) -> bool | None:
        if node is None or node.value is None:
            return None
        if node.kind != "scalar" or not isinstance(node.value, bool):
            self.err(node.pos, f"{where} must be true or false, not {_kind_name(node)}")
            return None
        return node.value  # type: ignore[no-any-return,unused-ignore]

    def seq(self, node: YNode | None, where: str) -> list[YNode]:
        """A list, or an empty one for null/absent."""
        if node is None or (node.kind == "scalar" and node.value is None):
            return []
        if node.kind != "seq":
            self.err(node.pos, f"{where} must be a list, not {_kind_name(node)}")
            return []
        return cast(list[YNode], node.value)

    def glob(self, node: YNode, pattern: str, where: str) -> bool:
        """Whether ``pattern`` compiles as the glob Sourcegraph reads there."""
        try:
            Glob(pattern)
        except GlobError as exc:
            self.err(node.pos, f"{where}: {pattern!r} is not a valid glob pattern: {exc}")
            return False
        return True

    # -- templates ---------------------------------------------------------
    def text(
        self, node: YNode | None, where: str, roots: frozenset[str], *, allow_empty: bool = True
    ) -> str | None:
        """A string that may hold ``${{ }}`` templates, checked against ``roots``."""
        value = self.string(node, where, allow_empty=allow_empty)
        self.template(node, value, where, roots)
        return value

    def template(
        self, node: YNode | None, text: str | None, where: str, roots: frozenset[str]
    ) -> None:
        if node is None or text is None or not tmpl.has_template(text):
            return
        try:
            parsed = tmpl.parse_template(text, roots)
        except TemplateError as exc:
            self.err(_offset_pos(node, text, exc.offset), f"{where}: {exc.message}")
            return
        for ref in parsed.references():
            message = _reference_problem(ref.path, roots)
            if message:
                self.err(_offset_pos(node, text, ref.offset), f"{where}: {message}")


def _reference_problem(path: tuple[str, ...], roots: frozenset[str]) -> str | None:
    root = path[0]
    if root not in roots:  # the parser already refuses unknown names; kept for safety
        return f"unknown variable {root!r} (available here: {', '.join(sorted(roots))})"
    fields = FIXED_FIELDS.get(root)
    if fields is None or len(path) == 1:
        return None
    name = path[1]
    if name not in fields:
        close = difflib.get_close_matches(name, sorted(fields), n=1, cutoff=0.6)
        hint = f"; did you mean {root}.{close[0]}?" if close else ""
        return (
            f"unknown variable {'.'.join(path[:2])}{hint} ({root} has: {', '.join(sorted(fields))})"
        )
    if len(path) > 2:
        return f"{'.'.join(path[:2])} has no field {path[2]!r}"
    return None


def _offset_pos(node: YNode, text: str, offset: int | None) -> Pos:
    """Map an offset in a scalar's value to a file position, as near as the style allows."""
    if offset is None or offset < 0:
        return node.pos
    before = text[:offset]
    line_in_value = before.count("\n")
    col_in_line = offset - (before.rfind("\n") + 1)
    if node.style in ("|", ">"):
        # Block scalars start on the line after the indicator; their indentation
        # is not part of the value, so the column is a best effort.
        indent = node.pos.column + 1 if node.style == "|" else node.pos.column
        return Pos(node.pos.line + 1 + line_in_value, indent + col_in_line)
    if line_in_value == 0:
        quote = 1 if node.style in ("'", '"') else 0
        return Pos(node.pos.line, node.pos.column + quote + col_in_line)
    return node.pos


def validate(root: YNode | None, path: str, *, mount_root: Path | None = None) -> SpecCheck:
    """Validate a loaded spec: the model (None if invalid), all problems, all warnings.

    ``mount_root``: the folder `mount` paths are relative to; None skips the check.
    """
    v = _Validator(path, mount_root)
    if root is None:
        v.err(Pos(1, 1), "the spec is empty; it needs at least a `name`")
        return SpecCheck(None, v.problems)
    if not v.mapping(root, "the spec", TOP_KEYS, required=("name",)):
        return SpecCheck(None, v.problems)
    doc: dict[str, YNode] = root.value

    version = 1
    if "version" in doc:
        node = doc["version"]
        if node.value not in (1, 2) or isinstance(node.value, bool):
            v.err(node.pos, f"version must be 1 or 2, not {node.plain()!r}")
        else:
            version = cast(int, node.value)

    name = v.string(doc.get("name"), "name") or ""
    if "name" in doc and name and not NAME_RE.match(name):
        v.err(
            doc["name"].pos,
            f"name {name!r} may contain only letters, digits, '_', '.' and '-'",
        )
    description = v.string(doc.get("description"), "description") or ""

    on = tuple(_on_items(v, doc.get("on")))
    workspaces = tuple(_workspaces(v, doc.get("workspaces")))
    steps = tuple(_steps(v, doc.get("steps")))
    groups = tuple(_transform(v, doc.get("transformChanges")))
    imports = tuple(_imports(v, doc.get("importChangesets")))
    template = _changeset_template(v, doc.get("changesetTemplate"))
    if "changesetTemplate" not in doc and v.seq(doc.get("steps"), "steps"):
        v.err(
            root.pos,
            "the spec has steps but no changesetTemplate; add one with title, branch "
            "and commit.message",
        )

    if v.problems:
        return SpecCheck(None, v.problems, v.warnings)
    spec = BatchSpec(
        path=path,
        version=version,
        name=name,
        description=description,
        on=on,
        workspaces=workspaces,
        steps=steps,
        transform_groups=groups,
        import_changesets=imports,
        changeset_template=template,
        raw=root.plain(),
    )
    return SpecCheck(spec, [], v.warnings)


def _on_items(v: _Validator, node: YNode | None) -> Iterable[OnQuery | OnRepository]:
    for i, item in enumerate(v.seq(node, "on"), start=1):
        where = f"on[{i}]"
        if not v.mapping(
            item, where, ("repositoriesMatchingQuery", "repository", "branch", "branches")
        ):
            continue
        keys = item.value
        if "repositoriesMatchingQuery" in keys:
            extra = [k for k in keys if k != "repositoriesMatchingQuery"]
            if extra:
                v.err(
                    item.keys[extra[0]].pos,
                    f"{where}: {extra[0]!r} cannot go with repositoriesMatchingQuery",
                )
            query_node = keys["repositoriesMatchingQuery"]
            query = v.string(query_node, f"{where}.repositoriesMatchingQuery", allow_empty=False)
            if query is not None:
                _check_query(v, query_node, query, f"{where}.repositoriesMatchingQuery")
                yield OnQuery(query, item.pos)
            continue
        if "repository" not in keys:
            v.err(item.pos, f"{where} needs either repositoriesMatchingQuery or repository")
            continue
        repo = v.string(keys["repository"], f"{where}.repository", allow_empty=False)
        branches: list[str] = []
        if "branch" in keys and "branches" in keys:
            v.err(item.keys["branches"].pos, f"{where}: give branch or branches, not both")
        elif "branch" in keys:
            branch = v.string(keys["branch"], f"{where}.branch", allow_empty=False)
            branches = [branch] if branch else []
        elif "branches" in keys:
            for j, b in enumerate(v.seq(keys["branches"], f"{where}.branches"), start=1):
                text = v.string(b, f"{where}.branches[{j}]", allow_empty=False)
                if text:
                    branches.append(text)
        if repo:
            yield OnRepository(repo, tuple(branches), item.pos)


def _check_query(v: _Validator, node: YNode, text: str, where: str) -> None:
    """Parse the query as `runner run` will: a problem if malformed, a warning if unsupported."""
    try:
        parse_query(text)
    except QueryError as exc:
        pos = _offset_pos(node, text, exc.offset)
        hint = f" — {exc.hint}" if exc.hint else ""
        if exc.unsupported:
            v.warn(
                pos,
                f"{where}: {exc.message}; `runner run` and `runner env explain` will refuse "
                f"this query{hint}",
            )
        else:
            v.err(pos, f"{where}: {exc.message}{hint}")


def _workspaces(v: _Validator, node: YNode | None) -> Iterable[WorkspaceConfig]:
    for i, item in enumerate(v.seq(node, "workspaces"), start=1):
        where = f"workspaces[{i}]"
        if not v.mapping(
            item,
            where,
            ("rootAtLocationOf", "in", "onlyFetchWorkspace"),
            required=("rootAtLocationOf",),
        ):
            continue
        keys = item.value
        root = v.string(
            keys.get("rootAtLocationOf"), f"{where}.rootAtLocationOf", allow_empty=False
        )
        in_glob = v.string(keys.get("in"), f"{where}.in")
        if in_glob is not None and not v.glob(keys["in"], in_glob, f"{where}.in"):
            continue
        only = v.boolean(keys.get("onlyFetchWorkspace"), f"{where}.onlyFetchWorkspace")
        if root:
            yield WorkspaceConfig(root, in_glob, bool(only), item.pos)


def _steps(v: _Validator, node: YNode | None) -> Iterable[Step]:
    for i, item in enumerate(v.seq(node, "steps"), start=1):
        where = f"steps[{i}]"
        if not v.mapping(item, where, STEP_KEYS, required=("run", "container")):
            continue
        keys = item.value
        run = v.text(keys.get("run"), f"{where}.run", STEP_ROOTS)
        container = v.string(keys.get("container"), f"{where}.container", allow_empty=False)
        env_form, env = _env(v, keys.get("env"), where)
        files = tuple(_files(v, keys.get("files"), where))
        outputs = tuple(_outputs(v, keys.get("outputs"), where))
        mounts = tuple(_mounts(v, keys.get("mount"), where))
        if_value: bool | str | None = None
        if "if" in keys:
            if_node = keys["if"]
            if if_node.kind != "scalar" or (
                isinstance(if_node.value, int | float) and not isinstance(if_node.value, bool)
            ):
                v.err(
                    if_node.pos,
                    f"{where}.if must be a boolean, a string or null, not {_kind_name(if_node)}",
                )
            else:
                if_value = if_node.value
                if isinstance(if_value, str):
                    v.template(if_node, if_value, f"{where}.if", STEP_ROOTS)
        if run is None or container is None:
            continue
        yield Step(
            number=i,
            run=run,
            container=container,
            env=env,
            env_form=env_form,
            files=files,
            outputs=outputs,
            mounts=mounts,
            if_=if_value,
            pos=item.pos,
            definition=item.plain(),
        )


def _env(v: _Validator, node: YNode | None, where: str) -> tuple[EnvForm, tuple[EnvEntry, ...]]:
    if node is None or (node.kind == "scalar" and node.value is None):
        return "null", ()
    entries: list[EnvEntry] = []
    seen: dict[str, Pos] = {}

    def add(name: str, name_pos: Pos, value_node: YNode | None) -> None:
        if not ENV_NAME_RE.match(name):
            v.err(
                name_pos,
                f"{where}.env: {name!r} is not a valid variable name "
                "(letters, digits and _, not starting with a digit)",
            )
            return
        if name in seen:
            v.err(name_pos, f"{where}.env: {name} is set twice (first at line {seen[name].line})")
            return
        seen[name] = name_pos
        value: str | None = None
        if value_node is not None:
            value = v.text(value_node, f"{where}.env.{name}", STEP_ROOTS)
            if value is None:
                return
        entries.append(EnvEntry(name, value, name_pos))

    if node.kind == "map":
        for name, key_node, value_node in node.items():
            add(name, key_node.pos, value_node)
        return "object", tuple(entries)
    if node.kind == "seq":
        for item in node.value:
            if item.kind == "scalar" and isinstance(item.value, str):
                add(item.value, item.pos, None)
            elif item.kind == "map" and len(item.value) == 1:
                ((name, key_node, value_node),) = list(item.items())
                add(name, key_node.pos, value_node)
            elif item.kind == "map":
                v.err(
                    item.pos,
                    f"{where}.env: a list item must be a NAME or a mapping with exactly one "
                    "NAME: value",
                )
            else:
                v.err(
                    item.pos,
                    f"{where}.env: a list item must be a NAME or a mapping with exactly one "
                    f"NAME: value, not {_kind_name(item)}",
                )
        return "list", tuple(entries)
    v.err(node.pos, f"{where}.env must be a mapping, a list or null, not {_kind_name(node)}")
    return "null", ()


def _files(v: _Validator, node: YNode | None, where: str) -> Iterable[FileDef]:
    if node is None or node.value is None:
        return
    if not v.mapping(node, f"{where}.files", None):
        return
    for target, key_node, value_node in node.items():
        content = v.text(value_node, f"{where}.files[{target!r}]", STEP_ROOTS)
        if not target.startswith("/"):
            v.err(
                key_node.pos,
                f"{where}.files: the target {target!r} must be an absolute path in the container",
            )
            continue
        if "," in target:
            # Sourcegraph refuses it: src-cli would pass the target inside a `--mount` option.
            v.err(key_node.pos, f"{where}.files: the target {target!r} must not contain a comma")
            continue
        if content is not None:
            yield FileDef(target, content, key_node.pos)


def _outputs(v: _Validator, node: YNode | None, where: str) -> Iterable[OutputDef]:
    if node is None or node.value is None:
        return
    if not v.mapping(node, f"{where}.outputs", None):
        return
    for name, key_node, item in node.items():
        w = f"{where}.outputs.{name}"
        if not v.mapping(item, w, ("value", "format"), required=("value",)):
            continue
        value = v.text(item.value.get("value"), f"{w}.value", OUTPUT_ROOTS)
        fmt: OutputFormat = "text"
        if "format" in item.value:
            raw = item.value["format"].value
            if raw not in ("json", "yaml", "text"):
                v.err(
                    item.value["format"].pos, f"{w}.format must be json, yaml or text, not {raw!r}"
                )
            else:
                fmt = cast(OutputFormat, raw)
        if value is not None:
            yield OutputDef(name, value, fmt, key_node.pos)


def _mounts(v: _Validator, node: YNode | None, where: str) -> Iterable[MountDef]:
    for i, item in enumerate(v.seq(node, f"{where}.mount"), start=1):
        w = f"{where}.mount[{i}]"
        if not v.mapping(item, w, ("path", "mountpoint"), required=("path", "mountpoint")):
            continue
        path = v.string(item.value.get("path"), f"{w}.path", allow_empty=False)
        mountpoint = v.string(item.value.get("mountpoint"), f"{w}.mountpoint", allow_empty=False)
        for key, text in (("path", path), ("mountpoint", mountpoint)):
            if text and "," in text:
                v.err(item.value[key].pos, f"{w}.{key} must not contain a comma")
                text = None
        if not path or not mountpoint or "," in path + mountpoint:
            continue
        if v.mount_root is not None:
            try:
                resolve_mount(v.mount_root, path)
            except MountPathError as exc:
                v.err(item.pos, f"{w}: {exc}")
                continue
        yield MountDef(path, mountpoint, item.pos)


def _transform(v: _Validator, node: YNode | None) -> Iterable[TransformGroup]:
    if node is None or node.value is None:
        return
    if not v.mapping(node, "transformChanges", ("group",)):
        return
    for i, item in enumerate(v.seq(node.value.get("group"), "transformChanges.group"), start=1):
        w = f"transformChanges.group[{i}]"
        if not v.mapping(
            item, w, ("directory", "branch", "repository"), required=("directory", "branch")
        ):
            continue
        directory = v.string(item.value.get("directory"), f"{w}.directory", allow_empty=False)
        branch = v.string(item.value.get("branch"), f"{w}.branch", allow_empty=False)
        repo = v.string(item.value.get("repository"), f"{w}.repository")
        if directory and branch:
            yield TransformGroup(directory, branch, repo, item.pos)


def _imports(v: _Validator, node: YNode | None) -> Iterable[ImportChangeset]:
    for i, item in enumerate(v.seq(node, "importChangesets"), start=1):
        w = f"importChangesets[{i}]"
        if not v.mapping(
            item, w, ("repository", "externalIDs"), required=("repository", "externalIDs")
        ):
            continue
        repo = v.string(item.value.get("repository"), f"{w}.repository", allow_empty=False)
        ids: list[str] = []
        for j, id_node in enumerate(
            v.seq(item.value.get("externalIDs"), f"{w}.externalIDs"), start=1
        ):
            value = id_node.value
            if (
                id_node.kind != "scalar"
                or isinstance(value, bool)
                or not isinstance(value, str | int)
            ):
                v.err(id_node.pos, f"{w}.externalIDs[{j}] must be a string or a whole number")
                continue
            text = str(value)
            if text in ids:
                v.err(id_node.pos, f"{w}.externalIDs: {text!r} is listed twice")
                continue
            ids.append(text)
        if repo:
            yield ImportChangeset(repo, tuple(ids), item.pos)


def _published_value(v: _Validator, node: YNode, where: str) -> bool | Literal["draft"] | None:
    value = node.value
    if node.kind == "scalar" and (isinstance(value, bool) or value == "draft"):
        return cast("bool | Literal['draft']", value)
    v.err(node.pos, f'{where} must be true, false or "draft", not {node.plain()!r}')
    return None


def _changeset_template(v: _Validator, node: YNode | None) -> ChangesetTemplate | None:
    if node is None:
        return None
    where = "changesetTemplate"
    allowed = ("title", "body", "branch", "fork", "commit", "published")
    if not v.mapping(node, where, allowed, required=("title", "branch", "commit")):
        return None
    keys = node.value

    def text(key: str, *, required: bool) -> str | None:
        return v.text(keys.get(key), f"{where}.{key}", CHANGESET_ROOTS, allow_empty=not required)

    title = text("title", required=True)
    body = text("body", required=False) or ""
    branch = text("branch", required=True)
    fork = v.boolean(keys.get("fork"), f"{where}.fork")
    message, author_name, author_email = _commit(v, keys.get("commit"), f"{where}.commit")
    published = _published(v, keys.get("published"), f"{where}.published")
    if title is None or branch is None or message is None:
        return None
    return ChangesetTemplate(
        title=title,
        body=body,
        branch=branch,
        fork=fork,
        commit_message=message,
        author_name=author_name,
        author_email=author_email,
        published=published,
        pos=node.pos,
    )


def _commit(
    v: _Validator, node: YNode | None, where: str
) -> tuple[str | None, str | None, str | None]:
    """The commit's message, author name and author email."""
    if node is None or not v.mapping(node, where, ("message", "author"), required=("message",)):
        return None, None, None
    message = v.text(
        node.value.get("message"), f"{where}.message", CHANGESET_ROOTS, allow_empty=False
    )
    author = node.value.get("author")
    if author is None or not v.mapping(
        author, f"{where}.author", ("name", "email"), required=("name", "email")
    ):
        return message, None, None
    name = v.text(author.value.get("name"), f"{where}.author.name", CHANGESET_ROOTS)
    email = v.text(author.value.get("email"), f"{where}.author.email", CHANGESET_ROOTS)
    return message, name, email


def _published(
    v: _Validator, node: YNode | None, where: str
) -> Published | tuple[PublishedRule, ...]:
    """A single value, or the rules: each ``PATTERN[@BRANCH]: value`` with a valid glob."""
    if node is None or (node.kind == "scalar" and node.value is None):
        return None
    if node.kind != "seq":
        return _published_value(v, node, where)
    rules: list[PublishedRule] = []
    for i, item in enumerate(node.value, start=1):
        w = f"{where}[{i}]"
        if item.kind != "map" or len(item.value) != 1:
            v.err(item.pos, f"{w} must be a mapping with one PATTERN: value")
            continue
        ((pattern, key_node, value_node),) = list(item.items())
        value = _published_value(v, value_node, w)
        if v.glob(key_node, split_rule(pattern)[0], w) and value is not None:
            rules.append(PublishedRule(pattern, value))
    return tuple(rules)


def uses_runtime_values(text: str, roots: frozenset[str] = OUTPUT_ROOTS) -> bool:
    """True when a template refers to values only known while a run executes."""
    if not tmpl.has_template(text):
        return False
    try:
        parsed = tmpl.parse_template(text, roots)
    except TemplateError:
        return False
    return any(ref.path[0] in RUNTIME_ROOTS for ref in parsed.references())
