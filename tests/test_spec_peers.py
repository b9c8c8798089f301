"""Sourcegraph's and src-cli's own batch spec tests, ported as data.

Each case names the test it came from, as ``REPO PATH TestName/subtest``:
Sourcegraph's ``lib/batches`` (published rules, spec parsing, changeset
building), src-cli's ``internal/batches/service`` (mounts), and for the glob
syntax of ``published`` patterns the gobwas/glob tests of the library
Sourcegraph compiles them with. Cases run through runner's own front half:
the spec text is loaded and validated, then rules are resolved or changesets
built. Where runner differs on purpose the case says so in ``note`` (and
docs/compatibility.md, "Batch specs", has the row); the peer tests that do
not apply are in ``NOT_PORTED`` with the reason.
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runner.changeset import FileChanges, build_changesets
from runner.errors import ChangesetError, SpecError
from runner.plan import Workspace
from runner.spec import BatchSpec, load_spec, load_spec_text
from runner.spec.published import published_for

SG = "sourcegraph/sourcegraph lib/batches/"
CLI = "sourcegraph/src-cli internal/batches/"
GLOB = "gobwas/glob "

TEMPLATE = """
changesetTemplate:
  title: The title
  body: The body
  branch: my-branch
  commit:
    message: git commit message
"""


def spec_with_published(published: str) -> str:
    """A valid spec whose changesetTemplate.published is the YAML ``published``, from line 9."""
    return "name: p" + TEMPLATE + "  published:\n" + textwrap.indent(published, "    ") + "\n"


def rules_yaml(rules: Sequence[tuple[str, Any]]) -> str:
    """Rules as a YAML list of one-key mappings, keys and values quoted as JSON."""
    return "\n".join(f"- {json.dumps(p)}: {json.dumps(v)}" for p, v in rules) or "[]"


# -- published: which rule wins ----------------------------------------------------------------


@dataclass(frozen=True)
class MatchCase:
    source: str
    rules: tuple[tuple[str, Any], ...]
    repository: str
    branch: str
    want: Any
    note: str = ""


OVR = SG + "overridable/overridable_test.go "
BOS = SG + "overridable/bool_or_string_test.go "
GLOB_MATCH = GLOB + "glob_test.go TestPatternMatch "
OURS = "runner (ours): "

# TestMatchWithSuffix's rule values are labels ("rule-1", "rule-2"); published values stand
# in for them ("draft" for rule-1, True for rule-2) since a spec may hold only those.
# TestBoolOrStringIs calls Value(name), which ignores branches: its rules have none.
# fmt: off
MATCH_CASES = (
    # source, rules, repository, head branch, the value Sourcegraph gives
    MatchCase(OVR + "TestMatchWithSuffix/no rules", (), "name", "suffix", None),
    MatchCase(OVR + "TestMatchWithSuffix/no match", (("repo*@branch-name-1", "draft"), ("repo*@branch-name-2", True)), "repo-1000", "other-branch-name", None),
    MatchCase(OVR + "TestMatchWithSuffix/single match", (("repo*@other-branch-name", "draft"), ("repo*@branch-name", True)), "repo-1000", "other-branch-name", "draft"),
    MatchCase(OVR + "TestMatchWithSuffix/multiple matches", (("repo*@branch-name", "draft"), ("repo*@branch-name", True)), "repo-1000", "branch-name", True),
    MatchCase(BOS + "TestBoolOrStringIs/wildcard false", (("*", False),), "foo", "any", False),
    MatchCase(BOS + "TestBoolOrStringIs/wildcard true", (("*", True),), "foo", "any", True),
    MatchCase(BOS + "TestBoolOrStringIs/wildcard string", (("*", "draft"),), "foo", "any", "draft"),
    MatchCase(BOS + "TestBoolOrStringIs/list exhausted", (("bar*", True),), "foo", "any", None),
    MatchCase(BOS + "TestBoolOrStringIs/single match", (("bar*", True),), "bar", "any", True),
    MatchCase(BOS + "TestBoolOrStringIs/multiple matches", (("*", True), ("bar*", False)), "bar", "any", False),
    MatchCase(BOS + "TestBoolOrStringIs/multiple matches string", (("*", True), ("bar*", "draft")), "bar", "any", "draft"),
    MatchCase(BOS + "TestBoolOrStringWithSuffix/pattern and suffix match", (("*@the-suffix", "draft"),), "should-not-matter", "the-suffix", "draft"),
    MatchCase(BOS + "TestBoolOrStringWithSuffix/pattern matches but suffix not", (("*@the-suffix", "draft"),), "should-not-matter", "horse", None),
    MatchCase(BOS + "TestBoolOrStringWithSuffix/pattern does not match but suffix does", (("does-not-match@the-suffix", "draft"),), "will-not-match", "the-suffix", None),
    MatchCase(BOS + "TestBoolOrStringWithSuffix/suffix given but not in rule", (("*", "draft"),), "should-not-matter", "the-suffix", "draft"),
    # The glob syntax of a pattern: gobwas/glob compiled with no separators.
    MatchCase(GLOB_MATCH + "{a,ab}c", (("{a,ab}c", True),), "abc", "b", True),
    MatchCase(GLOB_MATCH + "{abc,def}ghi", (("{abc,def}ghi", True),), "defghi", "b", True),
    MatchCase(GLOB_MATCH + "{{a,b},c}", (("{{a,b},c}", True),), "c", "b", True),
    MatchCase(GLOB_MATCH + "{a,ab,abc} on ''", (("{a,ab,abc}", True),), "", "b", None),
    MatchCase(GLOB_MATCH + "\\*", (("\\*", True),), "*", "b", True),
    MatchCase(GLOB_MATCH + "[!a]*", (("[!a]*", True),), "this is a test3", "b", True),
    MatchCase(GLOB_MATCH + "?at on 'at'", (("?at", True),), "at", "b", None),
    MatchCase(GLOB_MATCH + "{https://*gobwas.com,...} on a safe http", (("{https://*gobwas.com,http://exclude.gobwas.com}", True),), "http://safe.gobwas.com", "b", None),
    MatchCase(GLOB_MATCH + "{https://*gobwas.com,...} on the excluded", (("{https://*gobwas.com,http://exclude.gobwas.com}", True),), "http://exclude.gobwas.com", "b", True),
    MatchCase(GLOB_MATCH + "[a-z][!a-x]*cat*[h][!b]*eyes*", (("[a-z][!a-x]*cat*[h][!b]*eyes*", True),), "my cat has very bright eyes", "b", True),
    MatchCase(GLOB_MATCH + "* (no separators, so it crosses '/')", (("*", True),), "github.com/a/b", "b", True),
    # Braces in a repository pattern as a spec writes them (Python's fnmatch had none).
    MatchCase(OURS + "braces over owners", (("github.com/{sourcegraph,sd9}/*", "draft"),), "github.com/sd9/app", "b", "draft"),
    MatchCase(OURS + "braces over owners, another owner", (("github.com/{sourcegraph,sd9}/*", "draft"),), "github.com/acme/app", "b", None),
    MatchCase(OURS + "an escaped brace is literal", (("github.com/a/\\{x\\}", True),), "github.com/a/{x}", "b", True),
    MatchCase(OURS + "braces with a branch", (("github.com/{a,b}/*@feature", True),), "github.com/b/x", "feature", True),
)
# fmt: on


@pytest.mark.parametrize("case", MATCH_CASES, ids=lambda c: c.source)
def test_published_rules_resolve_as_sourcegraphs(case: MatchCase) -> None:
    spec = load_spec_text(spec_with_published(rules_yaml(case.rules)), "peer.yaml")
    assert spec.changeset_template is not None
    got = published_for(spec.changeset_template.published, case.repository, case.branch)
    assert got == case.want and type(got) is type(case.want)


# -- published: what parses ----------------------------------------------------------------------


@dataclass(frozen=True)
class ParseCase:
    source: str
    published: str  # the YAML of changesetTemplate.published
    # (pattern as written, value) per rule; a bare value; or None for "an error"
    want: Any
    error_at: tuple[int, int] | None = None  # line, column of the problem
    note: str = ""


ERROR = object()

PUB = SG + "published_test.go TestPublishedValue/"
GLOB_ERR = GLOB + "glob_test.go TestCompileErrors "
YES_NOTE = (
    "the peer reads YAML 1.1 (yaml.v2), where yes is true; a spec is read with yaml.v3 and "
    "checked by the schema, which refuses the string, as runner does"
)
# fmt: off
PARSE_CASES = (
    # source, the YAML of published, the rules (pattern, value) or value read, or ERROR at
    ParseCase(BOS + "TestBoolOrStringYAML/valid/single false", "false", False),
    ParseCase(BOS + "TestBoolOrStringYAML/valid/single true", "true", True),
    ParseCase(BOS + "TestBoolOrStringYAML/valid/empty list", "[]", ()),
    ParseCase(BOS + "TestBoolOrStringYAML/valid/multiple rule list", '- "*": true\n- github.com/sourcegraph/*: false\n- github.com/sd9/*: draft', (("*", True), ("github.com/sourcegraph/*", False), ("github.com/sd9/*", "draft"))),
    ParseCase(BOS + "TestBoolOrStringYAML/valid/rule list with pattern suffixes", "- github.com/sourcegraph/*@branch-1: false\n- github.com/sd9/*@branch-2: draft", (("github.com/sourcegraph/*@branch-1", False), ("github.com/sd9/*@branch-2", "draft"))),
    ParseCase(BOS + "TestBoolOrStringYAML/invalid/empty object", "- {}", ERROR, (9, 7)),
    ParseCase(BOS + "TestBoolOrStringYAML/invalid/too many fields", '- {"foo": true, "bar": false}', ERROR, (9, 7)),
    ParseCase(BOS + "TestBoolOrStringYAML/invalid/invalid glob", '- "[": false', ERROR, (9, 7)),
    ParseCase(BOS + "TestBoolOrStringUnmarshalJSON/valid/single string", '"draft"', "draft"),
    ParseCase(BOS + "TestBoolOrStringUnmarshalJSON/valid/list", '[{"foo*": true}]', (("foo*", True),), note="the peer's value is the string 'bar', which the schema refuses in a spec"),
    ParseCase(BOS + "TestBoolOrStringUnmarshalJSON/valid/pattern with suffix", '[{"foo*@my-branch-name": true}]', (("foo*@my-branch-name", True),)),
    ParseCase(BOS + "TestBoolOrStringUnmarshalJSON/invalid/empty object", "[{}]", ERROR, (9, 6)),
    ParseCase(BOS + "TestBoolOrStringUnmarshalJSON/invalid/too many fields", '[{"foo": true,"bar":false}]', ERROR, (9, 6)),
    ParseCase(BOS + "TestBoolOrStringUnmarshalJSON/invalid/invalid glob", '[{"[":false}]', ERROR, (9, 7)),
    ParseCase(OVR + "TestRuleInvalid", '- "[": true', ERROR, (9, 7)),
    ParseCase(PUB + "YAML unmarshal/true", "true", True),
    ParseCase(PUB + "YAML unmarshal/false", "false", False),
    ParseCase(PUB + "YAML unmarshal/draft", "draft", "draft"),
    ParseCase(PUB + 'YAML unmarshal/"draft"', '"draft"', "draft"),
    ParseCase(PUB + "YAML unmarshal/null", "null", None),
    ParseCase(PUB + "YAML unmarshal/yes", "yes", ERROR, (9, 5), note=YES_NOTE),
    ParseCase(PUB + "YAML unmarshal/no", "no", ERROR, (9, 5), note=YES_NOTE),
    ParseCase(PUB + "Invalid", "invalid", ERROR, (9, 5)),
    # Patterns that do not compile, each an error at its key (gobwas/glob v0.2.3, which
    # Sourcegraph pins; the cases come from the newer library's tests).
    ParseCase(GLOB_ERR + "[abc", '- "[abc@b": true', ERROR, (9, 7)),
    ParseCase(GLOB_ERR + "[a-cx]", '- "[a-cx]": true', ERROR, (9, 7)),
    ParseCase(GLOB_ERR + "[c-a]", '- "[c-a]": true', ERROR, (9, 7)),
    ParseCase(GLOB_ERR + "{a,b", '- "{a,b": true', (("{a,b", True),), note="v0.2.3 accepts an unclosed brace; the newer library refuses it"),
    ParseCase(GLOB_ERR + "trailing backslash", '- "a\\\\": true', (("a\\", True),), note="v0.2.3 accepts it; the newer library refuses it"),
    ParseCase(OURS + "[] is an empty class", '- "github.com/[]": true', ERROR, (9, 7)),
)
# fmt: on


@pytest.mark.parametrize("case", PARSE_CASES, ids=lambda c: c.source)
def test_published_parses_as_sourcegraphs(case: ParseCase) -> None:
    text = spec_with_published(case.published)
    if case.want is ERROR:
        with pytest.raises(SpecError) as info:
            load_spec_text(text, "peer.yaml")
        found = [(p.line, p.column) for p in info.value.problems]
        assert found == [case.error_at], info.value.problems
        assert "changesetTemplate.published" in info.value.problems[0].message
        return
    template = load_spec_text(text, "peer.yaml").changeset_template
    assert template is not None
    published = template.published
    if isinstance(published, tuple):
        assert tuple((r.pattern, r.value) for r in published) == case.want
    else:
        assert published == case.want and type(published) is type(case.want)


def test_an_invalid_pattern_is_reported_with_its_position_and_every_other_problem() -> None:
    text = spec_with_published(
        '- "github.com/{a,b}/*": true\n- "github.com/[z-a]": draft\n- x: maybe'
    )
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "peer.yaml")
    problems = info.value.problems
    assert [(p.line, p.column) for p in problems] == [(10, 7), (11, 10)]
    assert "'github.com/[z-a]' is not a valid glob pattern" in problems[0].message
    assert 'must be true, false or "draft"' in problems[1].message


# -- batch spec parsing ---------------------------------------------------------------------------


def _if_condition(spec: BatchSpec) -> str:
    """Step 1's `if` as Sourcegraph's IfCondition() gives it."""
    value = spec.steps[0].if_
    return str(value).lower() if isinstance(value, bool) else str(value or "")


@dataclass(frozen=True)
class SpecCase:
    source: str
    text: str
    error: str | None = None  # a fragment of the one problem expected
    error_line: int | None = None
    check: tuple[Callable[[BatchSpec], Any], Any] | None = None
    note: str = ""


HELLO = """\
name: hello-world
description: Add Hello World to READMEs
on:
  - repositoriesMatchingQuery: file:README.md
