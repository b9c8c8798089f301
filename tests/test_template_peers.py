"""Template behaviour from Sourcegraph's and src-cli's own test suites, through runner.

Each case names the peer test it came from. Where a case asks what Go renders,
Go decides: its template is a case of tests/template_oracle/cases.json (named
``peer …``, with a ``source``), rendered there by Go and by runner's engine
alike; here the same template goes through runner's own pipeline (the step
loop's contexts, changeset rendering) and must still give Go's answer. The
rest (which specs validate, what a condition means) is data in
tests/data/template_peer_cases.json, checked against runner's validation and
step loop.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner.changeset import FileChanges, build_changesets
from runner.errors import SpecError
from runner.plan import Workspace
from runner.spec import load_spec_text
from runner.spec.template import condition_holds
from runner.testing import FakeRuntime, FakeStepRun
from tests.helpers import make_repo
from tests.test_steps_unit import IMAGE, IMAGE_ID, Harness, step
from tests.test_template_oracle import CASES, go_results

__all__ = ["go_results"]  # a fixture, imported for this module's tests

DATA: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "template_peer_cases.json").read_text(encoding="utf-8")
)
ORACLE = {c["name"]: c for c in CASES}
PEER_ORACLE = [c for c in CASES if c["name"].startswith("peer")]
TAIL = "changesetTemplate:\n  title: t\n  body: b\n  branch: b\n  commit:\n    message: m\n"
DIFF = b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"


def go_output(results: dict[str, dict[str, Any]], name: str) -> str:
    result = results[name]
    assert not result.get("error"), result.get("message")
    output: str = result["output"]
    return output


def test_every_ported_case_names_its_source() -> None:
    assert len(PEER_ORACLE) >= 50
    assert all(c.get("source") for c in PEER_ORACLE)
    for section in ("validation", "conditions"):
        assert all(c.get("from") for c in DATA[section])


# -- validation (TestValidateBatchSpecTemplate) ------------------------------------------


def spec_text(case: dict[str, Any]) -> str:
    run = json.dumps(case.get("run", "echo ok"))
    title = json.dumps(case.get("title", "t"))
    return (
        f"name: peer\non:\n  - repository: github.com/a/b\nsteps:\n"
        f"  - run: {run}\n    container: alpine:3\n"
        f"changesetTemplate:\n  title: {title}\n  body: b\n  branch: b\n  commit:\n    message: m\n"
    )


@pytest.mark.parametrize(
    "case", DATA["validation"], ids=[f"{i}" for i in range(len(DATA["validation"]))]
)
def test_validation_as_sourcegraph_validates(case: dict[str, Any]) -> None:
    text = spec_text(case)
    if case["valid"]:
        load_spec_text(text, "peer.yaml")
        return
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "peer.yaml")
    messages = [p.message for p in info.value.problems]
    assert len(messages) == 1, messages
    assert case["names"] in messages[0]


# -- the step loop: contexts, conditions, previous results --------------------------------


@pytest.fixture
def src_cli(tmp_path: Path) -> Harness:
    """The peers' test repository, worked on in the sub-directory their tests use."""
    repo = make_repo(
        tmp_path / "repos",
        "github.com/sourcegraph/src-cli",
        {
            "README.md": "# Welcome to the README\n",
            "main.go": 'package main\n\nfunc main() {\n\tfmt.Println(     "Hello World")\n}\n',
            "sub/directory/of/repo/README.md": "# sub\n",
        },
    )
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    workspace = Workspace(
        repository="github.com/sourcegraph/src-cli",
        repo_path=repo,
        branch="main",
        commit=commit,
        path="sub/directory/of/repo",
        only_fetch_workspace=False,
        search_result_paths=(),
    )
    (tmp_path / "work").mkdir()
    return Harness(workspace, tmp_path)


@pytest.fixture
def app(tmp_path: Path) -> Harness:
    repo = make_repo(tmp_path / "repos", "github.com/acme/app", {"README.md": "hello\n"})
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    workspace = Workspace("github.com/acme/app", repo, "main", commit, "", False, ())
    (tmp_path / "work").mkdir()
    return Harness(workspace, tmp_path)


