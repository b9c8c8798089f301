"""The ``${{ }}`` templates of batch specs: Go's text/template, as src-cli sets it up.

src-cli parses every templated field with the delimiters ``${{`` and ``}}``, the
option ``missingkey=error``, Sourcegraph's helpers (``join``, ``split``,
``replace``, ``join_if``, ``matches``) and the root names (``repository``,
``batch_change``, ``previous_step``, ``step``, ``steps``, ``outputs``) as
functions of no arguments, so ``${{ repository.name }}`` reads a key of the map
the function ``repository`` returns. This module is that set-up around the Go
engine in :mod:`runner.gotemplate`, checked against Go itself by
``tests/test_template_oracle.py``.

The data ``.`` (and ``$``) is the context mapping itself, so ``.repository.name``
reads the same value as ``repository.name``.

File names come from repositories, so an attacker may choose them. As
Sourcegraph does since its advisory VULN-91, every file name a template sees
is shell-quoted (:mod:`runner.spec.shellquote`): ``repository.search_result_paths``
and the ``*_files`` lists of ``previous_step``, ``step`` and ``steps``, wherever
they are rendered. The context holds the raw names; quoting happens here, once
per render. ``shellquote_join`` and ``shellquote_split`` are the helpers for
values that arrive unquoted (outputs, stdout).

Which root names a field may use is Sourcegraph's too: steps see ``step`` (an
empty result until the step ran), changeset templates see ``batch_change_link``,
which renders as written for the server to fill in when it publishes.

Where this differs from src-cli, on purpose: nesting is bounded (50 levels of
parentheses and blocks, 100 levels of data), ``define``, ``template`` and
``block`` are refused, and ``matches`` follows what a glob says where the
library src-cli uses gets it wrong (see :mod:`runner.spec.glob`). A context
list whose items are all strings is a ``[]string`` even when it came from a
step's JSON or YAML output, so ``join`` accepts it.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from runner import gotemplate
from runner.errors import TemplateError
from runner.gotemplate import (
    ANY,
    STRING,
    STRINGS,
    AnyList,
    CallError,
    Func,
    StringerList,
    StrList,
    check_result_size,
    go_bytes,
    go_str,
    is_raw_byte,
    renorm,
    type_name,
)
from runner.gotemplate import nodes as p
from runner.spec import shellquote
from runner.spec.glob import GlobError, glob_match

__all__ = [
    "BATCH_CHANGE_LINK",
    "CHANGESET_ROOTS",
    "STEP_ROOTS",
    "ParsedTemplate",
    "Reference",
    "SearchResultPaths",
    "StrList",
    "condition_holds",
    "has_template",
    "parse_template",
    "render_template",
    "trim_space",
]

LEFT_DELIM: Final = "${{"
RIGHT_DELIM: Final = "}}"

# The root names each kind of field may use, as Sourcegraph's StepContext and
# ChangesetTemplateContext define them. A step's `run`, `env`, `files`, `if`
# and `outputs` all share one set; `step` is empty until the step has run.
STEP_ROOTS: Final = frozenset(
    {"repository", "batch_change", "previous_step", "step", "steps", "outputs"}
)
CHANGESET_ROOTS: Final = frozenset(
    {"repository", "batch_change", "outputs", "steps", "batch_change_link"}
)
# What ``${{ batch_change_link }}`` renders as: itself, for the server to replace.
BATCH_CHANGE_LINK: Final = "${{ batch_change_link }}"

# The lists of file names in step results (``previous_step``, ``step``, ``steps``).
_STEP_RESULTS: Final = ("previous_step", "step", "steps")
_FILE_LISTS: Final = ("modified_files", "added_files", "deleted_files", "renamed_files")


class SearchResultPaths(StringerList):
    """src-cli's ``fileMatchPathList``: paths sorted, then shell-quoted, printed space-joined.

    Built from the raw paths; it sorts them by their bytes first, as
    Sourcegraph does, so the quoting does not change their order.
    """

    __slots__ = ()
    go_type = "template.fileMatchPathList"

    def __init__(self, paths: Iterable[str] = ()) -> None:
        super().__init__(map(shellquote.quote, sorted(paths, key=go_bytes)))

    def __str__(self) -> str:
        return " ".join(self)


# -- Sourcegraph's helpers (src-cli's lib/batches/template/templating.go) ----------


def _join(elems: list[str], sep: str) -> str:
    check_result_size(sum(map(len, elems)) + len(sep) * max(len(elems) - 1, 0))
    return renorm(sep.join(elems))


def _split(s: str, sep: str) -> StrList:
    if sep == "":
        chars = list(s)
        return StrList(
            ["\ufffd" if c == "\ufffd" or is_raw_byte(c) else c for c in chars[:-1]] + chars[-1:]
        )
    if s.isascii() and sep.isascii():
        return StrList(s.split(sep))
    return StrList(go_str(b) for b in go_bytes(s).split(go_bytes(sep)))


def _replace(s: str, old: str, new: str) -> str:
    hits = s.count(old) if old else len(s) + 1
    check_result_size(len(s) + hits * (len(new) - len(old)))
    if s.isascii() and old.isascii():
        return renorm(s.replace(old, new))
    if old == "":
        return renorm(new + "".join(c + new for c in s))
    return renorm(go_str(go_bytes(s).replace(go_bytes(old), go_bytes(new))))


def _join_if(sep: str, *elems: str) -> str:
    check_result_size(sum(map(len, elems)) + len(sep) * len(elems))
    return renorm(sep.join(e for e in elems if e != ""))


def _matches(s: str, pattern: str) -> bool:
    try:
        return glob_match(pattern, s)
    except GlobError as exc:
        raise CallError(str(exc)) from None


def _go_type(value: Any) -> str:
    """Go's ``%T`` of a value held in an ``interface{}``."""
    return "<nil>" if value is None else type_name(value)


