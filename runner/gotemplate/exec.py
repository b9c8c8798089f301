"""Executing a parse tree with Go 1.19 text/template semantics.

This mirrors Go's ``exec.go``: pipelines feed the previous value as the last
argument, variables live on a stack popped at ``end``, ``range`` walks lists in
order and maps in sorted key order, and a missing map key is an error (the
option ``missingkey=error``, the only one this engine has).

Go distinguishes a nil held in an ``interface{}`` slot (a map or list element,
a function's ``interface{}`` result) from "no value" (what a pipeline turns
that nil into). Here the first is ``None`` and the second ``INVALID``; the two
differ in only a few places (a ``[]string`` parameter accepts the second as an
empty list, top-level printing shows ``<no value>``), and those are kept.

Error messages name the expression and the types involved, never a value, so
an error cannot carry a secret out of the data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from runner.errors import TemplateError
from runner.gotemplate import nodes as p
from runner.gotemplate.builtins import (
    ANY,
    MAX_RESULT_CHARS,
    REFLECT,
    STRING,
    STRINGS,
    CallError,
    Func,
    is_true,
)
from runner.gotemplate.fmt import sprint
from runner.gotemplate.values import (
    INVALID,
    StringerList,
    StrList,
    finish_output,
    go_bytes,
    type_name,
)

_EXEC_HINT: Final = "check the expression against the values available when it runs"


class _Missing:
    """Go's missingVal: no value came in from an earlier pipeline stage."""


MISSING: Final = _Missing()


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def execute(tree: p.ListNode, dot: Any, funcs: Mapping[str, Func]) -> str:
    """Render ``tree`` with the data ``dot`` (normalised, see ``values.normalize``).

    ``funcs`` are every function the template may call, Go's built-ins
    included. Raises TemplateError with the offset of the failing expression.
    """
    state = _State(funcs, dot)
    try:
        state.walk(dot, tree)
    except RecursionError:
        raise TemplateError(
            "the template or its data nests too deeply to render", hint=_EXEC_HINT
        ) from None
    return finish_output("".join(state.out))


@dataclass(slots=True)
class _Var:
    name: str
    value: Any
    iface: bool  # still held in an interface{} slot (a range element)


# Bounds on one rendering: its output, and the nodes it may visit (a range
# nested in ranges can loop billions of times while printing nothing).
MAX_OUTPUT_CHARS: Final = MAX_RESULT_CHARS
MAX_STEPS: Final = 2_000_000