steps:
  - run: echo Hello World | tee -a $(find -name README.md)
    container: alpine:3
changesetTemplate:
  title: Hello World
  body: My first batch change!
  branch: hello-world
  commit:
    message: Append Hello World to all README.md files
  published: false
"""
HELLO_IF = HELLO.replace("    container: alpine:3\n", "    if: {}\n    container: alpine:3\n")
BRANCHES = """\
name: hello-world
on:
  - repository: github.com/foo/bar
{}
"""
MOUNT = """\
name: test-spec
description: A test spec
steps:
  - run: /tmp/sample.sh
    container: alpine:3
    mount:
      - path: {path}
        mountpoint: {mountpoint}
changesetTemplate:
  title: Test Mount
  body: Test a mounted path
  branch: test
  commit:
    message: Test
"""
PARSE = SG + "batch_spec_test.go TestParseBatchSpec/"
BRANCH_TEST = SG + "batch_spec_test.go TestOnQueryOrRepository_Branches/"


def _branches(spec: BatchSpec) -> tuple[str, ...]:
    return spec.on[0].branches  # type: ignore[union-attr]


SERVICE = CLI + "service/service_test.go TestService_ParseBatchSpec/"
CONFLICT = "give branch or branches, not both"
COMMA = "must not contain a comma"
FILES_COMMA = (
    "name: test-spec\nsteps:\n  - run: echo hello\n    container: alpine:3\n    files:\n"
    '      "/tmp/x,source=/var/run/docker.sock,target=/var/run/docker.sock": "IGNORED"\n' + TEMPLATE
)
CONFLICTING = HELLO.replace(
    "  - repositoriesMatchingQuery: file:README.md\n",
    "  - repository: github.com/foo/bar\n    branch: foo\n    branches: [bar]\n",
)
RENAMED = HELLO.replace(
    "name: hello-world", "name: this name is invalid cause it contains whitespace"
)
# fmt: off
SPEC_CASES = (
    # source, spec text, and either (what to read, its value) or (problem fragment, line)
    SpecCase(PARSE + "valid_without_version", HELLO + "  fork: false\n", check=(lambda s: s.version, 1)),
    SpecCase(PARSE + "valid with version 1", "version: 1\n" + HELLO + "  fork: false\n", check=(lambda s: s.version, 1)),
    SpecCase(PARSE + "valid with version 2", "version: 2\n" + HELLO + "  fork: false\n", check=(lambda s: s.version, 2)),
    SpecCase(PARSE + "invalid version", "version: 99\n" + HELLO, "version must be 1 or 2", 1),
    SpecCase(PARSE + "missing changesetTemplate", HELLO.split("changesetTemplate:")[0], "steps but no changesetTemplate", 1),
    SpecCase(PARSE + "invalid batch change name", RENAMED, "may contain only letters, digits", 1),
    SpecCase(PARSE + 'parsing if attribute/"true"', HELLO_IF.format('"true"'), check=(_if_condition, "true")),
    SpecCase(PARSE + 'parsing if attribute/"false"', HELLO_IF.format('"false"'), check=(_if_condition, "false")),
    SpecCase(PARSE + "parsing if attribute/true", HELLO_IF.format("true"), check=(_if_condition, "true")),
    SpecCase(PARSE + "parsing if attribute/false", HELLO_IF.format("false"), check=(_if_condition, "false")),
    SpecCase(PARSE + "parsing if attribute/foobar", HELLO_IF.format("foobar"), check=(_if_condition, "foobar")),
    SpecCase(PARSE + 'parsing if attribute/"${{ foobar }}"', HELLO_IF.format('"${{ foobar }}"'), "foobar", 7, note="runner checks templates at validation: foobar is no variable (see Templates)"),
    SpecCase(PARSE + "parsing if attribute/${{ foobar }}", HELLO_IF.format("${{ foobar }}"), "foobar", 7, note="as above"),
    SpecCase(PARSE + "uses conflicting branch attributes", CONFLICTING, CONFLICT, 6),
    SpecCase(PARSE + "mount path contains comma", MOUNT.format(path="/foo,bar/", mountpoint="/tmp"), COMMA, 7),
    SpecCase(PARSE + "mount mountpoint contains comma", MOUNT.format(path="/valid/sample.sh", mountpoint="/tmp/foo,bar/sample.sh"), COMMA, 8),
    SpecCase(BRANCH_TEST + "success/no branches", BRANCHES.format(""), check=(_branches, ())),
    SpecCase(BRANCH_TEST + "success/single branch", BRANCHES.format("    branch: foo"), check=(_branches, ("foo",))),
    SpecCase(BRANCH_TEST + "success/multiple branches", BRANCHES.format("    branches: [foo, bar]"), check=(_branches, ("foo", "bar"))),
    SpecCase(BRANCH_TEST + "success/single branch, non-nil but empty branches", BRANCHES.format("    branch: foo\n    branches: []"), CONFLICT, 5, note="the peer builds the struct directly; in a spec the schema refuses both keys"),
    SpecCase(BRANCH_TEST + "error", BRANCHES.format("    branch: foo\n    branches: [bar]"), CONFLICT, 5),
    SpecCase(SERVICE + "simple spec", "\nname: test-spec\ndescription: A test spec\n", check=(lambda s: s.name, "test-spec")),
    SpecCase(SERVICE + "unknown field", "\nname: test-spec\ndescription: A test spec\nsome-new-field: Foo bar\n", "unknown key 'some-new-field'", 4),
    SpecCase(SERVICE + "supported version", "\nversion: 2\nname: test-spec\ndescription: A test spec\n", check=(lambda s: s.version, 2)),
    SpecCase(SERVICE + "unsupported version", "\nversion: 99\nname: test-spec\ndescription: A test spec\n", "version must be 1 or 2", 2, note="src-cli also reads version 3; runner reads 1 and 2"),
    SpecCase(SERVICE + "files target path with comma", FILES_COMMA, COMMA, 6),
)
# fmt: on


@pytest.mark.parametrize("case", SPEC_CASES, ids=lambda c: c.source)
def test_specs_parse_as_sourcegraphs(case: SpecCase) -> None:
    if case.error is None:
        spec = load_spec_text(case.text, "peer.yaml")
        assert case.check is not None
        read, want = case.check
        assert read(spec) == want
        return
    with pytest.raises(SpecError) as info:
        load_spec_text(case.text, "peer.yaml")
    assert len(info.value.problems) == 1, info.value.problems
    problem = info.value.problems[0]
    assert case.error in problem.message and problem.line == case.error_line, problem


# -- mounts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MountCase:
    source: str
    paths: tuple[str, ...]  # with {spec_dir}, {outside}, {sibling} for the folders below
    want: str | None  # None: valid; else a fragment of the problem at the first mount entry


LEAVES = "leaves the spec's folder"
# fmt: off
MOUNT_CASES = (
    # source, the mount paths of step 1, and None (valid) or a fragment of the problem
    MountCase(SERVICE + "mount absolute file", ("{spec_dir}/sample.sh",), None),
    MountCase(SERVICE + "mount relative file", ("./sample.sh",), None),
    MountCase(SERVICE + "mount absolute directory", ("{spec_dir}",), None),
    MountCase(SERVICE + "mount relative directory", ("./",), None),
    MountCase(SERVICE + "mount multiple files", ("./sample.sh", "./another.sh"), None),
    MountCase(SERVICE + "mount path does not exist", ("{spec_dir}/does/not/exist/sample.sh",), "does not exist"),
    MountCase(SERVICE + "mount path not subdirectory of spec", ("{outside}",), LEAVES),
    MountCase(SERVICE + "mount path prefix confusion bypass", ("{sibling}/secret.txt",), LEAVES),
    MountCase(SERVICE + "mount path symlink escape", ("./leak",), LEAVES),
    MountCase(SERVICE + "mount path dot-dot traversal", ("../../../etc/passwd",), LEAVES),
    MountCase(OURS + ".. that stays inside", ("./sub/../sample.sh",), None),
    MountCase(OURS + "a link that stays inside", ("./inner-link",), None),
    MountCase(OURS + "a NUL byte", ('"./sample.sh\\0x"',), "cannot be read as a path"),
)
# fmt: on


@pytest.fixture
def mount_layout(tmp_path: Path) -> dict[str, Path]:
    """The peer's folders: the spec's, one outside, and a sibling sharing the spec's prefix."""
    spec_dir = tmp_path / "specdir"
    outside = tmp_path / "outside"
    sibling = tmp_path / "specdir-outside"
    for folder in (spec_dir / "sub", outside, sibling):
        folder.mkdir(parents=True)
    (spec_dir / "sample.sh").touch()
    (spec_dir / "another.sh").touch()
    (sibling / "secret.txt").write_text("SECRET")
    (spec_dir / "leak").symlink_to(sibling / "secret.txt")
    (spec_dir / "inner-link").symlink_to(spec_dir / "sample.sh")
    return {"spec_dir": spec_dir, "outside": outside, "sibling": sibling}


