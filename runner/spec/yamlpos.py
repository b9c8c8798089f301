"""YAML loading that keeps the line and column of every node.

Why not ``yaml.safe_load``: PyYAML resolves YAML 1.1, where the key ``on:``
becomes ``True``; it silently keeps the last of duplicate keys; and it forgets
positions, which every spec error needs. Here PyYAML only composes the node
graph; resolution follows the YAML 1.2 core schema and conversion is our own,
so no tag can construct a Python object and alias expansion is budgeted (an
alias bomb is refused instead of eating memory).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from runner.errors import Problem

MAX_NODES = 200_000
MAX_DEPTH = 200
MAX_BYTES = 8 * 1024 * 1024

_TAG = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")}


class _Yaml12Resolver(BaseResolver):
    """The YAML 1.2 core schema: only true/false are booleans."""


_Yaml12Resolver.add_implicit_resolver(
    f"{_TAG}bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Yaml12Resolver.add_implicit_resolver(
    f"{_TAG}null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_Yaml12Resolver.add_implicit_resolver(
    f"{_TAG}int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_Yaml12Resolver.add_implicit_resolver(
    f"{_TAG}float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$"
    ),
    list("-+.0123456789"),
)


class _Loader(Reader, Scanner, Parser, Composer, _Yaml12Resolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Yaml12Resolver.__init__(self)
        self.nodes_composed = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        # Count while composing, so a document of a million values is refused
        # after the first MAX_NODES instead of after building all of them.
        self.nodes_composed += 1
        if self.nodes_composed > MAX_NODES:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise _TooBig(
                Pos(mark.line + 1, mark.column + 1),
                f"the document has more than {MAX_NODES} values; a batch spec needs far fewer",
            )
        return super().compose_node(parent, index)


@dataclass(frozen=True)
class Pos:
    """A 1-based line and column."""

    line: int
    column: int


@dataclass
class YNode:
    """A converted YAML value with its position.

    ``value`` is a str, int, float, bool or None for scalars, a list of YNode
    for sequences, and a dict of key → YNode for mappings (``keys`` keeps the
    key nodes, for errors about a key).
    """

    value: Any
    pos: Pos
    kind: str  # "scalar", "seq" or "map"
    style: str | None = None  # the scalar style: None (plain), "'", '"', "|", ">"
    keys: dict[str, YNode] = field(default_factory=dict)

    def plain(self) -> Any:
        """The value as plain Python data, positions dropped."""
        if self.kind == "map":
            return {k: v.plain() for k, v in self.value.items()}
        if self.kind == "seq":
            return [v.plain() for v in self.value]
        return self.value

    def items(self) -> Iterator[tuple[str, YNode, YNode]]:
        """(key, key node, value node) for a mapping."""
        for key, value in self.value.items():
            yield key, self.keys[key], value


class YamlError(Exception):
    """Loading failed; ``problems`` says where."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems[0].message if problems else "invalid YAML")
        self.problems = problems


def _pos(node: Node) -> Pos:
    mark = node.start_mark
    return Pos(mark.line + 1, mark.column + 1)


