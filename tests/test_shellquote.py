"""Shell quoting of file names, and the templates' ``shellquote_join`` / ``shellquote_split``.

The quoting rules are go-shellquote's, the library Sourcegraph uses: its own
test cases are data in tests/data/shellquote_cases.json (each naming its
source), beside runner's. A real ``/bin/sh`` then checks that what ``quote``
makes parses back to the word, and the templates check where Sourcegraph
quotes: search result paths and the file lists of step results, in steps and
in changeset templates alike, never outputs or stdout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.changeset import FileChanges, build_changesets
from runner.errors import TemplateError
from runner.plan import Workspace
from runner.spec import load_spec_text, shellquote
from runner.spec.template import SearchResultPaths, render_template
from runner.testing import FakeStepRun
from tests.test_steps_unit import Harness, h, step
from tests.test_template_oracle import CASES as ORACLE_CASES
from tests.test_template_oracle import TABLE
from tests.test_template_peers import capture_scripts

__all__ = ["h"]  # a fixture, imported for this module's tests

CASES: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "shellquote_cases.json").read_text(encoding="utf-8")
)
HOSTILE = [
    "$(touch pwned).go",
    "a;touch pwned;.go",
    "`id`.go",
    "it's.go",
    "new\nline.go",
    "with space.go",
    "*.go",
    "[ab].go",
    "~root.go",
    "#comment.go",
    "$HOME.go",
    "a|b&c>d.go",
]


def ids(section: str) -> list[str]:
    return [f"{c['from'].split()[-1]}-{i}" for i, c in enumerate(CASES[section])]


def test_the_ported_cases_are_all_there() -> None:
    def ported(section: str) -> int:
        return sum(1 for c in CASES[section] if c["from"].startswith("kballard/go-shellquote"))

    # quote_test.go has 11 Join cases; unquote_test.go 12 Split and 5 error cases.
    assert (ported("join"), ported("split"), ported("split_errors")) == (11, 12, 5)


@pytest.mark.parametrize("case", CASES["join"], ids=ids("join"))
def test_join(case: dict[str, Any]) -> None:
    assert shellquote.join(case["words"]) == case["quoted"]


@pytest.mark.parametrize("case", CASES["split"], ids=ids("split"))
def test_split(case: dict[str, Any]) -> None:
    assert shellquote.split(case["text"]) == case["words"]


@pytest.mark.parametrize("case", CASES["split_errors"], ids=ids("split_errors"))
def test_split_errors(case: dict[str, Any]) -> None:
    with pytest.raises(shellquote.ShellQuoteError) as info:
        shellquote.split(case["text"])
    assert str(info.value) == case["error"]


@pytest.mark.parametrize("case", CASES["canonical"], ids=ids("canonical"))
def test_canonical(case: dict[str, Any]) -> None:
    assert shellquote.is_canonical(case["text"]) is case["canonical"]


# Any text a file name may be (raw bytes aside, which pass through unchanged).
WORDS = st.lists(st.text(st.characters(codec="utf-8")), max_size=6)


@given(WORDS)
def test_split_undoes_join(words: list[str]) -> None:
    """go-shellquote both_test.go TestJoinSplit: Join, then Split, gives the words back."""
    assert shellquote.split(shellquote.join(words)) == words
    assert all(shellquote.is_canonical(shellquote.quote(w)) for w in words)


SHELLS = [s for s in ("/bin/sh", shutil.which("bash"), shutil.which("busybox")) if s]


@pytest.mark.parametrize("shell", SHELLS)
@settings(max_examples=40, deadline=None)
@given(words=st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\0")), max_size=5))
def test_a_real_shell_reads_each_quoted_word_back(shell: str, words: list[str]) -> None:
    args = ["sh", "-c"] if shell.endswith("busybox") else ["-c"]
    script = "printf '%s\\0' " + shellquote.join(words) + " ''"
    done = subprocess.run(
        [shell, *args, script],
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )
    got = done.stdout.decode("utf-8", "surrogateescape").split("\0")[:-2]
    assert got == words


def test_hostile_names_are_each_one_word_to_a_real_shell(tmp_path: Path) -> None:
    script = "for a in " + shellquote.join(HOSTILE) + "; do printf '%s\\0' \"$a\"; done"
    done = subprocess.run(["/bin/sh", "-c", script], cwd=tmp_path, capture_output=True, check=True)
    assert done.stdout.decode().split("\0")[:-1] == HOSTILE
    assert list(tmp_path.iterdir()) == []  # nothing ran: no file was touched


# -- the template functions ----------------------------------------------------------------

CONTEXT: dict[str, Any] = {
    "outputs": {
        "list": ["a b", "c"],
        "mixed": ["x", 1],
        "nothing": None,
        "quoted": ["'a b'", "\\$x", "plain"],
        "text": "one 'two three' \"four\"",
        "bad": "it's",
    },
    "repository": {"name": "r", "branch": "main", "search_result_paths": ["b c", "a"]},
}

RENDERS = [
    ('${{ shellquote_join "a b" "c" }}', "'a b' c"),
    ("${{ shellquote_join outputs.list }}", "'a b' c"),
    ('${{ shellquote_join outputs.list "d e" }}', "'a b' c 'd e'"),
    ("${{ outputs.list | shellquote_join }}", "'a b' c"),
    ("${{ shellquote_join }}", ""),
    ('${{ shellquote_join "" }}', "''"),
    # Idempotent per element: what is already in quoted form passes unchanged.
    ("${{ shellquote_join outputs.quoted }}", "'a b' \\$x plain"),
    ('${{ shellquote_join (shellquote_join "a b" "c") }}', "\\''a b'\\'' c'"),
    ("${{ shellquote_split outputs.text }}", "[one two three four]"),
    ("${{ len (shellquote_split outputs.text) }}", "3"),
    ("${{ index (shellquote_split outputs.text) 1 }}", "two three"),
    ("${{ shellquote_join (shellquote_split outputs.text) }}", "one 'two three' four"),
    ('${{ shellquote_split "" }}', "[]"),
    ('${{ join (shellquote_split "a  b") "," }}', "a,b"),
    # search_result_paths: sorted by the raw names, then quoted; join needs nothing more.
    ("${{ repository.search_result_paths }}", "a 'b c'"),
    ('${{ join repository.search_result_paths "," }}', "a,'b c'"),
    ("${{ repository.search_result_paths.String }}", "a 'b c'"),
    ("${{ index repository.search_result_paths 1 }}", "'b c'"),
    ("${{ slice repository.search_result_paths 1 }}", "'b c'"),
    ('${{ printf "%T" (slice repository.search_result_paths 1) }}', "template.fileMatchPathList"),
    ("${{ outputs.bad }}", "it's"),
]


@pytest.mark.parametrize(("text", "want"), RENDERS, ids=[r[0] for r in RENDERS])
def test_shellquote_template_functions(text: str, want: str) -> None:
    assert render_template(text, CONTEXT) == want


REFUSED = [
    # Go's type switch in Sourcegraph's helper takes string, []string and
    # []interface{} of strings; the named list type of search_result_paths is none.
    (
        "${{ shellquote_join repository.search_result_paths }}",
        "unsupported argument type template.fileMatchPathList",
    ),
    ("${{ shellquote_join outputs.mixed }}", "element 1 is int, want string"),
    ("${{ shellquote_join outputs.nothing }}", "unsupported argument type <nil>"),
    ("${{ shellquote_join 1 }}", "unsupported argument type int"),
    ("${{ shellquote_join outputs }}", "unsupported argument type map[string]interface {}"),
    ("${{ shellquote_split outputs.bad }}", "Unterminated single-quoted string"),
    ('${{ shellquote_split "a\\\\" }}', "Unterminated backslash-escape"),
    ("${{ shellquote_split outputs.list }}", "wrong type for value; expected string"),
    ("${{ shellquote_split }}", "wrong number of args for shellquote_split"),
]


@pytest.mark.parametrize(("text", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_shellquote_template_functions_refuse(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        render_template(text, CONTEXT)
    assert message in info.value.message


# -- where Sourcegraph quotes: every file name, wherever it is rendered ---------------------


def file_lists(names: list[str]) -> dict[str, list[str]]:
    return {
        k: list(names) for k in ("modified_files", "added_files", "deleted_files", "renamed_files")
    }


@pytest.mark.parametrize("root", ["previous_step", "step", "steps"])
def test_file_lists_of_step_results_are_quoted(root: str) -> None:
    context = {root: {**file_lists(HOSTILE), "stdout": "$(not quoted)", "path": "a b"}}
    for key in ("modified_files", "added_files", "deleted_files", "renamed_files"):
        rendered = render_template(f'${{{{ join {root}.{key} " " }}}}', context)
        assert rendered == shellquote.join(HOSTILE)
        assert shellquote.split(rendered) == HOSTILE
        printed = render_template(f"${{{{ {root}.{key} }}}}", context)
        assert printed == "[" + shellquote.join(HOSTILE) + "]"
    # stdout, stderr, path and outputs stay as they are, as in Sourcegraph.
    assert render_template(f"${{{{ {root}.stdout }}}}|${{{{ {root}.path }}}}", context) == (
        "$(not quoted)|a b"
    )


def test_search_result_paths_are_quoted_however_they_are_handed_over() -> None:
    want = shellquote.join(sorted(HOSTILE, key=lambda s: s.encode()))
    for paths in (HOSTILE, tuple(HOSTILE), SearchResultPaths(HOSTILE)):
        context = {"repository": {"name": "r", "search_result_paths": paths}}
        assert render_template('${{ join repository.search_result_paths " " }}', context) == want
        assert render_template("${{ repository.search_result_paths }}", context) == want
        assert render_template('${{ join .repository.search_result_paths " " }}', context) == want


def test_quoting_happens_once_per_render() -> None:
    context = {"previous_step": file_lists(["a b"])}
    parsed = '${{ join previous_step.modified_files " " }}'
    assert render_template(parsed, context) == "'a b'"
    assert render_template(parsed, context) == "'a b'"
    assert context["previous_step"]["modified_files"] == ["a b"]  # the caller's data untouched
    assert (
        render_template("${{ shellquote_join previous_step.modified_files }}", context) == "'a b'"
    )


def test_the_step_loop_quotes_previous_step_files_even_from_the_cache(h: Harness) -> None:
    names = ["it's.go", "$(touch pwned).go", "a b.go"]

    def play(run: FakeStepRun) -> int:
        if run.step.script.strip() == "write":
            for name in names:
                run.host_path(name).write_text("x\n")
        return 0

    def steps(verb: str) -> str:
        return step("write") + step(json.dumps(verb + ' ${{ join previous_step.added_files " " }}'))

    scripts = capture_scripts(h, play)
    result, _ = h.run(steps("use"))
    assert result.status == "changed", result.error
    assert scripts[-1] == "use " + shellquote.join(sorted(names))
    # A second spec whose first step is the same takes it from the cache: its
    # file names come back raw from the entry and are quoted the same way.
    scripts = capture_scripts(h, play)
    result, _ = h.run(steps("reuse"))
    assert result.steps_cached == 1
    assert scripts == ["reuse " + shellquote.join(sorted(names))]


def test_changeset_templates_quote_file_names_too() -> None:
    spec = load_spec_text(
        "name: q\nchangesetTemplate:\n  title: t\n"
        '  body: "${{ join steps.modified_files \\" \\" }}|${{ repository.search_result_paths }}"\n'
        "  branch: b\n  commit:\n    message: m\n",
        "q.yaml",
    )
    workspace = Workspace("r", Path("/nonexistent"), "main", "0" * 40, "", False, ("x y.go",))
    [built] = build_changesets(
        spec,
        workspace,
        diff=b"diff --git a/x b/x\n",
        changes=FileChanges(modified=("it's.go",)),
        outputs={},
    )
    assert built.body["body"] == "it\\'s.go|'x y.go'"


def test_the_go_oracle_sees_no_name_that_quoting_changes() -> None:
    """The oracle's Go program does not quote, so its contexts must hold only names quoting keeps."""
    names: list[str] = []
    for context in [
        TABLE["default_context"],
        *(c["context"] for c in ORACLE_CASES if "context" in c),
    ]:
        repository = context.get("repository")
        if isinstance(repository, dict):
            names += repository.get("search_result_paths", [])
        for root in ("previous_step", "step", "steps"):
            result = context.get(root)
            if isinstance(result, dict):
                for key in ("modified_files", "added_files", "deleted_files", "renamed_files"):
                    names += result.get(key, [])
    assert names
    assert [n for n in names if shellquote.quote(n) != n] == []