@pytest.mark.parametrize("case", MOUNT_CASES, ids=lambda c: c.source)
def test_mounts_are_checked_as_src_clis(case: MountCase, mount_layout: dict[str, Path]) -> None:
    entries = "".join(
        f"      - path: {p.format(**mount_layout)}\n        mountpoint: /tmp/m{i}\n"
        for i, p in enumerate(case.paths)
    )
    text = MOUNT.replace("      - path: {path}\n        mountpoint: {mountpoint}\n", entries)
    spec_path = mount_layout["spec_dir"] / "batch.yaml"
    spec_path.write_text(text)
    if case.want is None:
        assert len(load_spec(spec_path, check_mounts=True).steps[0].mounts) == len(case.paths)
        return
    with pytest.raises(SpecError) as info:
        load_spec(spec_path, check_mounts=True)
    (problem,) = info.value.problems
    assert (problem.line, problem.column) == (7, 9)
    assert problem.message.startswith("steps[1].mount[1]: ") and case.want in problem.message
    assert "SECRET" not in str(info.value)
    # Without the folder, nothing on disk is looked at: the step loop checks it when it mounts.
    assert load_spec(spec_path).steps[0].mounts[0].pos.line == 7


# -- changesets -----------------------------------------------------------------------------------


def _diff(path: str, line: str) -> str:
    """A git diff adding ``path`` (the peer's diffs have no a/ and b/ prefixes; git's have)."""
    return (
        f"diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0000000..19d6416\n"
        f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,1 @@\n+{line}\n"
    )


