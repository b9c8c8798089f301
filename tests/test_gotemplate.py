"""runner.gotemplate on its own: Go's text/template with no batch-spec set-up.

The engine's semantics are checked against Go through runner.spec.template in
test_template_oracle.py; these tests pin the engine's own API: delimiters as
parameters, functions handed in by the caller, named list types.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest

from runner import gotemplate
from runner.errors import TemplateError


def render(
    text: str,
    data: Any,
    funcs: dict[str, gotemplate.Func] | None = None,
    *,
    left: str = "{{",
    right: str = "}}",
) -> str:
    own = funcs or {}
    names: Collection[str] = own.keys()
    tree = gotemplate.parse(text, names, left=left, right=right)
    return gotemplate.execute(tree, gotemplate.normalize(data), {**gotemplate.BUILTINS, **own})


def test_go_delimiters_by_default() -> None:
    data = {"name": "x", "items": ["a", "b"]}
    assert render("{{ .name }}:{{ range .items }}[{{ . }}]{{ end }}", data) == "x:[a][b]"
    assert render("${{ .name }}", data) == "$x"


def test_delimiters_are_a_parameter() -> None:
    text = "{{ .name }} <% .name %> <%- /* c */ -%> <%printf `%q` .name%>"
    assert render(text, {"name": "x"}, left="<%", right="%>") == '{{ .name }} x"x"'


def test_functions_come_from_the_caller() -> None:
    shout = gotemplate.Func((gotemplate.STRING,), None, lambda s: s.upper() + "!")
    assert render('{{ shout "hi" }} {{ "yo" | shout }}', {}, {"shout": shout}) == "HI! YO!"
    with pytest.raises(TemplateError, match='function "shout" not defined'):
        render('{{ shout "hi" }}', {})


def test_a_function_failure_names_the_function() -> None:
    def fail(s: str) -> str:
        raise gotemplate.CallError("no good")

    fn = gotemplate.Func((gotemplate.STRING,), None, fail)
    text = 'ab{{ fail "x" }}'
    with pytest.raises(TemplateError, match="error calling fail: no good") as info:
        render(text, {}, {"fail": fn})
    assert info.value.offset == text.index("fail")


class Words(gotemplate.StringerList):
    __slots__ = ()
    go_type = "main.words"

    def __str__(self) -> str:
        return "+".join(self)


def test_a_stringer_list_prints_through_its_method() -> None:
    data = {"w": Words(["a", "b"]), "plain": ["a", "b"]}
    text = '{{ .w }} {{ .w.String }} {{ printf "%T %v" .w .w }} {{ .plain }} {{ index .w 1 }}'
    assert render(text, data) == "a+b a+b main.words a+b [a b] b"
    assert render("{{ slice .w 1 }}", data) == "b"


def test_data_is_normalised_to_go_types() -> None:
    data = {"t": ("a", 1), "big": 2**70, "raw": b"\xff", 3: "three"}
    text = '{{ printf "%T %T %q" .t .big .raw }} {{ index . "3" }}'
    assert render(text, data) == '[]interface {} float64 "\\xff" three'