class _State:
    def __init__(self, funcs: Mapping[str, Func], dot: Any) -> None:
        self.funcs = funcs
        self.out: list[str] = []
        self.size = 0
        self.steps = 0
        self.vars: list[_Var] = [_Var("$", dot, False)]
        self.node: p.Node | None = None
        self.dot_iface = False

    def error(self, message: str) -> TemplateError:
        node = self.node
        if node is None:
            return TemplateError(message, hint=_EXEC_HINT)
        return TemplateError(f"at <{node}>: {message}", hint=_EXEC_HINT, offset=node.pos)

    # -- variables ----------------------------------------------------------------
    def push(self, name: str, value: Any, iface: bool = False) -> None:
        self.vars.append(_Var(name, value, iface))

    def set_var(self, name: str, value: Any) -> None:
        for var in reversed(self.vars):
            if var.name == name:
                var.value = value
                var.iface = False
                return
        raise self.error(f"undefined variable: {name}")

    def set_top_var(self, n: int, value: Any, iface: bool) -> None:
        var = self.vars[len(self.vars) - n]
        var.value = value
        var.iface = iface

    def var_entry(self, name: str) -> _Var:
        for var in reversed(self.vars):
            if var.name == name:
                return var
        raise self.error(f"undefined variable: {name}")

    @contextmanager
    def dot_slot(self, iface: bool) -> Iterator[None]:
        saved = self.dot_iface
        self.dot_iface = iface
        try:
            yield
        finally:
            self.dot_iface = saved

    # -- walking -------------------------------------------------------------------
    def write(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT_CHARS:
            raise self.error(
                f"the template renders more than {MAX_OUTPUT_CHARS:,} characters; "
                "make it print less"
            )
        self.out.append(text)

    def walk(self, dot: Any, node: p.Node) -> None:
        self.node = node
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise self.error(
                f"the template takes more than {MAX_STEPS:,} steps to render (nested ranges?)"
            )
        if isinstance(node, p.TextNode):
            self.write(node.text)
        elif isinstance(node, p.ActionNode):
            value = self.eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.node = node
                self.write("<no value>" if value is INVALID else sprint([value]))
        elif isinstance(node, p.ListNode):
            for child in node.nodes:
                self.walk(dot, child)
        elif isinstance(node, p.BranchNode):
            if node.keyword == "range":
                self.walk_range(dot, node)
            else:
                self.walk_if_or_with(node.keyword == "with", dot, node)
        elif isinstance(node, p.ControlNode):
            raise _Break if node.keyword == "break" else _Continue
        else:
            raise self.error("unknown node")

    def walk_if_or_with(self, is_with: bool, dot: Any, node: p.BranchNode) -> None:
        mark = len(self.vars)
        try:
            value = self.eval_pipeline(dot, node.pipe)
            if is_true(value):
                if is_with:
                    with self.dot_slot(False):
                        self.walk(value, node.body)
                else:
                    self.walk(dot, node.body)
            elif node.else_list is not None:
                self.walk(dot, node.else_list)
        finally:
            del self.vars[mark:]

    def walk_range(self, dot: Any, node: p.BranchNode) -> None:
        self.node = node
        outer = len(self.vars)
        try:
            value = self.eval_pipeline(dot, node.pipe)
            mark = len(self.vars)
            ndecl = len(node.pipe.decl)

            def one(index: Any, elem: Any, iface: bool) -> None:
                if ndecl > 0:
                    self.set_top_var(1, elem, iface)
                if ndecl > 1:
                    self.set_top_var(2, index, False)
                try:
                    with self.dot_slot(iface):
                        self.walk(elem, node.body)
                except _Continue:
                    pass
                finally:
                    del self.vars[mark:]

            if isinstance(value, list):
                if value:
                    iface = not isinstance(value, StrList)
                    for i, elem in enumerate(value):
                        one(i, elem, iface)
                    return
            elif isinstance(value, dict):
                if value:
                    for key in sorted(value, key=go_bytes):
                        one(key, value[key], True)
                    return
            elif value is not INVALID:
                self.node = node
                raise self.error(f"range can't iterate over a value of type {type_name(value)}")
            if node.else_list is not None:
                self.walk(dot, node.else_list)
        except _Break:
            pass
        finally:
            del self.vars[outer:]

    # -- evaluation ------------------------------------------------------------------
    def eval_pipeline(self, dot: Any, pipe: p.PipeNode | None) -> Any:
        if pipe is None:
            return INVALID
        self.node = pipe
        value: Any = MISSING
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)
            if value is None:
                value = INVALID  # a nil interface{} becomes "no value"
        for var in pipe.decl:
            if pipe.is_assign:
                self.set_var(var.ident[0], value)
            else:
                self.push(var.ident[0], value)
        return value

    def not_a_function(self, args: Sequence[p.Node], final: Any) -> None:
        if len(args) > 1 or final is not MISSING:
            raise self.error(f"can't give argument to non-function {args[0]}")

    def eval_command(self, dot: Any, cmd: p.CommandNode, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, p.FieldNode):
            return self.eval_field_node(dot, first, cmd.args, final)
        if isinstance(first, p.ChainNode):
            return self.eval_chain_node(dot, first, cmd.args, final)
        if isinstance(first, p.IdentifierNode):
            return self.eval_function(dot, first, cmd, cmd.args, final)
        if isinstance(first, p.PipeNode):
            self.not_a_function(cmd.args, final)
            return self.eval_pipeline(dot, first)
        if isinstance(first, p.VariableNode):
            return self.eval_variable_node(dot, first, cmd.args, final)
        self.node = first
        self.not_a_function(cmd.args, final)
        if isinstance(first, p.BoolNode):
            return first.value
        if isinstance(first, p.DotNode):
            return dot
        if isinstance(first, p.NilNode):
            raise self.error("nil is not a command")
        if isinstance(first, p.NumberNode):
            return self.ideal_constant(first)
        if isinstance(first, p.StringNode):
            return first.value
        raise self.error(f"can't evaluate command {first}")

    def ideal_constant(self, n: p.NumberNode) -> Any:
        self.node = n
        text = n.text
        is_hex_int = (
            len(text) > 2
            and text[0] == "0"
            and text[1] in "xX"
            and not any(c in text for c in "pP")
        )
        num = n.value
        if num.is_complex:
            return num.complex128
        if num.is_float and not is_hex_int and text[0] != "'" and any(c in text for c in ".eEpP"):
            return num.float64
        if num.is_int:
            return num.int64
        if num.is_uint:
            raise self.error(f"{text} overflows int")
        return INVALID

    def eval_field_node(
        self, dot: Any, field: p.FieldNode, args: Sequence[p.Node], final: Any
    ) -> Any:
        self.node = field
        return self.eval_field_chain(dot, dot, field, field.ident, args, final)

    def eval_chain_node(
        self, dot: Any, chain: p.ChainNode, args: Sequence[p.Node] | None, final: Any
    ) -> Any:
        self.node = chain
        if isinstance(chain.node, p.NilNode):
            raise self.error(f"indirection through explicit nil in {chain}")
        receiver = self.eval_arg(dot, None, chain.node)
        return self.eval_field_chain(dot, receiver, chain, chain.fields, args, final)

    def eval_variable_node(
        self, dot: Any, var: p.VariableNode, args: Sequence[p.Node] | None, final: Any
    ) -> Any:
        self.node = var
        value = self.var_entry(var.ident[0]).value
        if len(var.ident) == 1:
            self.not_a_function(args or [var], final)
            return value
        return self.eval_field_chain(dot, value, var, var.ident[1:], args, final)

    def eval_field_chain(
        self,
        dot: Any,
        receiver: Any,
        node: p.Node,
        ident: Sequence[str],
        args: Sequence[p.Node] | None,
        final: Any,
    ) -> Any:
        for name in ident[:-1]:
            receiver = self.eval_field(dot, name, node, None, MISSING, receiver)
        return self.eval_field(dot, ident[-1], node, args, final, receiver)

    def eval_field(
        self,
        dot: Any,
        name: str,
        node: p.Node,
        args: Sequence[p.Node] | None,
        final: Any,
        receiver: Any,
    ) -> Any:
        if receiver is INVALID:
            raise self.error(f'nil data; no entry for key "{name}"')
        if receiver is None:
            raise self.error(f"nil pointer evaluating interface {{}}.{name}")
        if isinstance(receiver, StringerList) and name == "String":
            method = Func((), None, lambda: str(receiver))
            return self.eval_call(dot, method, node, name, args, final)
        has_args = (args is not None and len(args) > 1) or final is not MISSING
        if isinstance(receiver, dict):
            if has_args:
                raise self.error(f"{name} is not a method but has arguments")
            if name not in receiver:
                raise self.error(f'map has no entry for key "{name}"')
            return receiver[name]
        raise self.error(f"can't evaluate field {name} in type {type_name(receiver)}")

    def eval_function(
        self,
        dot: Any,
        node: p.IdentifierNode,
        cmd: p.Node,
        args: Sequence[p.Node] | None,
        final: Any,
    ) -> Any:
        self.node = node
        fn = self.funcs.get(node.text)
        if fn is None:
            raise self.error(f'"{node.text}" is not a defined function')
        return self.eval_call(dot, fn, cmd, node.text, args, final)

    def eval_call(
        self,
        dot: Any,
        fn: Func,
        node: p.Node,
        name: str,
        args: Sequence[p.Node] | None,
        final: Any,
    ) -> Any:
        arg_nodes = list(args[1:]) if args is not None else []
        num_in = len(arg_nodes) + (0 if final is MISSING else 1)
        num_fixed = len(fn.params)
        if fn.variadic is not None:
            if num_in < num_fixed:
                raise self.error(
                    f"wrong number of args for {name}: want at least {num_fixed} "
                    f"got {len(arg_nodes)}"
                )
        elif num_in != num_fixed:
            raise self.error(f"wrong number of args for {name}: want {num_fixed} got {num_in}")

        if fn.short_circuit is not None:
            value: Any = INVALID
            for arg in arg_nodes:
                value = self.eval_arg(dot, REFLECT, arg)
                if is_true(value) == fn.short_circuit:
                    return value
            if final is not MISSING:
                value = self.validate_type(final, REFLECT)
            return value

        argv: list[Any] = []
        ifaces: list[bool] = []
        for i, arg in enumerate(arg_nodes):
            typ = fn.params[i] if i < num_fixed else fn.variadic
            assert typ is not None
            argv.append(self.eval_arg(dot, typ, arg))
            if fn.wants_ifaces:
                ifaces.append(self.arg_iface(arg))
        if final is not MISSING:
            if fn.variadic is not None and num_in - 1 >= num_fixed:
                typ = fn.variadic
            else:
                typ = fn.params[num_in - 1]
            argv.append(self.validate_type(final, typ))
            ifaces.append(False)
        try:
            if fn.wants_ifaces:
                return fn.impl(*argv, ifaces=ifaces)
            return fn.impl(*argv)
        except CallError as exc:
            self.node = node
            raise self.error(f"error calling {name}: {exc}") from None

    def arg_iface(self, node: p.Node) -> bool:
        """Whether Go would pass this argument still inside an ``interface{}`` slot."""
        if isinstance(node, p.FieldNode | p.ChainNode):
            return True
        if isinstance(node, p.VariableNode):
            return len(node.ident) > 1 or self.var_entry(node.ident[0]).iface
        if isinstance(node, p.IdentifierNode):
            fn = self.funcs.get(node.text)
            return fn is not None and fn.result_in_iface
        if isinstance(node, p.DotNode):
            return self.dot_iface
        return False

    def nil_of(self, typ: str | None, problem: str) -> Any:
        """Go's zero value of ``typ`` for a nil; ``problem`` if it has none."""
        if typ is None or typ == REFLECT:
            return INVALID
        if typ == ANY:
            return None
        if typ == STRINGS:
            return StrList()
        raise self.error(problem)

    def validate_type(self, value: Any, typ: str | None) -> Any:
        if value is INVALID:
            return self.nil_of(typ, f"invalid value; expected {typ}")
        if typ is None or typ in (ANY, REFLECT):
            return value
        if typ == STRING and isinstance(value, str):
            return value
        if typ == STRINGS and isinstance(value, StrList):
            return value
        got = "interface {}" if value is None else type_name(value)
        raise self.error(f"wrong type for value; expected {typ}; got {got}")

    def eval_arg(self, dot: Any, typ: str | None, n: p.Node) -> Any:
        self.node = n
        if isinstance(n, p.DotNode):
            return self.validate_type(dot, typ)
        if isinstance(n, p.NilNode):
            return self.nil_of(typ, f"cannot assign nil to {typ}")
        if isinstance(n, p.FieldNode):
            return self.validate_type(self.eval_field_node(dot, n, [n], MISSING), typ)
        if isinstance(n, p.VariableNode):
            return self.validate_type(self.eval_variable_node(dot, n, None, MISSING), typ)
        if isinstance(n, p.PipeNode):
            return self.validate_type(self.eval_pipeline(dot, n), typ)
        if isinstance(n, p.IdentifierNode):
            return self.validate_type(self.eval_function(dot, n, n, None, MISSING), typ)
        if isinstance(n, p.ChainNode):
            return self.validate_type(self.eval_chain_node(dot, n, None, MISSING), typ)
        if typ in (None, ANY, REFLECT):
            if isinstance(n, p.BoolNode):
                return n.value
            if isinstance(n, p.NumberNode):
                return self.ideal_constant(n)
            if isinstance(n, p.StringNode):
                return n.value
            raise self.error(f"can't handle assignment of {n} to empty interface argument")
        if typ == STRING:
            if isinstance(n, p.StringNode):
                return n.value
            raise self.error(f"expected string; found {n}")
        raise self.error(f"can't handle {n} for arg of type {typ}")