D1, D2, D3 = (
    _diff("1/1.txt", "this is 1"),
    _diff("1/2/2.txt", "this is 2"),
    _diff("1/2/3/3.txt", "this is 3"),
)
ALL_FILES = ("1/1.txt", "1/2/2.txt", "1/2/3/3.txt")


@dataclass(frozen=True)
class ChangesetCase:
    source: str
    groups: tuple[tuple[str, str], ...] = ()  # (directory, branch)
    published: str | None = None  # the YAML of changesetTemplate.published
    template_branch: str = "my-default-branch"
    # head branch → (diff, published); or an error fragment
    want: dict[str, tuple[str, Any]] | str = field(default_factory=dict)
    note: str = ""


GROUP = SG + "changeset_specs_test.go TestGroupFileDiffs/"
CREATE = SG + "changeset_specs_test.go TestCreateChangesetSpecs/"
VALIDATE_GROUPS = SG + "changeset_specs_test.go TestValidateGroups/"
NO_EMPTY = (
    "Sourcegraph's grouping keeps the template's branch with an empty diff; "
    "runner makes no changeset without changes"
)
ALL = D1 + D2 + D3
SAME = (
    "two groups give changesets in github.com/sourcegraph/src-cli the branch 'my-batch-change-SAME'"
)
OWN = "a group's branch 'my-batch-change' is the changeset template's own branch"
# fmt: off
CHANGESET_CASES = (
    # source, groups (directory, branch), published, the template's branch, and either
    # {head branch: (diff, published)} or the error
    ChangesetCase(CREATE + "success", published="false", template_branch="my-branch", want={"my-branch": (ALL, False)}),
    ChangesetCase(CREATE + "publish by branch", published='[{"github.com/sourcegraph/*@my-branch": true}]', template_branch="my-branch", want={"my-branch": (ALL, True)}),
    ChangesetCase(CREATE + "publish by branch not matching", published='[{"github.com/sourcegraph/*@another-branch-name": true}]', template_branch="my-branch", want={"my-branch": (ALL, None)}),
    ChangesetCase(CREATE + "publish in UI on a supported version", template_branch="my-branch", want={"my-branch": (ALL, None)}),
    ChangesetCase(GROUP + "1 (1/2/3)", (("1/2/3", "everything-in-3"),), want={"my-default-branch": (D1 + D2, None), "everything-in-3": (D3, None)}),
    ChangesetCase(GROUP + "2 (1/2)", (("1/2", "everything-in-2-and-3"),), want={"my-default-branch": (D1, None), "everything-in-2-and-3": (D2 + D3, None)}),
    ChangesetCase(GROUP + "3 (1)", (("1", "everything-in-1-and-2-and-3"),), want={"everything-in-1-and-2-and-3": (ALL, None)}, note=NO_EMPTY),
    ChangesetCase(GROUP + "4 (each diff against each directory, last match wins)", (("1", "only-in-1"), ("1/2", "only-in-2"), ("1/2/3", "only-in-3")), want={"only-in-1": (D1, None), "only-in-2": (D2, None), "only-in-3": (D3, None)}, note=NO_EMPTY),
    ChangesetCase(GROUP + "5 (the last group matches every diff)", (("1/2/3", "only-in-3"), ("1/2", "only-in-2"), ("1", "only-in-1")), want={"only-in-1": (ALL, None)}, note=NO_EMPTY),
    ChangesetCase(GROUP + "6 (an empty directory takes nothing)", ((".", "everything"),), want={"my-default-branch": (ALL, None)}, note="in a spec the schema refuses an empty directory (minLength 1), as runner does; '.' trims to the same empty prefix in Sourcegraph"),
    ChangesetCase(OURS + "a group's ./ prefix is dropped, as Sourcegraph trims ~./", (("./1/2/3", "three"),), want={"my-default-branch": (D1 + D2, None), "three": (D3, None)}),
    ChangesetCase(OURS + "published by the head branch of a group", (("1/2", "group-branch"),), published='[{"github.com/*": false}, {"github.com/*@group-branch": "draft"}]', want={"my-default-branch": (D1, False), "group-branch": (D2 + D3, "draft")}),
    ChangesetCase(VALIDATE_GROUPS + "1 (distinct branches)", (("1/2", "my-batch-change-a"), ("1/2/3", "my-batch-change-b")), template_branch="my-batch-change", want={"my-batch-change": (D1, None), "my-batch-change-a": (D2, None), "my-batch-change-b": (D3, None)}),
    ChangesetCase(VALIDATE_GROUPS + "2 (the same branch twice)", (("a", "my-batch-change-SAME"), ("b", "my-batch-change-SAME")), template_branch="my-batch-change", want=SAME),
    ChangesetCase(VALIDATE_GROUPS + "3 (a group on the template's branch)", (("a", "my-batch-change-SAME"), ("b", "my-batch-change")), template_branch="my-batch-change", want=OWN),
)
# fmt: on


