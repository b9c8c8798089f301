"""repositoriesMatchingQuery evaluated locally: one table row per filter and operator."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.errors import RepositoryNotFoundError
from runner.query import (
    LocalRepository,
    MemoryTreeReader,
    QueryError,
    evaluate_query,
    parse_query,
    unsupported_reason,
)

GIT_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


def git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in GIT_ENV_KEYS}
    env.update(
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="Test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )
    return env


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        env=git_env(),
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip()


def commit_files(repo: Path, files: Mapping[str, bytes | str], message: str = "files") -> str:
    """Write ``files`` into ``repo`` (creating it), commit them, return the commit sha."""
    if not (repo / ".git").exists():
        repo.mkdir(parents=True, exist_ok=True)
        git(repo, "init", "-q", "-b", "main")
    for name, data in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


ALPHA = "github.com/acme/alpha"
BETA = "github.com/acme/beta"
GAMMA = "gitlab.com/other/gamma"

FILES: dict[str, dict[str, bytes | str]] = {
    ALPHA: {
        "README.md": "# Alpha\nwhitelist the hosts\n",
        "main.go": 'package main\n\nfunc main() { fmt.Println("Hello") }\n',
        "vendor/lib.go": "package lib\n// whitelist\n",
        "Dockerfile": "FROM golang:latest\n",
        "src/app.py": "print('hello')\nCamelCase = 1\n",
        "routes.txt": "GET /hello/ ok\n",
    },
    BETA: {
        "index.php": "<?php echo 'x';\n",
        "composer.json": '{"require-dev": {"phpstan/phpstan": "^1"}}\n',
        "docs/guide.md": "blacklist entries\n",
        "image.png": b"\x89PNG\x00\x00whitelist\x00",
    },
    GAMMA: {
        "index.php": "<?php\n",
        "package.json": '{"dependencies": {"bootstrap": "^4.1.0"}}\n',
        "main.tf": 'resource "aws_vpc" "main" {}\n',
        "config.yaml": "entrypoint: /bin/sh\n",
        "Src/Upper.TS": "const foo = 'bar';\n",
        "notes.txt": 'say "foo OR bar" here\n',
    },
}


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> list[LocalRepository]:
    root = tmp_path_factory.mktemp("repos")
    out = []
    for name, files in FILES.items():
        path = root / name
        sha = commit_files(path, files)
        out.append(LocalRepository(name=name, path=path, revision=sha))
    return out


WHOLE = "whole repository"
Expected = dict[str, str | list[str]]

# (row id, query, {repository: paths, or WHOLE when selected as a whole})
TABLE: list[tuple[str, str, Expected]] = [
    ("repo:", "repo:acme", {ALPHA: WHOLE, BETA: WHOLE}),
    ("-repo:", "-repo:alpha", {BETA: WHOLE, GAMMA: WHOLE}),
    ("r:", r"r:^gitlab\.com/", {GAMMA: WHOLE}),
    ("-r:", "whitelist -r:alpha", {}),
    ("repo:has.path()", r"repo:has.path(\.php$)", {BETA: WHOLE, GAMMA: WHOLE}),
    ("-repo:has.path()", r"-repo:has.path(\.php$)", {ALPHA: WHOLE}),
    ("repo:has.content()", "repo:has.content(phpstan/phpstan)", {BETA: WHOLE}),
    (
        "-repo:has.content()",
        r"repo:has.path(.*\.php$) -repo:has.content(phpstan/phpstan)",
        {GAMMA: WHOLE},
    ),
    ("file:", r"file:\.md$", {ALPHA: ["README.md"], BETA: ["docs/guide.md"]}),
    ("-file:", "whitelist -file:vendor", {ALPHA: ["README.md"]}),
    ("f:", "f:package.json bootstrap", {GAMMA: ["package.json"]}),
    ("path: (case-insensitive)", "path:^src/", {ALPHA: ["src/app.py"], GAMMA: ["Src/Upper.TS"]}),
    ("lang:", "lang:go package", {ALPHA: ["main.go", "vendor/lib.go"]}),
    ("l: (any case)", "l:HCL aws_vpc", {GAMMA: ["main.tf"]}),
    ("lang: by file name", "lang:dockerfile golang", {ALPHA: ["Dockerfile"]}),
    ("-lang:", "-lang:go whitelist", {ALPHA: ["README.md"]}),
    ("count:", r"count:2 file:\.php$|\.md$", {ALPHA: ["README.md"], BETA: ["docs/guide.md"]}),
    ("count:all", "count:all <?php", {BETA: ["index.php"], GAMMA: ["index.php"]}),
    ("case: default is insensitive", "camelcase", {ALPHA: ["src/app.py"]}),
    ("case:yes", "camelcase case:yes", {}),
    ("case:yes matches exact case", "CamelCase case:yes", {ALPHA: ["src/app.py"]}),
    ("case:yes on paths", "path:^src/ case:yes", {ALPHA: ["src/app.py"]}),
    ("case:no", "camelcase case:no", {ALPHA: ["src/app.py"]}),
    ("case:true", "camelcase case:true", {}),
    ("case:false", "camelcase case:false", {ALPHA: ["src/app.py"]}),
    (
        "patterntype:standard joins words",
        "patterntype:standard whitelist the",
        {ALPHA: ["README.md"]},
    ),
    ("patterntype:standard word order", "hosts whitelist", {}),
    (
        "patterntype:keyword ANDs words",
        "patterntype:keyword hosts whitelist",
        {ALPHA: ["README.md"]},
    ),
    (
        "patterntype:keyword file names",
        "patterntype:keyword guide blacklist",
        {BETA: ["docs/guide.md"]},
    ),
    ("patterntype:literal", "patterntype:literal /hello/", {ALPHA: ["routes.txt"]}),
    ("patterntype:regexp", r"patterntype:regexp ^FROM \w+:latest$", {ALPHA: ["Dockerfile"]}),
    ("/regexp/ in standard", r"/fmt\.Print(ln)?/", {ALPHA: ["main.go"]}),
    ("fork:yes", "fork:yes repo:alpha", {ALPHA: WHOLE}),
    ("fork:only", "fork:only repo:alpha", {}),
    ("archived:no", "archived:no repo:beta", {BETA: WHOLE}),
    ("archived:only", "archived:only repo:beta", {}),
    ('"quoted" in standard keeps quotes', '"foo OR bar"', {GAMMA: ["notes.txt"]}),
    ('"quoted" in keyword is a phrase', 'patterntype:keyword "foo OR bar"', {GAMMA: ["notes.txt"]}),
    ('"quoted" in regexp is literal', 'patterntype:regexp "fmt.Println("', {ALPHA: ["main.go"]}),
    ("content:", 'content:"foo OR bar"', {GAMMA: ["notes.txt"]}),
    ("-content:", "lang:go -content:whitelist", {ALPHA: ["main.go"]}),
    ("AND", "whitelist AND hosts", {ALPHA: ["README.md"]}),
    ("and (lowercase)", "whitelist and hosts", {ALPHA: ["README.md"]}),
    ("OR", "whitelist OR blacklist -file:vendor", {ALPHA: ["README.md"], BETA: ["docs/guide.md"]}),
    ("NOT", "lang:go NOT whitelist", {ALPHA: ["main.go"]}),
    ("not (lowercase)", r"file:\.go$ package not whitelist", {ALPHA: ["main.go"]}),
    (
        "parentheses",
        "(repo:alpha whitelist) or (repo:beta blacklist)",
        {ALPHA: ["README.md", "vendor/lib.go"], BETA: ["docs/guide.md"]},
    ),
    (
        "OR between filtered groups",
        "repo:alpha whitelist or repo:beta blacklist",
        {ALPHA: ["README.md", "vendor/lib.go"], BETA: ["docs/guide.md"]},
    ),
    (
        "field names in any case",
        r"patternType:regexp REPO:beta FILE:composer\.json$ phpstan/php.tan",
        {BETA: ["composer.json"]},
    ),
    ("unknown word: is text", "entrypoint:", {GAMMA: ["config.yaml"]}),
    ("select:repo", "select:repo whitelist", {ALPHA: WHOLE}),
    ("type:path", "type:path guide", {BETA: ["docs/guide.md"]}),
    ("file:has.content()", "file:has.content(aws_vpc)", {GAMMA: ["main.tf"]}),
    ("binary files are skipped", "whitelist", {ALPHA: ["README.md", "vendor/lib.go"]}),
]


@pytest.mark.parametrize(("query", "expected"), [r[1:] for r in TABLE], ids=[r[0] for r in TABLE])
def test_query_table(repos: list[LocalRepository], query: str, expected: Expected) -> None:
    matches = evaluate_query(parse_query(query), repos)
    got: Expected = {m.repository.name: list(m.search_result_paths) or WHOLE for m in matches}
    assert got == expected
    assert unsupported_reason(query) is None


# (row id, query, what the refusal must name)
REFUSED: list[tuple[str, str, str]] = [
    ("structural", "foo(:[x]) patterntype:structural", "patterntype:structural"),
    ("structural, any case", "lang:go x patternType:Structural", "patterntype:structural"),
    ("unknown predicate", "repo:has.topic(go)", "repo:has.topic"),
    ("unknown file predicate", "file:has.owner(alice) foo", "file:has.owner"),
    ("unsupported filter", "repo:alpha rev:v1 foo", "rev:"),
    ("revision in repo:", "repo:alpha@v1 foo", "repo:…@revision"),
    ("select:symbol", "select:symbol foo", "select:symbol"),
    ("type:commit", "type:commit foo", "type:commit"),
    ("search context", "context:mine foo", "context:mine"),
    ("unknown language", "lang:klingon foo", "lang:klingon"),
    ("unknown pattern type", "patterntype:fuzzy foo", "patterntype:fuzzy"),
    ("bad count", "count:0 foo", "count:0"),
    ("bad case", "case:maybe foo", "case:maybe"),
    ("negated option", "-case:yes foo", "-case:yes"),
    ("invalid regexp", "file:( foo", "file:("),
    ("unclosed group", "(foo bar", "("),
    ("unclosed group at the end", "foo (", "("),
    ("dangling OR", "foo OR", "OR"),
    ("leading AND", "AND foo", "AND"),
    ("NOT before a filtered group", "NOT (repo:a foo)", "NOT (…)"),
    ("conflicting options", "case:yes case:no foo", "case:"),
    ("empty query", "count:10", ""),
]


@pytest.mark.parametrize(("query", "what"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused_queries_name_what(query: str, what: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_query(query)
    assert what in str(info.value)
    if what:
        assert info.value.what == what
    assert info.value.hint  # every refusal says what to do next
    assert unsupported_reason(query) == info.value.message


def test_search_happens_at_the_given_revision(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    old = commit_files(repo, {"a.txt": "old words\n"})
    new = commit_files(repo, {"a.txt": "new words\n", "b.txt": "old words\n"})
    query = parse_query("old words")

    at_old = evaluate_query(query, [LocalRepository("r", repo, old)])
    at_new = evaluate_query(query, [LocalRepository("r", repo, new)])

    assert [m.search_result_paths for m in at_old] == [("a.txt",)]
    assert [m.search_result_paths for m in at_new] == [("b.txt",)]


def test_large_files_are_found_by_path_but_not_by_content(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    big = "needle\n" + "x" * (1024 * 1024)
    sha = commit_files(repo, {"big.txt": big, "small.txt": "needle\n"})
    repos = [LocalRepository("r", repo, sha)]

    by_content = evaluate_query(parse_query("needle"), repos)
    by_path = evaluate_query(parse_query(r"file:big\.txt"), repos)

    assert [m.search_result_paths for m in by_content] == [("small.txt",)]
    assert [m.search_result_paths for m in by_path] == [("big.txt",)]


def test_unknown_revision_is_a_repository_error(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    commit_files(repo, {"a.txt": "a\n"})
    with pytest.raises(RepositoryNotFoundError, match="no-such-branch"):
        evaluate_query(parse_query("a"), [LocalRepository("r", repo, "no-such-branch")])


def test_revision_that_looks_like_an_option_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    commit_files(repo, {"a.txt": "a\n"})
    with pytest.raises(RepositoryNotFoundError):
        evaluate_query(parse_query("a"), [LocalRepository("r", repo, "--output=/tmp/x")])


def test_two_thousand_files_evaluate_well_under_a_second(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    files: dict[str, bytes | str] = {
        f"pkg{i // 100}/file{i}.go": f"package pkg\n// line {i}\nfunc F{i}() {{}}\n" * 20
        for i in range(2000)
    }
    files["pkg3/special.go"] = "package pkg\n// the needle is here\n"
    sha = commit_files(repo, files)
    repos = [LocalRepository("r", repo, sha)]

    started = time.perf_counter()
    matches = evaluate_query(parse_query("lang:go needle"), repos)
    elapsed = time.perf_counter() - started

    assert [m.search_result_paths for m in matches] == [("pkg3/special.go",)]
    assert elapsed < 1.0


def test_repository_name_filters_do_not_read_repositories() -> None:
    reader = MemoryTreeReader({"a/one": {"x.txt": b"hit\n"}, "b/two": {"x.txt": b"hit\n"}})
    repos = [
        LocalRepository("a/one", Path("/nowhere"), "HEAD"),
        LocalRepository("b/two", Path("/nowhere"), "HEAD"),
    ]

    whole = evaluate_query(parse_query("repo:^a/"), repos, reader=reader)
    assert [(m.repository.name, m.search_result_paths) for m in whole] == [("a/one", ())]
    assert reader.opened == []

    files = evaluate_query(parse_query("repo:^b/ hit"), repos, reader=reader)
    assert [(m.repository.name, m.search_result_paths) for m in files] == [("b/two", ("x.txt",))]
    assert reader.opened == ["b/two"]


def test_selects_whole_repositories_tells_callers_what_paths_to_expect() -> None:
    assert parse_query("repo:x -repo:has.path(y)").selects_whole_repositories
    assert parse_query("select:repo foo").selects_whole_repositories
    assert not parse_query("repo:x foo").selects_whole_repositories
    assert not parse_query("file:x").selects_whole_repositories


_QUERY_ALPHABET = st.sampled_from(
    [" ", "(", ")", '"', "'", "/", "\\", ":", "-", "a", "b", "repo:", "file:", "lang:go",
     "OR", "and", "NOT", "count:", "1", "has.path(", "patterntype:regexp", "$", "[", "*"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_QUERY_ALPHABET, max_size=12).map("".join))
def test_any_text_parses_or_is_refused_with_a_query_error(text: str) -> None:
    reason = unsupported_reason(text)
    if reason is not None:
        with pytest.raises(QueryError) as info:
            parse_query(text)
        assert info.value.message == reason
        return
    query = parse_query(text)
    reader = MemoryTreeReader({"a/b": {"x.go": b"a b (repo) [x]\n", "y.md": b"\x00"}})
    evaluate_query(query, [LocalRepository("a/b", Path("/nowhere"), "HEAD")], reader=reader)
