"""Queries checked at validation with `runner run`'s parser, and hints when nothing matches.

A malformed query (one Sourcegraph rejects) is a problem at its position; a
query Sourcegraph accepts but runner cannot evaluate is a warning from
`runner validate` and stays an error from `runner run` and `runner env
explain`. A query that matches nothing says why it may have.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.cli import run_cli
from runner.query import LocalRepository, MemoryTreeReader, QueryError, parse_query
from runner.query.hints import no_match_reasons
from runner.spec.loader import check_spec_text
from tests.helpers import TEST_IMAGE, make_repo, run_runner, runner_env

SG_PARSER = "sourcegraph internal/search/query/parser_test.go"
SG_VALIDATE = "sourcegraph internal/search/query/validate_test.go"
SG_CLIENT = "sourcegraph client/shared/src/search/query/filters.ts (discreteValues)"
SG_PARSER_GO = "sourcegraph internal/search/query/parser.go"

# (query, "error" when Sourcegraph rejects it / "warning" when only runner cannot evaluate it,
#  where Sourcegraph's behaviour comes from)
CASES: list[tuple[str, str, str]] = [
    (")(())(", "error", f"{SG_PARSER} TestParse: unsupported expression"),
    ("(a or (b and )) or d)", "error", f"{SG_PARSER} TestParse: unsupported expression"),
    ("())", "error", f"{SG_PARSER} TestParseParensKeyword: unsupported expression"),
    ("a or or b", "error", f"{SG_PARSER} TestParse: expected operand"),
    ("case:yes case:no foo", "error", f"{SG_VALIDATE}: may not be used more than once"),
    ("repo:[", "error", f"{SG_VALIDATE}: error parsing regexp"),
    ("index:foo", "error", f"{SG_VALIDATE}: invalid value for field index"),
    ("count:sedonuts", "error", f"{SG_VALIDATE}: is not a number"),
    ("count:-1", "error", f"{SG_VALIDATE}: requires a positive number"),
    ("-context:a foo", "error", f"{SG_VALIDATE}: does not support negation"),
    ("repo:foo author:rob@example.com", "error", f"{SG_VALIDATE}: requires type:commit"),
    ("type:symbol select:symbol.timelime foo", "error", f"{SG_VALIDATE}: invalid field"),
    ("patterntype:fuzzy foo", "error", f"{SG_CLIENT}: patterntype values"),
    ("repo:has.file(setup.py", "error", f"{SG_PARSER_GO} ScanPredicate: unbalanced"),
    ("repo:has.file(setup.py)", "warning", "runner: repo:has.file is not evaluated locally"),
    ("repo:has.topic(go) foo", "warning", "runner: repo:has.topic is not evaluated locally"),
    ("patterntype:structural foo(:[x])", "warning", "runner: no structural search"),
    ("context:mine foo", "warning", "runner: search contexts"),
    ("type:commit foo", "warning", "runner: commit search"),
    ("(foo bar", "warning", f"{SG_PARSER} TestParse: a dangling ( is read as a pattern"),
    ("()", "warning", f"{SG_PARSER} TestParseParensKeyword: () is a pattern"),
    ("foo OR", "warning", f"{SG_PARSER} TestParseAndOrLiteral: a trailing OR is a pattern"),
    ("foo(a, b)", "valid", f"{SG_PARSER} TestParseParensKeyword: function signatures"),
    ("patterntype:regex fo+", "valid", f"{SG_PARSER_GO} overrideSearchType: regex is regexp"),
    ("case:y fork:o foo", "valid", f"{SG_VALIDATE} parseBool and ParseYesNoOnly"),
]


def spec_text(query: str) -> str:
    quoted = json.dumps(query)  # a double-quoted YAML scalar
    return f"name: q\non:\n  - repositoriesMatchingQuery: {quoted}\n"


@pytest.mark.parametrize(("query", "kind", "source"), CASES, ids=[c[0] for c in CASES])
def test_validation_sorts_queries_as_sourcegraph_does(query: str, kind: str, source: str) -> None:
    check = check_spec_text(spec_text(query), "spec.yaml")
    found = (
        "error" if check.problems else "warning" if check.warnings else "valid",
        [p.message for p in check.problems + check.warnings],
    )
    assert found[0] == kind, (source, found)
    for problem in check.problems + check.warnings:
        assert problem.line == 3 and problem.message.startswith("on[1].repositoriesMatchingQuery: ")


def test_run_parses_what_validation_passes_and_refuses_what_it_warns_of() -> None:
    for query, kind, _ in CASES:
        if kind == "valid":
            parse_query(query)
        elif kind == "warning":
            with pytest.raises(QueryError) as info:
                parse_query(query)
            assert info.value.unsupported, query


def write_spec(tmp_path: Path, body: str) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        body
        + f"steps:\n  - run: echo hi > hi.txt\n    container: {TEST_IMAGE}\n"
        + "changesetTemplate:\n  title: t\n  branch: b\n  commit:\n    message: m\n"
    )
    return spec


def test_a_malformed_query_is_a_validation_error_at_its_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, "name: q\non:\n  - repositoriesMatchingQuery: repo:foo bar)\n")
    assert run_cli(["validate", str(spec)]) == 1
    err = capsys.readouterr().err
    # `)` is the 13th character of the query, which starts at column 32.
    assert f"{spec}:3:44: on[1].repositoriesMatchingQuery: ) at column 13 closes no" in err
    assert "error: 1 of 1 spec invalid" in err


def test_an_unsupported_query_is_a_warning_and_the_spec_stays_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(
        tmp_path,
        "name: q\non:\n  - repositoriesMatchingQuery: lang:python repo:has.file(setup.py)\n",
    )
    assert run_cli(["validate", str(spec)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"ok {spec}")
    assert (
        f"warning: {spec}:3:44: on[1].repositoriesMatchingQuery: the predicate repo:has.file(…) "
        "is not supported locally" in err
    )
    assert "`runner run` and `runner env explain` will refuse this query" in err
    assert run_cli(["validate", "--json", str(spec)]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["valid"] is True
    assert [(w["line"], w["column"]) for w in result["warnings"]] == [(3, 44)]


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    root = tmp_path / "repos"
    make_repo(root, "github.com/psf/requests", {"setup.py": "import os\n", "README.md": "x\n"})
    make_repo(root, "github.com/pallets/flask", {"src/app.py": "import os\n"})
    return root


def test_run_and_env_explain_refuse_what_validate_warns_of(tmp_path: Path, repos: Path) -> None:
    spec = write_spec(
        tmp_path, "name: q\non:\n  - repositoriesMatchingQuery: repo:has.file(setup.py)\n"
    )
    env = runner_env(tmp_path / "home")
    out = tmp_path / "out"
    for args in (
        ["run", str(spec), "--repos-root", str(repos), "--out", str(out)],
        ["env", "explain", str(spec), "--repos-root", str(repos)],
    ):
        proc = run_runner(args, env)
        assert proc.returncode == 1, proc.stderr
        first = next(line for line in proc.stderr.splitlines() if line.startswith("error: "))
        assert "on[1].repositoriesMatchingQuery: the predicate repo:has.file(…)" in first
        assert f"{spec}:3:5" in first
    assert not out.exists()  # refused while planning, before any container or result


NO_MATCH: list[tuple[str, str]] = [
    ('lang:python "import os"', 'quotes are literal in standard patterns: "import os"'),
    ("case:yes IMPORT OS", "case:yes makes every pattern case-sensitive"),
    ("repo:^github\\.com/django/ import", "repo:^github\\.com/django/ matches no repository name"),
    ("lang:rust import", "lang:rust matches no file in the 2 repositories searched"),
    ("file:pyproject\\.toml import", "file:pyproject\\.toml matches no file"),
]


@pytest.mark.parametrize(("query", "reason"), NO_MATCH, ids=[q for q, _ in NO_MATCH])
def test_a_query_that_matches_nothing_says_why_in_env_explain(
    tmp_path: Path, repos: Path, query: str, reason: str
) -> None:
    spec = write_spec(
        tmp_path, f"name: q\non:\n  - repositoriesMatchingQuery: {json.dumps(query)}\n"
    )
    proc = run_runner(
        ["env", "explain", str(spec), "--repos-root", str(repos)], runner_env(tmp_path / "home")
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("warning: "))
    assert lines[start] == (
        f"warning: {spec}:3:5: repositoriesMatchingQuery `{query}` matched no repository"
    )
    detail = " ".join(line.strip() for line in lines[start + 1 :] if line.startswith("  "))
    assert reason in detail


def test_the_repo_hint_lists_the_names_runner_knows() -> None:
    repos = [LocalRepository(f"github.com/acme/r{i}", Path("/nowhere"), "HEAD") for i in range(7)]
    (reason,) = no_match_reasons(
        parse_query("repo:^gitlab\\.com/ foo"), repos, reader=MemoryTreeReader({})
    )
    assert reason == (
        "repo:^gitlab\\.com/ matches no repository name; runner knows github.com/acme/r0, "
        "github.com/acme/r1, github.com/acme/r2, github.com/acme/r3, github.com/acme/r4 "
        "(and 2 more)"
    )


def test_a_query_that_matches_something_gives_no_warning(tmp_path: Path, repos: Path) -> None:
    spec = write_spec(
        tmp_path, "name: q\non:\n  - repositoriesMatchingQuery: 'lang:python import os'\n"
    )
    proc = run_runner(
        ["env", "explain", str(spec), "--repos-root", str(repos)], runner_env(tmp_path / "home")
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning:" not in proc.stderr


@pytest.mark.docker
@pytest.mark.usefixtures("docker_client")
def test_run_with_no_workspaces_exits_0_and_says_why(tmp_path: Path, repos: Path) -> None:
    spec = write_spec(
        tmp_path, "name: q\non:\n  - repositoriesMatchingQuery: 'lang:python \"import os\"'\n"
    )
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = runner_env(tmp_path / "home", TMPDIR=str(tmp))
    out = tmp_path / "out"
    proc = run_runner(["run", str(spec), "--repos-root", str(repos), "--out", str(out)], env)
    assert proc.returncode == 0, proc.stderr
    assert "matched no repository" in proc.stderr
    assert "quotes are literal in standard patterns" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workspaces"] == []
