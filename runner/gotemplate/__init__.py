"""Go's text/template (1.19) in Python: lexer, parser, executor, built-in functions.

Nothing here knows of batch specs: the caller picks the delimiters, names the
functions a template may call and hands in the data. The flow is

    parse(text, names, left=, right=) -> nodes.ListNode
    execute(tree, normalize(data), {**BUILTINS, **own functions}) -> str

and every failure is a ``runner.errors.TemplateError`` with the offset of the
problem. Values follow Go's types as ``values`` describes; ``Func`` says how a
function is typed. Modules: ``lex`` → ``literals`` → ``nodes`` → ``parse``;
``values`` → ``strconv`` → ``fmt`` → ``builtins`` → ``exec``.
"""

from runner.gotemplate import nodes
from runner.gotemplate.builtins import (
    ANY,
    BUILTINS,
    STRING,
    STRINGS,
    CallError,
    Func,
    check_result_size,
)
from runner.gotemplate.exec import execute
from runner.gotemplate.parse import parse
from runner.gotemplate.values import (
    AnyList,
    StringerList,
    StrList,
    go_bytes,
    go_str,
    is_raw_byte,
    normalize,
    renorm,
    type_name,
)

__all__ = [
    "ANY",
    "BUILTINS",
    "STRING",
    "STRINGS",
    "AnyList",
    "CallError",
    "Func",
    "StrList",
    "StringerList",
    "check_result_size",
    "execute",
    "go_bytes",
    "go_str",
    "is_raw_byte",
    "nodes",
    "normalize",
    "parse",
    "renorm",
    "type_name",
]
