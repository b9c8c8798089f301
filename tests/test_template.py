"""The template API: references, offsets, errors, bounds.

Rendering semantics are checked against Go in test_template_oracle.py; these
tests cover what the oracle cannot: the Python API, where errors point, what
they leave out, and that no input can hang or crash the engine.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.errors import RunnerError, TemplateError
from runner.spec.template import (
    ParsedTemplate,
    Reference,
    SearchResultPaths,
    has_template,
    parse_template,
    render_template,
)

ROOTS = ("repository", "batch_change", "previous_step", "step", "steps", "outputs")

CONTEXT: dict[str, Any] = {
    "repository": {
        "name": "github.com/a/b",
        "branch": "main",
        "search_result_paths": ["z.go", "a.go"],
    },
    "batch_change": {"name": "bc", "description": "desc"},
    "previous_step": {"modified_files": ["m.go"], "stdout": "out"},
    "steps": {"modified_files": ["m.go"], "path": "p/q"},
    "outputs": {
        "token": "s3cr3t-value-123",
        "pattern": "s3cr3t-value-123[z-a]",
        "list": ["x", "y"],
        "n": 2,
        "nested": {"k": "v"},
    },
}


def refs(text: str) -> list[tuple[tuple[str, ...], int]]:
    return [(r.path, r.offset) for r in parse_template(text, ROOTS).references()]


# -- has_template, render, parse -------------------------------------------------------


def test_has_template_looks_for_the_opening_delimiter() -> None:
    assert has_template("echo ${{ repository.name }}")
    assert has_template("${{")
    assert not has_template("echo {{ repository.name }} $HOME ${HOME}")


def test_render_template_reads_roots_from_the_context() -> None:
    text = 'cd ${{ steps.path }} && echo ${{ join previous_step.modified_files " " }}'
    assert render_template(text, CONTEXT) == "cd p/q && echo m.go"


def test_a_parsed_template_renders_many_contexts() -> None:
    parsed = parse_template("${{ repository.name }}@${{ repository.branch }}", ROOTS)
    assert isinstance(parsed, ParsedTemplate)
    one = {"repository": {"name": "a", "branch": "x"}}
    two = {"repository": {"name": "b", "branch": "y"}}
    assert [parsed.render(one), parsed.render(two)] == ["a@x", "b@y"]


def test_a_root_missing_at_render_time_is_an_error() -> None:
    parsed = parse_template("${{ outputs.x }}", ROOTS)
    with pytest.raises(TemplateError, match="outputs"):
        parsed.render({"repository": {}})


def test_search_result_paths_print_space_joined_and_sorted() -> None:
    assert render_template("${{ repository.search_result_paths }}", CONTEXT) == "a.go z.go"
    explicit = {"outputs": {"paths": SearchResultPaths(["b", "a"])}, "x": ["b", "a"]}
    assert render_template("${{ outputs.paths }} ${{ x }}", explicit) == "a b [b a]"


def test_context_values_of_other_shapes_are_accepted() -> None:
    context = {"outputs": {"t": ("a", "b"), 1: "one", "big": 2**70, "flag": True}}
    out = render_template(
        '${{ join outputs.t "," }} ${{ index outputs "1" }} ${{ outputs.big }}', context
    )
    assert out == "a,b one 1.1805916207174113e+21"


def test_template_error_is_a_runner_error_with_a_hint() -> None:
    with pytest.raises(TemplateError) as info:
        render_template("${{ repository.nmae }}", CONTEXT)
    err = info.value
    assert isinstance(err, RunnerError)
    assert err.exit_code == 1
    assert err.hint
    assert 'no entry for key "nmae"' in err.message


# -- references --------------------------------------------------------------------------


def test_references_list_chains_on_root_names() -> None:
    assert refs("${{ repository.nmae }}") == [(("repository", "nmae"), 4)]
    assert refs("x ${{ outputs.a.b }}") == [(("outputs", "a", "b"), 6)]
    assert refs("${{ steps.modified_files }}") == [(("steps", "modified_files"), 4)]
    assert refs("${{ batch_change }}") == [(("batch_change",), 4)]


def test_references_look_inside_calls_pipelines_and_blocks() -> None:
    text = (
        '${{ if eq repository.name "x" }}${{ join (previous_step.modified_files) " " }}'
        '${{ else }}${{ outputs.a | printf "%s" }}${{ end }}'
    )
    assert [p for p, _ in refs(text)] == [
        ("repository", "name"),
        ("previous_step", "modified_files"),
        ("outputs", "a"),
    ]


def test_references_through_parentheses_and_index() -> None:
    assert [p for p, _ in refs("${{ (repository).name }}")] == [("repository", "name")]
    assert [p for p, _ in refs('${{ index repository "name" }}')] == [("repository",)]


def test_references_on_the_top_level_data() -> None:
    text = "${{ .repository.nmae }} ${{ $.outputs.x }}"
    assert refs(text) == [
        (("repository", "nmae"), text.index(".repository")),
        (("outputs", "x"), text.index("$.outputs")),
    ]
    # Inside with and range the dot is something else; $ is still the top.
    text = "${{ with outputs.a }}${{ .b }}${{ $.steps.path }}${{ end }}"
    assert [p for p, _ in refs(text)] == [("outputs", "a"), ("steps", "path")]
    text = "${{ range steps.modified_files }}${{ .x }}${{ else }}${{ .y }}${{ end }}"
    assert [p for p, _ in refs(text)] == [("steps", "modified_files"), ("y",)]


def test_references_come_in_text_order_with_offsets() -> None:
    text = "a\n${{ outputs.x }}\n  ${{ repository.branch }}"
    found = parse_template(text, ROOTS).references()
    assert found == [
        Reference(("outputs", "x"), text.index("outputs")),
        Reference(("repository", "branch"), text.index("repository")),
    ]


def test_variables_and_helpers_are_not_references() -> None:
    assert refs('${{ $x := "a" }}${{ $x }}${{ join (split "a b" " ") "," }}') == []


# -- errors and where they point ----------------------------------------------------------


def error_of(text: str, context: dict[str, Any] | None = None) -> TemplateError:
    """The error parsing ``text`` raises, or rendering it with ``context``."""

    def attempt() -> None:
        if context is None:
            parse_template(text, ROOTS)
        else:
            render_template(text, context)

    with pytest.raises(TemplateError) as info:
        attempt()
    return info.value


def test_unknown_function_points_at_the_name() -> None:
    text = "echo ${{ previous_stepp.stdout }}"
    err = error_of(text)
    assert err.message == 'function "previous_stepp" not defined'
    assert err.offset == text.index("previous_stepp")


def test_syntax_errors_point_into_the_text() -> None:
    text = 'line one\n${{ if eq repository.name "x" }}\n${{ $nope }}\n${{ end }}'
    err = error_of(text)
    assert "undefined variable" in err.message
    assert err.offset == text.index("$nope")

    text = "${{ repository.name"
    err = error_of(text)
    assert err.message == "unclosed action"
    assert err.offset is not None

    err = error_of("${{ if true }}never closed")
    assert err.message == "unexpected EOF"


def test_execution_errors_point_at_the_expression() -> None:
    text = "ok ${{ repository.name }} then ${{ outputs.nested.missing }}"
    err = error_of(text, CONTEXT)
    assert err.offset == text.index("outputs.nested")
    assert 'map has no entry for key "missing"' in err.message


def test_go_constructs_we_refuse_say_so() -> None:
    err = error_of('${{ define "x" }}a${{ end }}${{ template "x" }}')
    assert "not supported" in err.message
    assert err.offset == 4


@pytest.mark.parametrize(
    "text",
    [
        "${{ range outputs.token }}x${{ end }}",
        "${{ outputs.token.field }}",
        "${{ eq outputs.token 1 }}",
        "${{ lt outputs.token outputs.list }}",
        "${{ index outputs.token 99 }}",
        "${{ slice outputs.token 5 1 }}",
        "${{ len outputs.n }}${{ call outputs.token }}",
        '${{ matches outputs.token "[" }}',
        '${{ matches "x" outputs.pattern }}',
        '${{ join outputs.token "," }}',
        "${{ outputs.token | outputs.nested.k }}",
    ],
)
def test_error_messages_never_carry_values(text: str) -> None:
    err = error_of(text, CONTEXT)
    secret = CONTEXT["outputs"]["token"]
    assert secret not in str(err)
    assert "s3cr3t" not in repr(err)


# -- bounds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "${{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
        "${{ if true }}" * 3000 + "x" + "${{ end }}" * 3000,
        "${{ if false }}a" + "${{ else if false }}a" * 3000 + "${{ end }}",
        "${{ with 1 }}${{ range outputs.list }}" * 1000 + "${{ end }}${{ end }}" * 1000,
        "${{ " + "(" * 100000,
    ],
)
def test_deep_nesting_is_an_error_not_a_crash(text: str) -> None:
    start = time.monotonic()
    with pytest.raises(TemplateError, match="nests"):
        render_template(text, CONTEXT)
    assert time.monotonic() - start < 5


def test_moderate_nesting_still_works() -> None:
    text = (
        "${{ " + "(" * 40 + "1" + ")" * 40 + " }}" + "${{ if true }}" * 40 + "y" + "${{ end }}" * 40
    )
    assert render_template(text, CONTEXT) == "1y"


def test_deeply_nested_data_is_an_error_not_a_crash() -> None:
    data: Any = "leaf"
    for _ in range(5000):
        data = [data]
    with pytest.raises(TemplateError, match="nested"):
        render_template("${{ outputs }}", {"outputs": data})


def test_large_templates_parse_in_linear_time() -> None:
    chunk = 'text ${{ join previous_step.modified_files " " }} and ${{ repository.name }}\n'
    start = time.monotonic()
    parsed = parse_template(chunk * 5000, ROOTS)
    assert len(parsed.references()) == 10000
    assert time.monotonic() - start < 10


def test_glob_patterns_match_in_linear_time() -> None:
    pattern = "*a" * 60 + "b"
    subject = "a" * 3000
    start = time.monotonic()
    out = render_template(
        "${{ matches outputs.s outputs.p }}", {"outputs": {"s": subject, "p": pattern}}
    )
    assert out == "false"
    assert time.monotonic() - start < 5
    deep = "{" * 500 + "a" + "}" * 500
    with pytest.raises(TemplateError, match="nests"):
        render_template('${{ matches "a" outputs.p }}', {"outputs": {"p": deep}})


# -- anything in, only TemplateError out ---------------------------------------------------

_PIECES = [
    "${{",
    "${{- ",
    "}}",
    " -}}",
    " ",
    "\n",
    "(",
    ")",
    "|",
    ",",
    "=",
    ":=",
    "$",
    "$x",
    "$i",
    ".",
    ".a",
    ".b",
    "if",
    "else",
    "end",
    "range",
    "with",
    "break",
    "continue",
    "define",
    "template",
    "block",
    "nil",
    "true",
    "1",
    "-2",
    "0x1f",
    "1e3",
    "1.5",
    "'a'",
    "'\\n'",
    "1+2i",
    '"s"',
    '"\\x"',
    '"%d %s %v %q"',
    "`r`",
    "/*",
    "*/",
    "and",
    "or",
    "not",
    "eq",
    "lt",
    "len",
    "index",
    "slice",
    "print",
    "printf",
    "println",
    "html",
    "js",
    "urlquery",
    "call",
    "join",
    "split",
    "replace",
    "join_if",
    "matches",
    "repository",
    "outputs",
    "steps",
    ".name",
    "é",
    "{",
    "}",
    "#",
    "[",
    "*",
    "?",
]


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.lists(st.sampled_from(_PIECES), max_size=30).map("".join),
        st.text(max_size=60).map(lambda s: "${{" + s + "}}"),
    )
)
def test_arbitrary_input_only_raises_template_error(text: str) -> None:
    start = time.monotonic()
    try:
        render_template(text, CONTEXT)
    except TemplateError as err:
        assert err.message
    with contextlib.suppress(TemplateError):
        parse_template(text, ROOTS).references()
    assert time.monotonic() - start < 2


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("ab*?[]!-{},\\é"), max_size=20),
    st.text(alphabet=st.sampled_from("ab-,{}é"), max_size=30),
)
def test_arbitrary_glob_patterns_only_raise_template_error(pattern: str, subject: str) -> None:
    context = {"outputs": {"p": pattern, "s": subject}}
    try:
        out = render_template("${{ matches outputs.s outputs.p }}", context)
    except TemplateError:
        return
    assert out in ("true", "false")