class _Converter:
    def __init__(self, path: str) -> None:
        self.path = path
        self.budget = MAX_NODES
        self.problems: list[Problem] = []

    def problem(self, pos: Pos, message: str) -> None:
        self.problems.append(Problem(self.path, pos.line, pos.column, message))

    def convert(self, node: Node, depth: int = 0) -> YNode:
        self.budget -= 1
        if self.budget < 0:
            raise _TooBig(_pos(node), "the document expands to too many values (an alias bomb?)")
        if depth > MAX_DEPTH:
            raise _TooBig(_pos(node), f"the document nests deeper than {MAX_DEPTH} levels")
        tag = node.tag
        if tag not in _ALLOWED_TAGS:
            self.problem(_pos(node), f"the tag {tag!r} is not allowed in a batch spec")
            return YNode(None, _pos(node), "scalar")
        if isinstance(node, ScalarNode):
            return YNode(self._scalar(node), _pos(node), "scalar", style=node.style)
        if isinstance(node, SequenceNode):
            return YNode([self.convert(v, depth + 1) for v in node.value], _pos(node), "seq")
        assert isinstance(node, MappingNode)
        return self._mapping(node, depth)

    def _scalar(self, node: ScalarNode) -> Any:
        text = node.value
        tag = node.tag
        if tag == f"{_TAG}null":
            return None
        if tag == f"{_TAG}bool":
            return text.lower() == "true"
        try:
            if tag == f"{_TAG}int":
                if text.startswith("0o"):
                    return int(text[2:], 8)
                return int(text, 16) if text.startswith("0x") else int(text, 10)
            if tag == f"{_TAG}float":
                lowered = text.lower().lstrip("+")
                if lowered in (".inf", "-.inf", ".nan"):
                    return float(lowered.replace(".", ""))
                return float(text)
        except ValueError:
            shown = text if len(text) <= 40 else f"{text[:20]}…{text[-10:]}"
            self.problem(_pos(node), f"{shown!r} is not a valid {tag.rsplit(':', 1)[-1]}")
            return None
        return text

    def _mapping(self, node: MappingNode, depth: int) -> YNode:
        values: dict[str, YNode] = {}
        keys: dict[str, YNode] = {}
        for key_node, value_node in self._pairs(node):
            key = self.convert(key_node, depth + 1)
            if key.kind != "scalar":
                self.problem(key.pos, "a mapping key must be a scalar")
                continue
            name = key.value if isinstance(key.value, str) else _scalar_text(key_node)
            if name in values:
                first = keys[name].pos
                self.problem(key.pos, f"duplicate key {name!r} (first at line {first.line})")
                continue
            keys[name] = YNode(name, key.pos, "scalar")
            values[name] = self.convert(value_node, depth + 1)
        return YNode(values, _pos(node), "map", keys=keys)

    def _pairs(self, node: MappingNode) -> list[tuple[Node, Node]]:
        """Pairs with ``<<`` merge keys expanded (explicit keys win)."""
        own: list[tuple[Node, Node]] = []
        merged: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == f"{_TAG}merge" or (
                isinstance(key_node, ScalarNode) and key_node.value == "<<" and not key_node.style
            ):
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        self.problem(_pos(source), "a merge key `<<` takes a mapping")
                        continue
                    self.budget -= len(source.value)
                    merged.extend(source.value)
            else:
                own.append((key_node, value_node))
        if not merged:
            return own
        names = {k.value for k, _ in own if isinstance(k, ScalarNode)}
        seen: set[str] = set()
        extra = []
        for k, v in merged:
            text = k.value if isinstance(k, ScalarNode) else None
            if text in names or text in seen:
                continue
            if text is not None:
                seen.add(text)
            extra.append((k, v))
        return own + extra


def _scalar_text(node: Node) -> str:
    return str(node.value)


class _TooBig(Exception):
    def __init__(self, pos: Pos, message: str) -> None:
        super().__init__(message)
        self.pos = pos


def _expanded_size(node: Node, memo: dict[int, int]) -> int:
    """How many values the node becomes once aliases are expanded.

    Memoised by node identity, so it costs one visit per distinct node while
    the expansion it measures may be exponential.
    """
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = MAX_NODES + 1  # a cycle counts as too big
    total = 1
    if isinstance(node, SequenceNode):
        for child in node.value:
            total += _expanded_size(child, memo)
            if total > MAX_NODES:
                break
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            total += _expanded_size(key, memo) + _expanded_size(value, memo)
            if total > MAX_NODES:
                break
    memo[id(node)] = total
    return total


def load_yaml(text: str, path: str) -> YNode | None:
    """Compose and convert one YAML document. Raises ``YamlError``.

    Returns None for an empty document.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlError([Problem(path, 1, 1, f"the file is larger than {MAX_BYTES >> 20} MiB")])
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or exc.context or "invalid YAML"
        raise YamlError([Problem(path, line, col, f"invalid YAML: {what}")]) from None
    except yaml.YAMLError as exc:
        raise YamlError([Problem(path, 1, 1, f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise YamlError(
            [Problem(path, 1, 1, "invalid YAML: the document nests too deeply")]
        ) from None
    except _TooBig as exc:
        raise YamlError([Problem(path, exc.pos.line, exc.pos.column, str(exc))]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        return None
    try:
        size = _expanded_size(node, {})
    except RecursionError:
        size = MAX_NODES + 1
    if size > MAX_NODES:
        raise YamlError(
            [
                Problem(
                    path,
                    1,
                    1,
                    f"the document expands to more than {MAX_NODES} values through aliases "
                    "(an alias bomb?); write the values out or use fewer aliases",
                )
            ]
        )
    converter = _Converter(path)
    try:
        result = converter.convert(node)
    except _TooBig as exc:
        raise YamlError([Problem(path, exc.pos.line, exc.pos.column, str(exc))]) from None
    except RecursionError:
        raise YamlError([Problem(path, 1, 1, "the document nests too deeply")]) from None
    if converter.problems:
        raise YamlError(converter.problems)
    return result