def capture_scripts(h: Harness, play: Callable[[FakeStepRun], int] = lambda run: 0) -> list[str]:
    """Play every step with ``play``, keeping the rendered scripts in order."""
    scripts: list[str] = []

    def handler(run: FakeStepRun) -> int:
        scripts.append(run.step.script)
        return play(run)

    h.runtime = FakeRuntime(handler=handler, images={IMAGE: IMAGE_ID})
    return scripts


@pytest.mark.parametrize(
    "case", DATA["conditions"], ids=[f"{i}" for i in range(len(DATA["conditions"]))]
)
def test_step_conditions_as_sourcegraph_evaluates_them(
    case: dict[str, Any], src_cli: Harness, go_results: dict[str, dict[str, Any]]
) -> None:
    if "oracle" in case:
        # The peer's verdict, from what Go renders for the same condition.
        assert ORACLE[case["oracle"]]["template"] == case["if"]
        assert condition_holds(go_output(go_results, case["oracle"])) is case["want"]
    scripts = capture_scripts(src_cli)
    result, events = src_cli.run(step("probe", f"if: {json.dumps(case['if'])}"))
    assert result.status == "unchanged", result.error
    assert (scripts == ["probe"]) is case["want"]
    assert bool(events.named("step.skipped")) is not case["want"]


def test_a_first_step_sees_step_and_previous_step_empty(
    app: Harness, go_results: dict[str, dict[str, Any]]
) -> None:
    """TestRenderStepTemplate/empty context: `step` exists before the step ran, empty."""
    name = "peer render step template, first step of a run"
    scripts = capture_scripts(app)
    result, _ = app.run(step(json.dumps(ORACLE[name]["template"])))
    assert result.status == "unchanged", result.error
    assert scripts == [go_output(go_results, name)]


def test_templated_steps_chain_through_previous_results_and_outputs(src_cli: Harness) -> None:
    """src-cli executor_test.go TestExecutor_Integration/templated steps, on the fake runtime."""
    root = Workspace(**{**src_cli.workspace.__dict__, "path": ""})
    src_cli.workspace = root

    def play(run: FakeStepRun) -> int:
        script = run.step.script.strip()
        if script == "go fmt main.go":
            path = run.host_path("main.go")
            path.write_text(path.read_text().replace("(     ", "("))
        elif script.startswith("touch "):
            run.host_path(script.removeprefix("touch ")).write_text("")
        elif script == 'echo "hello.txt"':
            run.stdout("hello.txt\n")
        return 0

    scripts = capture_scripts(src_cli, play)
    steps = (
        step("go fmt main.go")
        + step(json.dumps('touch modified-${{ join previous_step.modified_files " " }}.md'))
        + step(json.dumps('touch added-${{ join previous_step.added_files " " }}'))
        + step(
            json.dumps('echo "hello.txt"'),
            "outputs:",
            "  myOutput:",
            "    value: ${{ step.stdout }}",
        )
        + step(json.dumps("touch output-${{ outputs.myOutput }}"))
    )
    result, _ = src_cli.run(steps)
    assert result.status == "changed", result.error
    assert [s.strip() for s in scripts] == [
        "go fmt main.go",
        "touch modified-main.go.md",
        "touch added-modified-main.go.md",
        'echo "hello.txt"',
        "touch output-hello.txt",
    ]
    assert sorted(result.changes.paths) == [
        "added-modified-main.go.md",
        "main.go",
        "modified-main.go.md",
        "output-hello.txt",
    ]


@pytest.mark.parametrize(
    ("repository", "path", "want"),
    [
        ("github.com/sourcegraph/src-cli", "", []),
        (
            "github.com/sourcegraph/sourcegraph",
            "sub/directory/of/repo",
            ["hello.txt", "in-path.txt"],
        ),
    ],
)
def test_step_conditions_per_workspace(
    src_cli: Harness, repository: str, path: str, want: list[str]
) -> None:
    """src-cli executor_test.go TestExecutor_Integration/step condition."""
    src_cli.workspace = Workspace(
        **{**src_cli.workspace.__dict__, "repository": repository, "path": path}
    )
    scripts = capture_scripts(src_cli)
    by_name = '${{ matches repository.name "github.com/sourcegraph/sourcegra*" }}'
    by_path = '${{ matches steps.path "sub/directory/of/repo" }}'
    steps = (
        step("first")
        + step("hello", f"if: {json.dumps(by_name)}")
        + step("in-path", f"if: {json.dumps(by_path)}")
    )
    result, _ = src_cli.run(steps)
    assert result.error is None
    ran = [s.strip() for s in scripts][1:]
    assert [f"{name}.txt" for name in ran] == want


