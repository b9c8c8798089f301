"""Parse trees for ``${{ }}`` templates, built as Go 1.19's text/template/parse does.

The parser is Go's recursive descent, token for token, so that what Go refuses
is refused here too (an unknown function, an undefined variable, ``{{break}}``
outside ``range``, a literal after ``|``, …). Two additions: nesting is bounded
(parentheses and blocks together, see ``MAX_NESTING``), and ``define``,
``template`` and ``block`` are refused, since a batch spec has nowhere to use them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Final

from runner.errors import TemplateError
from runner.spec.template_lex import T, Token, lex
from runner.spec.template_literals import Number, parse_number, unquote

MAX_NESTING: Final = 50

BUILTIN_FUNCS: Final = frozenset(
    {
        "and",
        "call",
        "html",
        "index",
        "slice",
        "js",
        "len",
        "not",
        "or",
        "print",
        "printf",
        "println",
        "urlquery",
        "eq",
        "ge",
        "gt",
        "le",
        "lt",
        "ne",
    }
)
HELPER_FUNCS: Final = frozenset({"join", "split", "replace", "join_if", "matches"})

_PARSE_HINT: Final = "fix the ${{ }} expression; the syntax is Go's text/template"


# -- nodes -----------------------------------------------------------------


@dataclass(slots=True)
class Node:
    pos: int

    def __str__(self) -> str:
        return ""


@dataclass(slots=True)
class TextNode(Node):
    text: str


@dataclass(slots=True)
class DotNode(Node):
    def __str__(self) -> str:
        return "."


@dataclass(slots=True)
class NilNode(Node):
    def __str__(self) -> str:
        return "nil"


@dataclass(slots=True)
class BoolNode(Node):
    value: bool

    def __str__(self) -> str:
        return "true" if self.value else "false"


@dataclass(slots=True)
class StringNode(Node):
    quoted: str
    text: str

    def __str__(self) -> str:
        return self.quoted


@dataclass(slots=True)
class NumberNode(Node):
    text: str
    value: Number

    def __str__(self) -> str:
        return self.text


@dataclass(slots=True)
class IdentifierNode(Node):
    ident: str

    def __str__(self) -> str:
        return self.ident


@dataclass(slots=True)
class VariableNode(Node):
    ident: list[str]

    def __str__(self) -> str:
        return ".".join(self.ident)


@dataclass(slots=True)
class FieldNode(Node):
    ident: list[str]

    def __str__(self) -> str:
        return "".join("." + i for i in self.ident)


@dataclass(slots=True)
class ChainNode(Node):
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
    pipe: PipeNode
    body: ListNode
    else_list: ListNode | None


@dataclass(slots=True)
class IfNode(BranchNode):
    def __str__(self) -> str:
        return "{{if " + str(self.pipe) + "}}"


@dataclass(slots=True)
class RangeNode(BranchNode):
    def __str__(self) -> str:
        return "{{range " + str(self.pipe) + "}}"


@dataclass(slots=True)
class WithNode(BranchNode):
    def __str__(self) -> str:
        return "{{with " + str(self.pipe) + "}}"


@dataclass(slots=True)
class BreakNode(Node):
    def __str__(self) -> str:
        return "{{break}}"


@dataclass(slots=True)
class ContinueNode(Node):
    def __str__(self) -> str:
        return "{{continue}}"


@dataclass(slots=True)
class _EndNode(Node):
    def __str__(self) -> str:
        return "{{end}}"


@dataclass(slots=True)
class _ElseNode(Node):
    def __str__(self) -> str:
        return "{{else}}"


# -- the parser --------------------------------------------------------------


def parse(text: str, funcs: Collection[str]) -> ListNode:
    """Parse ``text``; ``funcs`` are the names callable besides the built-ins."""
    return _Parser(text, funcs).parse()


class _Parser:
    def __init__(self, text: str, funcs: Collection[str]) -> None:
        self.text = text
        self.funcs = funcs
        self.items = lex(text)
        self.index = 0
        self.token: list[Token] = [_ZERO, _ZERO, _ZERO]
        self.peek_count = 0
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.depth = 0

    # -- errors ---------------------------------------------------------------
    def errorf(self, message: str, pos: int | None = None) -> TemplateError:
        where = self.token[0].pos if pos is None else pos
        return TemplateError(message, hint=_PARSE_HINT, offset=where)

    def unexpected(self, token: Token, context: str) -> TemplateError:
        if token.typ == T.ERROR:
            return self.errorf(token.val, token.pos)
        return self.errorf(f"unexpected {token.describe()} in {context}", token.pos)

    def nest(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.errorf(f"the template nests more than {MAX_NESTING} levels deep", pos)

    # -- tokens -----------------------------------------------------------
    def _lex_next(self) -> Token:
        if self.index < len(self.items):
            item = self.items[self.index]
            self.index += 1
            return item
        return _ZERO  # Go reads a closed channel's zero item

    def next(self) -> Token:
        if self.peek_count > 0:
            self.peek_count -= 1
        else:
            self.token[0] = self._lex_next()
        return self.token[self.peek_count]

    def backup(self) -> None:
        self.peek_count += 1

    def backup2(self, t1: Token) -> None:
        self.token[1] = t1
        self.peek_count = 2

    def backup3(self, t2: Token, t1: Token) -> None:
        self.token[1] = t1
        self.token[2] = t2
        self.peek_count = 3

    def peek(self) -> Token:
        if self.peek_count > 0:
            return self.token[self.peek_count - 1]
        self.peek_count = 1
        self.token[0] = self._lex_next()
        return self.token[0]

    def next_non_space(self) -> Token:
        while True:
            token = self.next()
            if token.typ != T.SPACE:
                return token

    def peek_non_space(self) -> Token:
        token = self.next_non_space()
        self.backup()
        return token

    def expect(self, expected: T, context: str) -> Token:
        token = self.next_non_space()
        if token.typ != expected:
            raise self.unexpected(token, context)
        return token

    # -- grammar --------------------------------------------------------------
    def parse(self) -> ListNode:
        root = ListNode(self.peek().pos)
        while self.peek().typ != T.EOF:
            if self.peek().typ == T.LEFT_DELIM:
                delim = self.next()
                token = self.next_non_space()
                if token.typ == T.DEFINE:
                    raise self.unsupported(token)
                self.backup2(delim)
            n = self.text_or_action()
            if isinstance(n, _EndNode | _ElseNode):
                raise self.errorf(f"unexpected {n}", n.pos)
            root.nodes.append(n)
        return root

    def unsupported(self, token: Token) -> TemplateError:
        return TemplateError(
            f"{{{{{token.val}}}}} is not supported in batch spec templates",
            hint="write the text out where it is needed instead of a named template",
            offset=token.pos,
        )

    def item_list(self) -> tuple[ListNode, Node]:
        lst = ListNode(self.peek_non_space().pos)
        while self.peek_non_space().typ != T.EOF:
            n = self.text_or_action()
            if isinstance(n, _EndNode | _ElseNode):
                return lst, n
            lst.nodes.append(n)
        raise self.errorf("unexpected EOF", len(self.text))

    def text_or_action(self) -> Node:
        token = self.next_non_space()
        if token.typ == T.TEXT:
            return TextNode(token.pos, token.val)
        if token.typ == T.LEFT_DELIM:
            return self.action()
        raise self.unexpected(token, "input")

    def action(self) -> Node:
        token = self.next_non_space()
        typ = token.typ
        if typ in (T.BLOCK, T.TEMPLATE):
            raise self.unsupported(token)
        if typ == T.BREAK:
            return self.loop_control(token, BreakNode, "{{break}}")
        if typ == T.CONTINUE:
            return self.loop_control(token, ContinueNode, "{{continue}}")
        if typ == T.ELSE:
            return self.else_control()
        if typ == T.END:
            return _EndNode(self.expect(T.RIGHT_DELIM, "end").pos)
        if typ == T.IF:
            return self.if_control()
        if typ == T.RANGE:
            return self.range_control()
        if typ == T.WITH:
            return self.with_control()
        self.backup()
        token = self.peek()
        return ActionNode(token.pos, self.pipeline("command", T.RIGHT_DELIM))

    def loop_control(
        self, keyword: Token, kind: type[BreakNode] | type[ContinueNode], context: str
    ) -> Node:
        token = self.next_non_space()
        if token.typ != T.RIGHT_DELIM:
            raise self.unexpected(token, context)
        if self.range_depth == 0:
            raise self.errorf(f"{context} outside {{{{range}}}}", keyword.pos)
        return kind(keyword.pos)

    def pipeline(self, context: str, end: T) -> PipeNode:
        token = self.peek_non_space()
        pipe = PipeNode(token.pos)
        while True:  # declarations
            v = self.peek_non_space()
            if v.typ != T.VARIABLE:
                break
            self.next()
            token_after = self.peek()
            nxt = self.peek_non_space()
            if nxt.typ in (T.ASSIGN, T.DECLARE):
                pipe.is_assign = nxt.typ == T.ASSIGN
                self.next_non_space()
                pipe.decl.append(VariableNode(v.pos, v.val.split(".")))
                self.vars.append(v.val)
            elif nxt.typ == T.CHAR and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(VariableNode(v.pos, v.val.split(".")))
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().typ in (T.VARIABLE, T.RIGHT_DELIM, T.RIGHT_PAREN):
                        continue
                    raise self.errorf("range can only initialize variables", nxt.pos)
                raise self.errorf(f"too many declarations in {context}", nxt.pos)
            elif token_after.typ == T.SPACE:
                self.backup3(v, token_after)
            else:
                self.backup2(v)
            break
        while True:
            token = self.next_non_space()
            if token.typ == end:
                self.check_pipeline(pipe, context, token)
                return pipe
            if token.typ in _OPERAND_START:
                self.backup()
                pipe.cmds.append(self.command())
            else:
                raise self.unexpected(token, context)

    def check_pipeline(self, pipe: PipeNode, context: str, end: Token) -> None:
        if not pipe.cmds:
            raise self.errorf(f"missing value for {context}", end.pos)
        for i, cmd in enumerate(pipe.cmds[1:]):
            if isinstance(cmd.args[0], BoolNode | DotNode | NilNode | NumberNode | StringNode):
                raise self.errorf(f"non executable command in pipeline stage {i + 2}", cmd.pos)

    def parse_control(
        self, allow_else_if: bool, context: str
    ) -> tuple[int, PipeNode, ListNode, ListNode | None]:
        mark = len(self.vars)
        start = self.token[0].pos
        self.nest(start)
        try:
            pipe = self.pipeline(context, T.RIGHT_DELIM)
            if context == "range":
                self.range_depth += 1
            lst, nxt = self.item_list()
            if context == "range":
                self.range_depth -= 1
            else_list: ListNode | None = None
            if isinstance(nxt, _ElseNode):
                if allow_else_if and self.peek().typ == T.IF:
                    self.next()
                    else_list = ListNode(nxt.pos)
                    else_list.nodes.append(self.if_control())
                else:
                    else_list, end = self.item_list()
                    if not isinstance(end, _EndNode):
                        raise self.errorf(f"expected end; found {end}", end.pos)
            return pipe.pos, pipe, lst, else_list
        finally:
            del self.vars[mark:]
            self.depth -= 1

    def if_control(self) -> Node:
        pos, pipe, lst, else_list = self.parse_control(True, "if")
        return IfNode(pos, pipe, lst, else_list)

    def range_control(self) -> Node:
        pos, pipe, lst, else_list = self.parse_control(False, "range")
        return RangeNode(pos, pipe, lst, else_list)

    def with_control(self) -> Node:
        pos, pipe, lst, else_list = self.parse_control(False, "with")
        return WithNode(pos, pipe, lst, else_list)

    def else_control(self) -> Node:
        peek = self.peek_non_space()
        if peek.typ == T.IF:
            return _ElseNode(peek.pos)
        token = self.expect(T.RIGHT_DELIM, "else")
        return _ElseNode(token.pos)

    def command(self) -> CommandNode:
        cmd = CommandNode(self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            token = self.next()
            if token.typ == T.SPACE:
                continue
            if token.typ in (T.RIGHT_DELIM, T.RIGHT_PAREN):
                self.backup()
            elif token.typ != T.PIPE:
                raise self.unexpected(token, "operand")
            break
        if not cmd.args:
            raise self.errorf("empty command", cmd.pos)
        return cmd

    def operand(self) -> Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().typ == T.FIELD:
            chain = ChainNode(self.peek().pos, node)
            while self.peek().typ == T.FIELD:
                chain.fields.append(self.next().val[1:])
            if isinstance(node, FieldNode):
                return FieldNode(node.pos, node.ident + chain.fields)
            if isinstance(node, VariableNode):
                return VariableNode(node.pos, node.ident + chain.fields)
            if isinstance(node, BoolNode | StringNode | NumberNode | NilNode | DotNode):
                raise self.errorf(f"unexpected . after term {str(node)!r}", chain.pos)
            return chain
        return node

    def term(self) -> Node | None:
        token = self.next_non_space()
        typ = token.typ
        if typ == T.IDENTIFIER:
            if (
                token.val not in self.funcs
                and token.val not in BUILTIN_FUNCS
                and token.val not in HELPER_FUNCS
            ):
                raise TemplateError(
                    f'function "{token.val}" not defined',
                    hint="check the name; see the variables the batch spec reference lists",
                    offset=token.pos,
                )
            return IdentifierNode(token.pos, token.val)
        if typ == T.DOT:
            return DotNode(token.pos)
        if typ == T.NIL:
            return NilNode(token.pos)
        if typ == T.VARIABLE:
            return self.use_var(token)
        if typ == T.FIELD:
            return FieldNode(token.pos, token.val[1:].split("."))
        if typ == T.BOOL:
            return BoolNode(token.pos, token.val == "true")
        if typ in (T.CHAR_CONSTANT, T.COMPLEX, T.NUMBER):
            return self.number(token)
        if typ == T.LEFT_PAREN:
            self.nest(token.pos)
            try:
                return self.pipeline("parenthesized pipeline", T.RIGHT_PAREN)
            finally:
                self.depth -= 1
        if typ in (T.STRING, T.RAW_STRING):
            value = unquote(token.val)
            if value is None:
                raise self.errorf("invalid syntax", token.pos)
            return StringNode(token.pos, token.val, value)
        self.backup()
        return None

    def use_var(self, token: Token) -> VariableNode:
        v = VariableNode(token.pos, token.val.split("."))
        if v.ident[0] not in self.vars:
            raise self.errorf(f'undefined variable "{v.ident[0]}"', token.pos)
        return v

    def number(self, token: Token) -> NumberNode:
        try:
            value = parse_number(token.val, token.typ)
        except ValueError as exc:
            raise self.errorf(str(exc), token.pos) from None
        return NumberNode(token.pos, token.val, value)


_ZERO: Final = Token(T.ERROR, 0, "")
_OPERAND_START: Final = frozenset(
    {
        T.BOOL,
        T.CHAR_CONSTANT,
        T.COMPLEX,
        T.DOT,
        T.FIELD,
        T.IDENTIFIER,
        T.NUMBER,
        T.NIL,
        T.RAW_STRING,
        T.STRING,
        T.VARIABLE,
        T.LEFT_PAREN,
    }
)