def _changeset_spec(case: ChangesetCase) -> BatchSpec:
    groups = "".join(
        f"    - directory: {json.dumps(d)}\n      branch: {b}\n" for d, b in case.groups
    )
    text = "name: peer\n" + TEMPLATE.replace("my-branch", case.template_branch)
    if case.published is not None:
        text += f"  published: {case.published}\n"
    if groups:
        text += f"transformChanges:\n  group:\n{groups}"
    return load_spec_text(text, "peer.yaml")


@pytest.mark.parametrize("case", CHANGESET_CASES, ids=lambda c: c.source)
def test_changesets_are_built_as_sourcegraphs(case: ChangesetCase) -> None:
    workspace = Workspace(
        repository="github.com/sourcegraph/src-cli",
        repo_path=Path("/nonexistent"),
        branch="my-cool-base-ref",
        commit="f00b4r",
        path="",
        only_fetch_workspace=False,
        search_result_paths=("go.mod", "README"),
    )

    def build() -> list[Any]:
        return build_changesets(
            _changeset_spec(case),
            workspace,
            diff=(D1 + D2 + D3).encode(),
            changes=FileChanges(added=ALL_FILES),
            outputs={},
        )

    if isinstance(case.want, str):
        with pytest.raises(ChangesetError, match=case.want):
            build()
        return
    got = {cs.branch: (cs.diff.decode(), cs.body["published"]) for cs in build()}
    assert got == case.want
    for cs in build():
        assert cs.body["headRef"] == f"refs/heads/{cs.branch}"
        assert cs.body["baseRef"] == "refs/heads/my-cool-base-ref"
        assert cs.body["baseRev"] == "f00b4r"