# -- changeset templates ------------------------------------------------------------------


def changesets_for(context: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    """The one changeset build_changesets makes from ``fields`` over a peer's context."""
    template = "changesetTemplate:\n" + "".join(
        f"  {key}: {json.dumps(fields.get(key, key))}\n" for key in ("title", "body", "branch")
    )
    author = fields.get("author")
    template += f"  commit:\n    message: {json.dumps(fields.get('message', 'm'))}\n"
    if author is not None:
        template += (
            f"    author:\n      name: {json.dumps(author)}\n      email: {json.dumps(author)}\n"
        )
    batch = context["batch_change"]
    spec = load_spec_text(
        f"name: {batch['name'] or 'x'}\ndescription: {json.dumps(batch['description'])}\n"
        + template,
        "peer.yaml",
    )
    repository = context["repository"]
    steps = context["steps"]
    workspace = Workspace(
        repository=repository["name"],
        repo_path=Path("/nonexistent"),
        branch=repository["branch"] or "main",
        commit="0" * 40,
        path=steps["path"],
        only_fetch_workspace=False,
        search_result_paths=tuple(repository["search_result_paths"]),
    )
    changes = FileChanges(
        modified=tuple(steps["modified_files"]),
        added=tuple(steps["added_files"]),
        deleted=tuple(steps["deleted_files"]),
        renamed=tuple(steps["renamed_files"]),
    )
    [built] = build_changesets(
        spec, workspace, diff=DIFF, changes=changes, outputs=context["outputs"]
    )
    return built.body


def go_trimmed(results: dict[str, dict[str, Any]], name: str) -> str:
    # Sourcegraph trims changeset fields with strings.TrimSpace.
    return go_output(results, name).strip(" \t\n")


@pytest.mark.parametrize(
    "name",
    ["peer render changeset field, all names", "peer render changeset field, empty context"],
)
def test_changeset_fields_render_as_go_and_keep_batch_change_link(
    name: str, go_results: dict[str, dict[str, Any]]
) -> None:
    """TestRenderChangesetTemplateField: every name, and ${{ batch_change_link }} kept as written."""
    case = ORACLE[name]
    body = changesets_for(case["context"], {"title": case["template"], "body": case["template"]})
    want = go_trimmed(go_results, name)
    assert want.endswith("${{ batch_change_link }}")
    assert body["title"] == want
    assert body["body"] == want


def test_templated_changeset_template(go_results: dict[str, dict[str, Any]]) -> None:
    """src-cli coordinator_test.go TestCoordinator_Execute/templated changesetTemplate."""
    prefix = "peer src-cli templated changeset "
    fields = {
        "title": ORACLE[prefix + "title"]["template"],
        "body": ORACLE[prefix + "body"]["template"],
        "branch": ORACLE[prefix + "branch"]["template"],
        "message": ORACLE[prefix + "commit message"]["template"],
        "author": ORACLE[prefix + "author"]["template"],
    }
    body = changesets_for(ORACLE[prefix + "title"]["context"], fields)
    assert body["title"] == go_trimmed(go_results, prefix + "title")
    assert body["body"] == go_trimmed(go_results, prefix + "body")
    assert body["headRef"] == "refs/heads/" + go_trimmed(go_results, prefix + "branch")
    [commit] = body["commits"]
    assert commit["message"] == go_trimmed(go_results, prefix + "commit message")
    assert (
        commit["authorName"] == commit["authorEmail"] == go_trimmed(go_results, prefix + "author")
    )


def test_changeset_fields_are_trimmed_as_go_trims_them() -> None:
    """Sourcegraph's RenderChangesetTemplateField trims with strings.TrimSpace."""
    context = ORACLE["peer src-cli templated changeset title"]["context"]
    body = changesets_for(context, {"title": "\u2003 ${{ outputs.output1 }}\t\n", "body": "\x1cb "})
    assert body["title"] == "myOutputValue1"
    assert body["body"] == "\x1cb"  # Go's TrimSpace keeps U+001C; Python's strip() would not
