"""The ``${{ }}`` template engine of batch specs: Go's text/template, as src-cli sets it up.

src-cli parses every templated field with the delimiters ``${{`` and ``}}``, the
option ``missingkey=error``, Sourcegraph's helpers (``join``, ``split``,
``replace``, ``join_if``, ``matches``) and the root names (``repository``,
``batch_change``, ``previous_step``, ``step``, ``steps``, ``outputs``) as
functions of no arguments, so ``${{ repository.name }}`` reads a key of the map
the function ``repository`` returns. This module reproduces that, checked
against Go itself by ``tests/test_template_oracle.py``.

The data ``.`` (and ``$``) is the context mapping itself, so ``.repository.name``
reads the same value as ``repository.name``.

Where this differs from Go, on purpose: nesting is bounded (50 levels of
parentheses and blocks, 100 levels of data), ``define``, ``template`` and
``block`` are refused, and ``matches`` follows what a glob says where the
library src-cli uses gets it wrong (see ``template_glob``). A context list
whose items are all strings is a ``[]string`` even when it came from a step's
JSON or YAML output, so ``join`` accepts it.

Layout: ``template_lex`` (scanner), ``template_parse`` (tree),
``template_literals`` (strings and numbers), ``template_exec`` (evaluation),
``template_funcs`` (the callable functions), ``template_fmt`` and
``template_strconv`` (Go's printing), ``template_glob`` (``matches``),
``template_values`` (the Go types as Python values).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from runner.errors import TemplateError
from runner.spec import template_parse as p
from runner.spec.template_exec import execute
from runner.spec.template_funcs import FUNCS, Func, root_func
from runner.spec.template_lex import LEFT_DELIM
from runner.spec.template_values import SearchResultPaths, StrList, normalize_context

__all__ = [
    "ParsedTemplate",
    "Reference",
    "SearchResultPaths",
    "StrList",
    "has_template",
    "parse_template",
    "render_template",
]


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
        dot = normalize_context(context)
        funcs: dict[str, Func] = dict(FUNCS)
        for name, value in dot.items():
            funcs[name] = root_func(value)
        return execute(self._tree, dot, funcs)


def has_template(text: str) -> bool:
    return LEFT_DELIM in text


def parse_template(text: str, names: Collection[str]) -> ParsedTemplate:
    """Parse ``text`` with ``names`` callable as root functions; raises TemplateError."""
    return _parse_cached(text, frozenset(names))


@functools.lru_cache(maxsize=512)
def _parse_cached(text: str, names: frozenset[str]) -> ParsedTemplate:
    try:
        tree = p.parse(text, names)
    except RecursionError:
        raise TemplateError(
            "the template nests too deeply to parse",
            hint="split the expression into smaller ones",
        ) from None
    return ParsedTemplate(text, names, tree)


def render_template(text: str, context: Mapping[str, Any]) -> str:
    """Render ``text`` with ``context``'s keys as root names; raises TemplateError."""
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
            body_root = dot_is_root and isinstance(node, p.IfNode)
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
            if node.ident in self.names:
                yield Reference((node.ident,), node.pos)
        elif isinstance(node, p.FieldNode):
            if dot_is_root:
                yield Reference(tuple(node.ident), node.pos)
        elif isinstance(node, p.VariableNode) and node.ident[0] == "$" and len(node.ident) > 1:
            yield Reference(tuple(node.ident[1:]), node.pos)

    def root_path(self, node: p.Node) -> Reference | None:
        """The path ``node`` names, if it is a root name, possibly parenthesised."""
        if isinstance(node, p.IdentifierNode) and node.ident in self.names:
            return Reference((node.ident,), node.pos)
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