# -- what is not ported ---------------------------------------------------------------------------

NOT_PORTED = (
    (
        SG + "changeset_specs_test.go TestCreateChangesetSpecs/"
        "publish by branch not matching on an old Sourcegraph version",
        "feature flags of older Sourcegraph versions; runner has one behaviour",
    ),
    (
        SG
        + "changeset_specs_test.go TestCreateChangesetSpecs/publish in UI on an unsupported version",
        "as above",
    ),
    (
        SG + "batch_spec_test.go TestSkippedStepsForRepo",
        "static evaluation of `if` before a run; runner evaluates `if` as each step starts",
    ),
    (
        SG + "batch_spec_test.go TestBatchSpec_RequiredEnvVars",
        "runner resolves step.env through secrets (tests/test_env.py), not a list of names",
    ),
    (
        SG + "overridable/overridable_test.go TestRulesMarshalJSON",
        "runner writes the resolved value per changeset, never the rules",
    ),
    (SG + "overridable/bool_or_string_test.go TestBoolOrStringMarshalJSON", "as above"),
    (
        SG + "published_test.go TestPublishedValue/JSON marshal",
        'runner writes true, false, "draft" or null as JSON itself (tests/test_run_local.py)',
    ),
    (
        SG + "yaml/validate_test.go TestUnmarshalValidate",
        "tests the schema plumbing; runner has no JSON schema step",
    ),
)
PORTED = (
    [c.source for c in MATCH_CASES]
    + [c.source for c in PARSE_CASES]
    + [c.source for c in SPEC_CASES]
    + [c.source for c in MOUNT_CASES]
    + [c.source for c in CHANGESET_CASES]
)


def test_every_case_names_a_source_once() -> None:
    assert len(set(PORTED)) == len(PORTED), Counter(PORTED).most_common(3)
    assert not {source for source, _ in NOT_PORTED} & set(PORTED)
    per_source = Counter(s.split(" ", 2)[0] for s in PORTED)
    assert per_source["sourcegraph/sourcegraph"] >= 50
    assert per_source["sourcegraph/src-cli"] >= 14