def _quote_once(word: str) -> str:
    # Idempotent per element, as Sourcegraph's is: a word already in quoted form
    # (a file name from the context, say) passes unchanged.
    return word if shellquote.is_canonical(word) else shellquote.quote(word)


def _shellquote_join(*args: Any) -> str:
    words: list[str] = []
    for arg in args:
        # Go's type switch: a string, a []string or a []interface{} of strings;
        # a named list type (search_result_paths) is none of these.
        if isinstance(arg, str):
            words.append(_quote_once(arg))
        elif type(arg) is StrList:
            words.extend(map(_quote_once, arg))
        elif isinstance(arg, AnyList):
            for i, item in enumerate(arg):
                if not isinstance(item, str):
                    raise CallError(
                        f"shellquote_join: element {i} is {_go_type(item)}, want string"
                    )
                words.append(_quote_once(item))
        else:
            raise CallError(f"shellquote_join: unsupported argument type {_go_type(arg)}")
    check_result_size(sum(map(len, words)) + max(len(words) - 1, 0))
    return renorm(" ".join(words))


def _shellquote_split(s: str) -> StrList:
    try:
        return StrList(shellquote.split(s))
    except shellquote.ShellQuoteError as exc:
        raise CallError(str(exc)) from None


HELPERS: Final[Mapping[str, Func]] = {
    "join": Func((STRINGS, STRING), None, _join),
    "split": Func((STRING, STRING), None, _split),
    "replace": Func((STRING, STRING, STRING), None, _replace),
    "join_if": Func((STRING,), STRING, _join_if),
    "matches": Func((STRING, STRING), None, _matches),
    "shellquote_join": Func((), ANY, _shellquote_join),
    "shellquote_split": Func((STRING,), None, _shellquote_split),
}
_FUNCS: Final[Mapping[str, Func]] = {**gotemplate.BUILTINS, **HELPERS}


def _root_func(value: Any) -> Func:
    """A root name: a Go ``func() any`` returning ``value``."""
    return Func((), None, lambda: value, result_in_iface=True)


def _normalize_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """The data a render sees: Go's types, and every file name shell-quoted."""
    out: dict[str, Any] = {}
    for key, value in context.items():
        norm = gotemplate.normalize(value)
        if key == "repository" and isinstance(norm, dict):
            # src-cli hands this one list over as its own type, which prints space-joined.
            paths = norm.get("search_result_paths")
            if isinstance(paths, StrList) and not isinstance(paths, SearchResultPaths):
                norm["search_result_paths"] = SearchResultPaths(paths)
        elif key in _STEP_RESULTS and isinstance(norm, dict):
            for name in _FILE_LISTS:
                files = norm.get(name)
                if type(files) is StrList:
                    norm[name] = StrList(map(shellquote.quote, files))
        out[str(key)] = norm
    return out


# Go's unicode.IsSpace, which strings.TrimSpace uses; str.strip() would also
# take the control characters U+001C to U+001F.
_GO_SPACE: Final = "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(
    map(chr, range(0x2000, 0x200B))
)


def trim_space(text: str) -> str:
    """Go's ``strings.TrimSpace``, with which Sourcegraph trims rendered fields."""
    return text.strip(_GO_SPACE)


def condition_holds(rendered: str) -> bool:
    """A step's rendered ``if``: true only when it reads ``true``, blanks around it aside."""
    return trim_space(rendered) == "true"


