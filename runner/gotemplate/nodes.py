"""The parse tree, shaped as Go 1.19's text/template/parse nodes.

``str(node)`` is Go's ``node.String()``: the executor names the expression it
was evaluating with it in an error message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from runner.gotemplate.literals import Number

BranchKeyword = Literal["if", "range", "with"]
ControlKeyword = Literal["break", "continue", "end", "else"]


@dataclass(slots=True)
class Node:
    pos: int

    # What a node prints as when that never varies (dot, nil).
    TEXT: ClassVar[str] = ""

    def __str__(self) -> str:
        return self.TEXT


@dataclass(slots=True)
class TextNode(Node):
    text: str


class DotNode(Node):
    __slots__ = ()
    TEXT = "."


class NilNode(Node):
    __slots__ = ()
    TEXT = "nil"


@dataclass(slots=True)
class ControlNode(Node):
    """A keyword alone in an action: ``{{break}}``, ``{{continue}}``, ``{{end}}``, ``{{else}}``.

    The parser consumes ``end`` and ``else``; only the first two stay in a tree.
    """

    keyword: ControlKeyword

    def __str__(self) -> str:
        return "{{" + self.keyword + "}}"


@dataclass(slots=True)
class BoolNode(Node):
    value: bool

    def __str__(self) -> str:
        return "true" if self.value else "false"


@dataclass(slots=True)
class WrittenNode(Node):
    """A term that prints as it was written: a function name, a string or a number."""

    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(slots=True)
class IdentifierNode(WrittenNode):
    """A function name; ``text`` is the name."""


@dataclass(slots=True)
class StringNode(WrittenNode):
    value: str  # unquoted


@dataclass(slots=True)
class NumberNode(WrittenNode):
    value: Number


@dataclass(slots=True)
class VariableNode(Node):
    """``$x.a.b``: ``ident`` is ``["$x", "a", "b"]``."""

    ident: list[str]

    def __str__(self) -> str:
        return ".".join(self.ident)


@dataclass(slots=True)
class FieldNode(Node):
    """``.a.b``: ``ident`` is ``["a", "b"]``."""

    ident: list[str]

    def __str__(self) -> str:
        return "".join("." + i for i in self.ident)


@dataclass(slots=True)
class ChainNode(Node):
    """Fields read off a term that is not dot or a variable: ``(x).a.b``."""

    node: Node
    fields: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        inner = str(self.node)
        if isinstance(self.node, PipeNode):
            inner = f"({inner})"
        return inner + "".join("." + f for f in self.fields)


@dataclass(slots=True)
class CommandNode(Node):
    args: list[Node] = field(default_factory=list)

    def __str__(self) -> str:
        parts = []
        for arg in self.args:
            parts.append(f"({arg})" if isinstance(arg, PipeNode) else str(arg))
        return " ".join(parts)


@dataclass(slots=True)
class PipeNode(Node):
    is_assign: bool = False
    decl: list[VariableNode] = field(default_factory=list)
    cmds: list[CommandNode] = field(default_factory=list)

    def __str__(self) -> str:
        head = ""
        if self.decl:
            head = ", ".join(str(v) for v in self.decl) + (" = " if self.is_assign else " := ")
        return head + " | ".join(str(c) for c in self.cmds)


@dataclass(slots=True)
class ListNode(Node):
    nodes: list[Node] = field(default_factory=list)


@dataclass(slots=True)
class ActionNode(Node):
    pipe: PipeNode

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


@dataclass(slots=True)
class BranchNode(Node):
    """``if``, ``range`` or ``with``: a pipeline, a body and an optional else."""

    keyword: BranchKeyword
    pipe: PipeNode
    body: ListNode
    else_list: ListNode | None

    def __str__(self) -> str:
        return "{{" + self.keyword + " " + str(self.pipe) + "}}"
