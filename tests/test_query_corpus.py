"""Every repositoriesMatchingQuery of the example corpus is evaluated or refused by name.

The sort is written out below, so a change in what runner accepts shows up
here as a failing row rather than slipping by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.query import (
    LocalRepository,
    MemoryTreeReader,
    QueryError,
    evaluate_query,
    parse_query,
    unsupported_reason,
)

CORPUS = Path("/work/shared/corpus/batch-change-examples")

EVALUATED = "evaluated"
STRUCTURAL = "refused: patterntype:structural"

# file (relative to the corpus) -> the outcome of each of its queries, in order
EXPECTED: dict[str, list[str]] = {
    "ci-and-tooling-config/global-gitignore.batch.yaml": [EVALUATED],
    "ci-and-tooling-config/update-circle-ci-config/update-circle-ci-config.batch.yaml": [EVALUATED],
    "ci-and-tooling-config/update-circle-ci-docker-user.batch.yaml": [EVALUATED],
    "docker/pin-docker-images.batch.yaml": [EVALUATED],
    "docker/update-dart-base-images.batch.yaml": [EVALUATED],
    "docker/update-golang-base-images.batch.yaml": [STRUCTURAL, STRUCTURAL],
    "golang/autofix-go/combine-function-parameters.batch.yml": [STRUCTURAL] * 5,
    "golang/autofix-go/remove-expensive-string-comparison.batch.yml": [STRUCTURAL],
    "golang/autofix-go/replace-to-replaceAll.batch.yml": [STRUCTURAL],
    "golang/comby-go-refactor/comby-log-printf.batch.yaml": [STRUCTURAL],
    "golang/comby-goimports/comby-go-import-rewrite.batch.yaml": [EVALUATED],
    "golang/go-interface-to-any/interface-to-any.spec.yml": [EVALUATED],
    "hcl/add-default_tags/add-default-tags.batch.yaml": [EVALUATED],
    "hcl/set-cidr-vpc/set-cidr-vpc.batch.yml": [EVALUATED],
    "java/java-openrewrite/gradle.yaml": [EVALUATED],
    "java/java-openrewrite/maven.yaml": [EVALUATED],
    "java/remove-catch.batch.yaml": [STRUCTURAL],
    "js-ts/bootstrap-upgrade.batch.yaml": [EVALUATED],
    "js-ts/colors/batch.yml": [EVALUATED],
    "js-ts/eslint-fix/eslint-fix.batch.yaml": [EVALUATED],
    "js-ts/eslint-fix/eslint-fix.simple.batch.yaml": [EVALUATED],
    "js-ts/js-codeshift/warn-to-log.batch.yml": [EVALUATED],
    "js-ts/npm-package-update/npm-update.yaml": [EVALUATED],
    "js-ts/update-api-query/replace-viewer-configuration.yaml": [EVALUATED],
    "js-ts/vscode-extension-recommendation/vscode-extension-recommendation.batch.yml": [EVALUATED],
    "misc/fix-misused-weekyear.batch.yaml": [EVALUATED],
    "misc/update-language.find-and-ruplacer.batch.yaml": [EVALUATED],
    "misc/update-language.ruplacer.batch.yaml": [EVALUATED],
    "misc/update-language.sedspec.yaml": [EVALUATED],
    "php/introduce-phpstan.batch.yml": [EVALUATED],
    "python/python-refactor/python-refactor.yaml": [STRUCTURAL],
    "utils/add-backstage-github.batch.yaml": [EVALUATED],
    "utils/add-backstage-minimal.batch.yaml": [EVALUATED],
    "utils/add-file/add-file.batch.yaml": [EVALUATED],
    "utils/add-file/mount-file.batch.yaml": [EVALUATED],
    "utils/templated-files.batch.yaml": [STRUCTURAL],
    "utils/workspace-discovery-additional-files.yaml": [EVALUATED],
    "utils/workspace-discovery.yaml": [EVALUATED],
    "xml/update-maven-dependency-with-transform-changes.yaml": [EVALUATED],
    "xml/update-maven-dependency.yaml": [EVALUATED],
    "xml/update-xml-boilerplate.batch.yaml": [EVALUATED],
    "yaml/modify-yaml-mount-file.batch.yaml": [EVALUATED],
    "yaml/modify-yaml.batch.yaml": [EVALUATED],
    "yaml/update-k8s-manifest.yaml": [EVALUATED],
}


def _queries(document: Any) -> list[str]:
    if not isinstance(document, dict):
        return []
    # PyYAML reads the key `on` as the boolean True (YAML 1.1).
    entries = document.get("on", document.get(True)) or []
    return [
        entry["repositoriesMatchingQuery"]
        for entry in entries
        if isinstance(entry, dict) and "repositoriesMatchingQuery" in entry
    ]


def corpus_queries() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted({*CORPUS.rglob("*.yml"), *CORPUS.rglob("*.yaml")}):
        queries = [q for doc in yaml.safe_load_all(path.read_text()) for q in _queries(doc)]
        if queries:
            found[str(path.relative_to(CORPUS))] = queries
    return found


def outcome(query: str) -> str:
    reason = unsupported_reason(query)
    if reason is None:
        parse_query(query)
        return EVALUATED
    with pytest.raises(QueryError) as info:
        parse_query(query)
    what = info.value.what
    assert what, f"refusal of {query!r} names nothing: {reason}"
    assert what.lower() in reason.lower(), f"{reason!r} does not name {what!r}"
    return f"refused: {what}"


@pytest.fixture(scope="module")
def queries() -> dict[str, list[str]]:
    if not CORPUS.is_dir():
        pytest.skip(f"the example corpus is not at {CORPUS}")
    return corpus_queries()


def test_every_corpus_query_is_sorted_into_evaluated_or_refused(
    queries: dict[str, list[str]],
) -> None:
    sorted_now = {name: [outcome(q) for q in qs] for name, qs in queries.items()}
    assert sorted_now == EXPECTED


# What the evaluated corpus queries select in a small set of repositories,
# checked by hand against what Sourcegraph would return.
AUTOMATION = "github.com/sourcegraph-testing/automation-testing"
SOURCEGRAPH = "github.com/sourcegraph/sourcegraph"
GHE = "ghe.example.com/web/site"
PHP_PLAIN = "github.com/acme/php-plain"
PHP_CHECKED = "github.com/acme/php-checked"
K8S = "github.com/sourcegraph-testing/k8s-examples"
JDP = "github.com/sourcegraph-testing/jdp"
POI = "gitlab.com/apache/poi"
PATTERNS = "github.com/iluwatar/java-design-patterns"
PIN = "github.com/sourcegraph-testing/docker-image-pin"

FILES: dict[str, dict[str, bytes]] = {
    AUTOMATION: {
        "README.md": b"# Automation\nuse the whitelist\n",
        "vendor/x/README.md": b"whitelist\n",
        "main.go": b'package main\n\nimport "gopkg.in/inconshreveable/log15.v2"\n\n'
        b"var v interface{}\n",
        ".eslintrc.json": b"{}\n",
        ".vscode/extensions.json": b'{"recommendations": []}\n',
        "circle-ci.yml": b"docker:\n  - auth: mydockerhub-user\n",
        "Dockerfile": b"FROM node:latest\n",
        "build/Dockerfile": b"FROM node:14\n",
        "docker-compose.yaml": b"services:\n  app:\n    entrypoint: /run\n",
        "src/Dates.java": b'fmt = "dd-MMM-YYYY";\n',
        "src/Other.java": b'fmt = "DD-mmm-yyyy";\n',
        "infra/locals.tf": b'locals {\n  tag = "team"\n}\n',
        "infra/vpc.tf": b'resource "aws_vpc" "main" {}\n',
        "Tests.csproj": b'<PackageReference Include="Microsoft.NET.Test.Sdk" Version="15.5.0" />\n',
        "web/package.json": b'{\n  "dependencies": {\n    "bootstrap": "^4.1.0"\n  }\n}\n',
        "package-lock.json": b'{"dependencies": {"colors": {"version": "1.4.0"}}}\n',
        "warn.js": b"console.warn('careful')\n",
        "web/style.scss": b"// blacklist\n",
    },
    SOURCEGRAPH: {
        "main.go": b'import "gopkg.in/inconshreveable/log15.v2"\n',
        "doc/blacklist.md": b"the blacklist\n",
        "web/settings.ts": b"const viewerConfiguration = 1\n",
        "pom.xml": b"<project/>\n",
        "README.md": b"# Sourcegraph\n",
    },
    GHE: {"package.json": b'{"dependencies": {"bootstrap": "~4.0.0"}}\n'},
    PHP_PLAIN: {"index.php": b"<?php echo 1;\n"},
    PHP_CHECKED: {
        "index.php": b"<?php echo 1;\n",
        "composer.json": b'{"require-dev": {"phpstan/phpstan": "^1.0"}}\n',
    },
    K8S: {"deploy.yaml": b"kind: Deployment\n", "Dockerfile": b"FROM google/dart:2.1\n"},
    JDP: {"pom.xml": b"<project/>\n", "sub/pom.xml": b"<project/>\n"},
    POI: {"build.gradle": b"apply plugin: 'java'\n"},
    PATTERNS: {"pom.xml": b"<project/>\n"},
    PIN: {"package.json": b'{"name": "pin"}\n'},
}

WHOLE = "whole repository"
Expected = dict[str, str | list[str]]

SELECTED: list[tuple[str, Expected]] = [
    ("repo:automation-testing$", {AUTOMATION: WHOLE}),
    ("mydockerhub-user file:circle-ci.[yaml|yml]", {AUTOMATION: ["circle-ci.yml"]}),
    (
        r"^FROM (\w+\/)?\w+:latest($|\s) file:Dockerfile patternType:regexp fork:yes",
        {AUTOMATION: ["Dockerfile"]},
    ),
    (
        r"^FROM google\/dart(-runtime)?:2\.[0-9]\.?\d?(-dev\.\d\.\d)? file:Dockerfile  "
        "patternType:regexp",
        {K8S: ["Dockerfile"]},
    ),
    (
        "lang:go gopkg.in/inconshreveable/log15.v2 -repo:sourcegraph/sourcegraph$",
        {AUTOMATION: ["main.go"]},
    ),
    ("lang:go interface{}", {AUTOMATION: ["main.go"]}),
    ("file:locals.tf$ lang:HCL tag not ServiceName", {AUTOMATION: ["infra/locals.tf"]}),
    ("lang:HCl aws_vpc count:100", {AUTOMATION: ["infra/vpc.tf"]}),
    ("repo:apache/poi", {POI: WHOLE}),
    (
        'f:package.json "bootstrap": ".?4 patterntype:regexp -r:13k -r:ghe -r:gitlab',
        {AUTOMATION: ["web/package.json"]},
    ),
    ("file:package-lock.json colors", {AUTOMATION: ["package-lock.json"]}),
    (r"file:^.eslintrc[\.js|\.json]?", {AUTOMATION: [".eslintrc.json"]}),
    ("console.warn", {AUTOMATION: ["warn.js"]}),
    (
        "repo:github.com/sourcegraph/sourcegraph viewerConfiguration lang:typescript",
        {SOURCEGRAPH: ["web/settings.ts"]},
    ),
    (r"path:.vscode\/extensions.json$", {AUTOMATION: [".vscode/extensions.json"]}),
    (
        "repo:sourcegraph-testing dd-MMM-YYYY fork:yes patternType:regexp case:true",
        {AUTOMATION: ["src/Dates.java"]},
    ),
    (
        "whitelist OR blacklist lang:markdown -file:vendor repo:sourcegraph",
        {AUTOMATION: ["README.md"], SOURCEGRAPH: ["doc/blacklist.md"]},
    ),
    (
        # the unescaped "." and no "$": sourcegraph-testing repositories match too
        "whitelist OR blacklist -file:scss$ -file:html$ repo:github.com/sourcegraph",
        {AUTOMATION: ["README.md", "vendor/x/README.md"], SOURCEGRAPH: ["doc/blacklist.md"]},
    ),
    (r"repo:has.path(.*\.php$) -repo:has.content(phpstan/phpstan)", {PHP_PLAIN: WHOLE}),
    (
        r"repo:github\.com",
        dict.fromkeys(
            [AUTOMATION, SOURCEGRAPH, PHP_PLAIN, PHP_CHECKED, K8S, JDP, PATTERNS, PIN], WHOLE
        ),
    ),
    (
        "file:README.md count:200",
        {AUTOMATION: ["README.md", "vendor/x/README.md"], SOURCEGRAPH: ["README.md"]},
    ),
    (
        "file:pom.xml",
        {SOURCEGRAPH: ["pom.xml"], JDP: ["pom.xml", "sub/pom.xml"], PATTERNS: ["pom.xml"]},
    ),
    ("repo:java-design-patterns", {PATTERNS: WHOLE}),
    (
        "patternType:regexp file:package.json repo:sourcegraph-testing/docker-image-pin$",
        {PIN: ["package.json"]},
    ),
    ("file:docker-compose.yaml entrypoint:", {AUTOMATION: ["docker-compose.yaml"]}),
    (r"file:pom.xml repo:^github\.com/sourcegraph-testing/jdp$", {JDP: ["pom.xml", "sub/pom.xml"]}),
    (
        '<PackageReference Include="Microsoft.NET.Test.Sdk" Version="15.5.0"',
        {AUTOMATION: ["Tests.csproj"]},
    ),
    ("file:docker-compose.yaml entrypoint: count:10", {AUTOMATION: ["docker-compose.yaml"]}),
    (r"lang:YAML r:^github\.com/sourcegraph-testing/k8s-examples$", {K8S: ["deploy.yaml"]}),
]


def test_every_evaluated_corpus_query_is_in_the_selection_table(
    queries: dict[str, list[str]],
) -> None:
    evaluated = {q for qs in queries.values() for q in qs if unsupported_reason(q) is None}
    tabled = {q for q, _ in SELECTED}
    assert evaluated - tabled == set()


@pytest.mark.parametrize(("query", "expected"), SELECTED, ids=[q for q, _ in SELECTED])
def test_corpus_query_selects_what_sourcegraph_would(query: str, expected: Expected) -> None:
    repos = [LocalRepository(name, Path("/nowhere") / name, "HEAD") for name in FILES]
    matches = evaluate_query(parse_query(query), repos, reader=MemoryTreeReader(FILES))
    got: Expected = {m.repository.name: list(m.search_result_paths) or WHOLE for m in matches}
    assert got == expected