# -- parsing, rendering, references ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reference:
    """A chain of names read from the template's data, and where it starts in the text.

    ``path[0]`` is a root name (``repository`` in ``repository.name``) or, for
    ``.x`` or ``$.x`` on the top-level data, the key ``x``.
    """

    path: tuple[str, ...]
    offset: int


class ParsedTemplate:
    """A template parsed once, to list its references or render it many times."""

    def __init__(self, text: str, names: frozenset[str], tree: p.ListNode) -> None:
        self.text = text
        self.names = names
        self._tree = tree

    def references(self) -> list[Reference]:
        """Every chain rooted at a root name (or the top-level data), in text order."""
        refs = list(_References(self.names).walk(self._tree, dot_is_root=True))
        return sorted(refs, key=lambda r: r.offset)

    def render(self, context: Mapping[str, Any]) -> str:
        """Execute with ``context`` (root name → value); raises TemplateError."""
        dot = _normalize_context(context)
        funcs: dict[str, Func] = dict(_FUNCS)
        for name, value in dot.items():
            funcs[name] = _root_func(value)
        return gotemplate.execute(self._tree, dot, funcs)


def has_template(text: str) -> bool:
    return LEFT_DELIM in text


def parse_template(text: str, names: Collection[str]) -> ParsedTemplate:
    """Parse ``text`` with ``names`` callable as root functions; raises TemplateError."""
    return _parse_cached(text, frozenset(names))


@functools.lru_cache(maxsize=512)
def _parse_cached(text: str, names: frozenset[str]) -> ParsedTemplate:
    try:
        tree = gotemplate.parse(text, names.union(HELPERS), left=LEFT_DELIM, right=RIGHT_DELIM)
    except RecursionError:
        raise TemplateError(
            "the template nests too deeply to parse",
            hint="split the expression into smaller ones",
        ) from None
    return ParsedTemplate(text, names, tree)


def render_template(text: str, context: Mapping[str, Any]) -> str:
    """Render ``text`` with ``context``'s keys as root names; raises TemplateError."""
    if LEFT_DELIM not in text:
        return text  # one text node renders as itself: no context to convert
    return parse_template(text, context.keys()).render(context)


class _References:
    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def walk(self, node: p.Node, *, dot_is_root: bool) -> Iterator[Reference]:
        if isinstance(node, p.ListNode):
            for child in node.nodes:
                yield from self.walk(child, dot_is_root=dot_is_root)
        elif isinstance(node, p.ActionNode):
            yield from self.expr(node.pipe, dot_is_root)
        elif isinstance(node, p.BranchNode):
            yield from self.expr(node.pipe, dot_is_root)
            # with and range move the dot; if keeps it.
            body_root = dot_is_root and node.keyword == "if"
            yield from self.walk(node.body, dot_is_root=body_root)
            if node.else_list is not None:
                yield from self.walk(node.else_list, dot_is_root=dot_is_root)

    def expr(self, node: p.Node, dot_is_root: bool) -> Iterator[Reference]:
        if isinstance(node, p.PipeNode):
            for cmd in node.cmds:
                yield from self.expr(cmd, dot_is_root)
        elif isinstance(node, p.CommandNode):
            for arg in node.args:
                yield from self.expr(arg, dot_is_root)
        elif isinstance(node, p.ChainNode):
            base = self.root_path(node.node)
            if base is not None:
                yield Reference(base.path + tuple(node.fields), base.offset)
            else:
                yield from self.expr(node.node, dot_is_root)
        elif isinstance(node, p.IdentifierNode):
            if node.text in self.names:
                yield Reference((node.text,), node.pos)
        elif isinstance(node, p.FieldNode):
            if dot_is_root:
                yield Reference(tuple(node.ident), node.pos)
        elif isinstance(node, p.VariableNode) and node.ident[0] == "$" and len(node.ident) > 1:
            yield Reference(tuple(node.ident[1:]), node.pos)

    def root_path(self, node: p.Node) -> Reference | None:
        """The path ``node`` names, if it is a root name, possibly parenthesised."""
        if isinstance(node, p.IdentifierNode) and node.text in self.names:
            return Reference((node.text,), node.pos)
        if isinstance(node, p.PipeNode) and len(node.cmds) == 1 and not node.decl:
            args = node.cmds[0].args
            if len(args) == 1:
                inner = args[0]
                if isinstance(inner, p.ChainNode):
                    base = self.root_path(inner.node)
                    if base is not None:
                        return Reference(base.path + tuple(inner.fields), base.offset)
                return self.root_path(inner)
        return None
