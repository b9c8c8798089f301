"""The parser: Go 1.19's text/template/parse, token for token.

It is Go's recursive descent, so that what Go refuses is refused here too (an
unknown function, an undefined variable, ``{{break}}`` outside ``range``, a
literal after ``|``, …). Two additions: nesting is bounded (parentheses and
blocks together, see ``MAX_NESTING``), and ``define``, ``template`` and
``block`` are refused, since this engine has no named templates.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final, Literal, TypeGuard

from runner.errors import TemplateError
from runner.gotemplate.builtins import BUILTINS
from runner.gotemplate.lex import LEFT_DELIM, RIGHT_DELIM, T, Token, lex
from runner.gotemplate.literals import parse_number, unquote
from runner.gotemplate.nodes import (
    ActionNode,
    BoolNode,
    BranchKeyword,
    BranchNode,
    ChainNode,
    CommandNode,
    ControlNode,
    DotNode,
    FieldNode,
    IdentifierNode,
    ListNode,
    NilNode,
    Node,
    NumberNode,
    PipeNode,
    StringNode,
    TextNode,
    VariableNode,
)

MAX_NESTING: Final = 50


def parse(
    text: str, funcs: Collection[str], *, left: str = LEFT_DELIM, right: str = RIGHT_DELIM
) -> ListNode:
    """Parse ``text``; ``funcs`` are the names callable besides Go's built-ins.

    Raises TemplateError with the offset of the problem.
    """
    return _Parser(text, funcs, left, right).parse()


class _Parser:
    def __init__(self, text: str, funcs: Collection[str], left: str, right: str) -> None:
        self.text = text
        self.funcs = funcs
        self.hint = f"fix the {left} {right} expression; the syntax is Go's text/template"
        self.items = lex(text, left, right)
        self.index = 0
        self.token: list[Token] = [_ZERO, _ZERO, _ZERO]
        self.peek_count = 0
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.depth = 0

    # -- errors ---------------------------------------------------------------
    def errorf(self, message: str, pos: int | None = None) -> TemplateError:
        where = self.token[0].pos if pos is None else pos
        return TemplateError(message, hint=self.hint, offset=where)

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
            if _closes_block(n):
                raise self.errorf(f"unexpected {n}", n.pos)
            root.nodes.append(n)
        return root

    def unsupported(self, token: Token) -> TemplateError:
        return TemplateError(
            f"{{{{{token.val}}}}} is not supported: this engine has no named templates",
            hint="write the text out where it is needed instead of a named template",
            offset=token.pos,
        )

    def item_list(self) -> tuple[ListNode, ControlNode]:
        """Nodes up to the ``{{end}}`` or ``{{else}}`` that closes them, and that one."""
        lst = ListNode(self.peek_non_space().pos)
        while self.peek_non_space().typ != T.EOF:
            n = self.text_or_action()
            if _closes_block(n):
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
            return self.loop_control(token, "break")
        if typ == T.CONTINUE:
            return self.loop_control(token, "continue")
        if typ == T.ELSE:
            return self.else_control()
        if typ == T.END:
            return ControlNode(self.expect(T.RIGHT_DELIM, "end").pos, "end")
        branch = _BRANCHES.get(typ)
        if branch is not None:
            return self.branch_control(branch)
        self.backup()
        token = self.peek()
        return ActionNode(token.pos, self.pipeline("command", T.RIGHT_DELIM))

    def loop_control(self, token: Token, keyword: Literal["break", "continue"]) -> Node:
        node = ControlNode(token.pos, keyword)
        after = self.next_non_space()
        if after.typ != T.RIGHT_DELIM:
            raise self.unexpected(after, str(node))
        if self.range_depth == 0:
            raise self.errorf(f"{node} outside {{{{range}}}}", token.pos)
        return node

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

    def branch_control(self, keyword: BranchKeyword) -> BranchNode:
        """``if``, ``range`` or ``with``, up to its ``end``; only ``if`` takes ``else if``."""
        context = keyword
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
            if nxt.keyword == "else":
                if keyword == "if" and self.peek().typ == T.IF:
                    self.next()
                    else_list = ListNode(nxt.pos)
                    else_list.nodes.append(self.branch_control("if"))
                else:
                    else_list, end = self.item_list()
                    if end.keyword != "end":
                        raise self.errorf(f"expected end; found {end}", end.pos)
            return BranchNode(pipe.pos, keyword, pipe, lst, else_list)
        finally:
            del self.vars[mark:]
            self.depth -= 1

    def else_control(self) -> Node:
        peek = self.peek_non_space()
        if peek.typ == T.IF:
            return ControlNode(peek.pos, "else")
        token = self.expect(T.RIGHT_DELIM, "else")
        return ControlNode(token.pos, "else")

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
            if token.val not in self.funcs and token.val not in BUILTINS:
                raise TemplateError(
                    f'function "{token.val}" not defined',
                    hint="check the name against the functions and values the template may use",
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
_BRANCHES: Final[dict[T, BranchKeyword]] = {T.IF: "if", T.RANGE: "range", T.WITH: "with"}


def _closes_block(node: Node) -> TypeGuard[ControlNode]:
    return isinstance(node, ControlNode) and node.keyword in ("end", "else")


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
