"""Each validation rule, with a broken spec that checks the reported line."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.errors import SpecError
from runner.spec import load_spec

GOOD_TAIL = """
changesetTemplate:
  title: t
  branch: b
  commit:
    message: m
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems(tmp_path: Path, text: str) -> list[tuple[int, str]]:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    return [(p.line, p.message) for p in info.value.problems]


def only_problem(tmp_path: Path, text: str) -> tuple[int, str]:
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


def test_minimal_spec_is_valid_and_on_stays_a_string_key(tmp_path: Path) -> None:
    spec = load_spec(
        write(
            tmp_path,
            textwrap.dedent(
                """
            name: hello
            on:
              - repository: github.com/a/b
                branch: yes
            steps:
              - run: echo on off yes no
                container: alpine
                env:
                  FLAG: off
            """
            ).lstrip("\n")
            + GOOD_TAIL,
        )
    )
    assert spec.name == "hello"
    assert spec.version == 1
    assert "on" in spec.raw and True not in spec.raw
    assert spec.on[0].branches == ("yes",)  # type: ignore[union-attr]
    assert spec.steps[0].env[0].value == "off"


def test_duplicate_key_points_at_the_second(tmp_path: Path) -> None:
    line, message = only_problem(tmp_path, "name: a\ndescription: x\nname: b\n")
    assert line == 3 and "duplicate key 'name'" in message and "line 1" in message


def test_python_tags_are_refused(tmp_path: Path) -> None:
    line, message = only_problem(tmp_path, "name: a\ndescription: !!python/object:os.system x\n")
    assert line == 2 and "not allowed" in message


def test_version_must_be_1_or_2(tmp_path: Path) -> None:
    assert load_spec(write(tmp_path, "version: 2\nname: a\n")).version == 2
    line, message = only_problem(tmp_path, "name: a\nversion: 3\n")
    assert line == 2 and "version must be 1 or 2" in message


def test_name_is_required_and_pointed_at_the_mapping(tmp_path: Path) -> None:
    line, message = only_problem(tmp_path, "description: x\n")
    assert line == 1 and "missing the required key 'name'" in message


def test_name_pattern(tmp_path: Path) -> None:
    line, message = only_problem(tmp_path, "description: x\nname: has spaces\n")
    assert line == 2 and "may contain only" in message


def test_unknown_key_suggests_the_near_miss(tmp_path: Path) -> None:
    line, message = only_problem(tmp_path, "name: a\ndescripton: x\n")
    assert line == 2 and "did you mean 'description'" in message


def test_on_item_needs_query_or_repository(tmp_path: Path) -> None:
    line, message = only_problem(tmp_path, "name: a\non:\n  - branch: main\n")
    assert line == 3 and "repositoriesMatchingQuery or repository" in message


def test_on_branch_and_branches_not_both(tmp_path: Path) -> None:
    text = "name: a\non:\n  - repository: r\n    branch: x\n    branches: [y]\n"
    line, message = only_problem(tmp_path, text)
    assert line == 5 and "not both" in message


def test_on_query_with_extra_key(tmp_path: Path) -> None:
    text = "name: a\non:\n  - repositoriesMatchingQuery: x\n    branch: y\n"
    line, message = only_problem(tmp_path, text)
    assert line == 4 and "cannot go with" in message


def test_workspaces_require_root_at_location_of(tmp_path: Path) -> None:
    text = "name: a\nworkspaces:\n  - in: github.com/*\n"
    line, message = only_problem(tmp_path, text)
    assert line == 3 and "rootAtLocationOf" in message


def test_workspaces_only_fetch_is_boolean(tmp_path: Path) -> None:
    text = "name: a\nworkspaces:\n  - rootAtLocationOf: go.mod\n    onlyFetchWorkspace: yes\n"
    line, message = only_problem(tmp_path, text)
    assert line == 4 and "true or false" in message


def test_transform_group_requires_branch(tmp_path: Path) -> None:
    text = "name: a\ntransformChanges:\n  group:\n    - directory: x\n"
    line, message = only_problem(tmp_path, text)
    assert line == 4 and "'branch'" in message


def test_import_changesets_require_external_ids(tmp_path: Path) -> None:
    text = "name: a\nimportChangesets:\n  - repository: r\n"
    line, message = only_problem(tmp_path, text)
    assert line == 3 and "externalIDs" in message


def test_import_changesets_ids_are_strings_or_numbers(tmp_path: Path) -> None:
    spec = load_spec(
        write(
            tmp_path, "name: a\nimportChangesets:\n  - repository: r\n    externalIDs: [12, '13']\n"
        )
    )
    assert spec.import_changesets[0].external_ids == ("12", "13")
    text = "name: a\nimportChangesets:\n  - repository: r\n    externalIDs:\n      - [1]\n"
    line, message = only_problem(tmp_path, text)
    assert line == 5 and "string or a whole number" in message


@pytest.mark.parametrize("missing", ["title", "branch", "commit"])
def test_changeset_template_required_keys(tmp_path: Path, missing: str) -> None:
    fields = {
        "title": "  title: t\n",
        "branch": "  branch: b\n",
        "commit": "  commit:\n    message: m\n",
    }
    body = "".join(v for k, v in fields.items() if k != missing)
    line, message = only_problem(tmp_path, "name: a\nchangesetTemplate:\n" + body)
    assert line == 3 and repr(missing) in message


def test_changeset_commit_message_required(tmp_path: Path) -> None:
    text = "name: a\nchangesetTemplate:\n  title: t\n  branch: b\n  commit:\n    author: {name: n, email: e}\n"
    line, message = only_problem(tmp_path, text)
    assert line == 6 and "'message'" in message


def test_commit_author_needs_email(tmp_path: Path) -> None:
    text = "name: a\nchangesetTemplate:\n  title: t\n  branch: b\n  commit:\n    message: m\n    author:\n      name: n\n"
    line, message = only_problem(tmp_path, text)
    assert line == 8 and "'email'" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("false", False), ("draft", "draft"), ('"draft"', "draft")],
)
def test_published_scalar_forms(tmp_path: Path, value: str, expected: object) -> None:
    spec = load_spec(write(tmp_path, "name: a\n" + GOOD_TAIL + f"  published: {value}\n"))
    assert spec.changeset_template is not None
    assert spec.changeset_template.published == expected


def test_published_yes_is_not_a_boolean(tmp_path: Path) -> None:
    line, message = only_problem(
        tmp_path, "name: a\n" + GOOD_TAIL.lstrip("\n") + "  published: yes\n"
    )
    assert line == 7 and '"draft"' in message


def test_published_rules(tmp_path: Path) -> None:
    text = (
        "name: a\n"
        + GOOD_TAIL.lstrip("\n")
        + "  published:\n    - github.com/*: true\n    - x@main: draft\n    - y: maybe\n"
    )
    line, message = only_problem(tmp_path, text)
    assert line == 10 and "published[3]" in message


def test_steps_need_run_and_container(tmp_path: Path) -> None:
    text = "name: a\nsteps:\n  - run: x\n" + GOOD_TAIL
    line, message = only_problem(tmp_path, text)
    assert line == 3 and "'container'" in message


def test_unknown_step_key(tmp_path: Path) -> None:
    text = "name: a\nsteps:\n  - run: x\n    container: c\n    evn: {}\n" + GOOD_TAIL
    line, message = only_problem(tmp_path, text)
    assert line == 5 and "did you mean 'env'" in message


def test_steps_require_a_changeset_template(tmp_path: Path) -> None:
    line, message = only_problem(tmp_path, "name: a\nsteps:\n  - run: x\n    container: c\n")
    assert line == 1 and "changesetTemplate" in message


def test_env_forms(tmp_path: Path) -> None:
    text = (
        "name: a\nsteps:\n  - run: x\n    container: c\n    env:\n"
        "      - GH_TOKEN\n      - LITERAL: value\n" + GOOD_TAIL
    )
    spec = load_spec(write(tmp_path, text))
    env = spec.steps[0].env
    assert [(e.name, e.value, e.pos.line) for e in env] == [
        ("GH_TOKEN", None, 6),
        ("LITERAL", "value", 7),
    ]
    assert spec.steps[0].env_form == "list"


def test_env_list_item_with_two_keys(tmp_path: Path) -> None:
    text = (
        "name: a\nsteps:\n  - run: x\n    container: c\n    env:\n      - {A: b, C: d}\n"
        + GOOD_TAIL
    )
    line, message = only_problem(tmp_path, text)
    assert line == 6 and "exactly one" in message


def test_env_value_must_be_string(tmp_path: Path) -> None:
    text = "name: a\nsteps:\n  - run: x\n    container: c\n    env:\n      N: 4\n" + GOOD_TAIL
    line, message = only_problem(tmp_path, text)
    assert line == 6 and "quote it" in message


def test_env_as_string_is_refused(tmp_path: Path) -> None:
    text = "name: a\nsteps:\n  - run: x\n    container: c\n    env: FOO\n" + GOOD_TAIL
    line, message = only_problem(tmp_path, text)
    assert line == 5 and "mapping, a list or null" in message


def test_outputs_need_value_and_known_format(tmp_path: Path) -> None:
    text = (
        "name: a\nsteps:\n  - run: x\n    container: c\n    outputs:\n"
        "      a:\n        format: json\n      b:\n        value: x\n        format: toml\n"
        + GOOD_TAIL
    )
    found = problems(tmp_path, text)
    assert [line for line, _ in found] == [7, 10]
    assert "'value'" in found[0][1] and "json, yaml or text" in found[1][1]


def test_mount_refuses_commas(tmp_path: Path) -> None:
    text = (
        "name: a\nsteps:\n  - run: x\n    container: c\n    mount:\n"
        "      - path: a,b\n        mountpoint: /x\n" + GOOD_TAIL
    )
    line, message = only_problem(tmp_path, text)
    assert line == 6 and "comma" in message


def test_if_must_be_bool_string_or_null(tmp_path: Path) -> None:
    ok = "name: a\nsteps:\n  - run: x\n    container: c\n    if: true\n" + GOOD_TAIL
    assert load_spec(write(tmp_path, ok)).steps[0].if_ is True
    text = "name: a\nsteps:\n  - run: x\n    container: c\n    if: 3\n" + GOOD_TAIL
    line, message = only_problem(tmp_path, text)
    assert line == 5 and "boolean, a string or null" in message


def test_files_targets_are_absolute(tmp_path: Path) -> None:
    text = (
        "name: a\nsteps:\n  - run: x\n    container: c\n    files:\n      rel/path: x\n" + GOOD_TAIL
    )
    line, message = only_problem(tmp_path, text)
    assert line == 6 and "absolute" in message


def test_template_parse_error_points_at_its_line(tmp_path: Path) -> None:
    text = "name: a\nsteps:\n  - run: echo ${{ if }}\n    container: c\n" + GOOD_TAIL
    line, message = only_problem(tmp_path, text)
    assert line == 3 and "steps[1].run" in message


def test_unknown_field_of_a_fixed_object(tmp_path: Path) -> None:
    text = (
        "name: a\nsteps:\n  - run: |\n      echo hi\n      echo ${{ repository.nmae }}\n"
        "    container: c\n" + GOOD_TAIL
    )
    line, message = only_problem(tmp_path, text)
    assert line == 5 and "repository.nmae" in message and "repository.name" in message


def test_unknown_root_variable(tmp_path: Path) -> None:
    text = "name: a\nsteps:\n  - run: echo ${{ repo.name }}\n    container: c\n" + GOOD_TAIL
    line, message = only_problem(tmp_path, text)
    assert line == 3 and "repo" in message


def test_step_is_known_in_every_step_field_as_sourcegraph_has_it(tmp_path: Path) -> None:
    # Issue 16: Sourcegraph renders `step` before the step runs as an empty result.
    ok = (
        "name: a\nsteps:\n  - run: x\n    container: c\n    outputs:\n"
        "      o:\n        value: ${{ step.stdout }}\n" + GOOD_TAIL
    )
    load_spec(write(tmp_path, ok))
    ok = "name: a\nsteps:\n  - run: echo ${{ step.stdout }}\n    container: c\n" + GOOD_TAIL
    load_spec(write(tmp_path, ok))
    # batch_change_link is a changeset template name only; src-cli cannot render it in a step.
    text = "name: a\nsteps:\n  - run: echo ${{ batch_change_link }}\n    container: c\n" + GOOD_TAIL
    line, _ = only_problem(tmp_path, text)
    assert line == 3


def test_previous_step_is_unknown_in_changeset_template(tmp_path: Path) -> None:
    text = "name: a\nchangesetTemplate:\n  title: ${{ previous_step.stdout }}\n  branch: b\n  commit:\n    message: m\n"
    line, _ = only_problem(tmp_path, text)
    assert line == 3


def test_outputs_paths_are_not_checked(tmp_path: Path) -> None:
    text = (
        "name: a\nsteps:\n  - run: echo ${{ outputs.packageManagers.usesYarn }}\n"
        "    container: c\n" + GOOD_TAIL
    )
    load_spec(write(tmp_path, text))


def test_every_problem_is_reported_in_file_order(tmp_path: Path) -> None:
    text = "name: bad name\nversion: 9\nsteps:\n  - run: x\n"
    found = problems(tmp_path, text)
    assert [line for line, _ in found] == [1, 1, 2, 4]


def test_missing_file_and_invalid_utf8(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: a\ndescription: \xff\n")
    with pytest.raises(SpecError, match="not valid UTF-8") as info:
        load_spec(bad)
    assert info.value.problems[0].line == 2


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 10):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    text = "name: bomb\n" + "\n".join(lines) + "\n"
    found = problems(tmp_path, text)
    assert "alias" in found[0][1]


# Mounts through the CLI ------------------------------------------------------------------------

BAD_MOUNTS = """\
name: mounts
steps:
  - run: x
    container: c
    mount:
      - path: ./data.txt
        mountpoint: /in/data.txt
      - path: ./missing.txt
        mountpoint: /in/missing.txt
      - path: ../outside.txt
        mountpoint: /in/outside.txt
  - run: y
    container: c
    mount:
      - path: ./link
        mountpoint: /in/link
      - path: ../specs-other/x.txt
        mountpoint: /in/x.txt
      - path: ./tools/
        mountpoint: /tools
"""
# line, column and message of each bad entry above
BAD_MOUNT_PROBLEMS = [
    (8, 9, "steps[1].mount[2]: mount path './missing.txt' does not exist next to the spec"),
    (10, 9, "steps[1].mount[3]: mount path '../outside.txt' leaves the spec's folder"),
    (15, 9, "steps[2].mount[1]: mount path './link' leaves the spec's folder"),
    (17, 9, "steps[2].mount[2]: mount path '../specs-other/x.txt' leaves the spec's folder"),
]


def bad_mounts_spec(tmp_path: Path) -> Path:
    """A spec in ``specs/`` with one good mount and four bad ones; ``specs-other`` shares its prefix."""
    folder = tmp_path / "specs"
    (folder / "tools").mkdir(parents=True)
    (folder / "data.txt").write_text("data\n")
    (tmp_path / "outside.txt").write_text("outside\n")
    (tmp_path / "specs-other").mkdir()
    (tmp_path / "specs-other" / "x.txt").write_text("x\n")
    (folder / "link").symlink_to(tmp_path / "outside.txt")
    spec = folder / "batch.yaml"
    spec.write_text(BAD_MOUNTS + GOOD_TAIL)
    return spec


def test_runner_validate_refuses_each_bad_mount_at_its_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from runner.cli import run_cli

    spec = bad_mounts_spec(tmp_path)
    assert run_cli(["validate", str(spec)]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith(str(spec))]
    assert len(lines) == len(BAD_MOUNT_PROBLEMS), captured.err
    for got, (line, column, message) in zip(lines, BAD_MOUNT_PROBLEMS, strict=True):
        assert got.startswith(f"{spec}:{line}:{column}: {message}"), got
    assert "create " + str(spec.parent / "missing.txt") in captured.err
    assert captured.out == ""
    assert run_cli(["validate", "--json", str(spec)]) == 1
    (result,) = json.loads(capsys.readouterr().out)
    assert [(p["line"], p["column"]) for p in result["problems"]] == [
        (line, column) for line, column, _ in BAD_MOUNT_PROBLEMS
    ]
    # With the files where they belong the same spec is fine.
    fixed = BAD_MOUNTS.replace("../outside.txt", "./data.txt").replace("./link", "./data.txt")
    spec.write_text(fixed.replace("../specs-other/x.txt", "./tools") + GOOD_TAIL)
    (spec.parent / "missing.txt").touch()
    assert run_cli(["validate", str(spec)]) == 0
    assert capsys.readouterr().out.startswith(f"ok {spec} (mounts: 2 steps)")


def test_library_loading_leaves_mounts_to_the_step_loop(tmp_path: Path) -> None:
    spec = bad_mounts_spec(tmp_path)
    assert len(load_spec(spec).steps[1].mounts) == 3
    with pytest.raises(SpecError) as info:
        load_spec(spec, check_mounts=True)
    assert [(p.line, p.column) for p in info.value.problems] == [
        (line, column) for line, column, _ in BAD_MOUNT_PROBLEMS
    ]


def test_runner_validate_reads_stdin_with_mounts_relative_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io
    import sys

    from runner.cli import run_cli

    spec = bad_mounts_spec(tmp_path)
    monkeypatch.chdir(spec.parent)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(spec.read_bytes())))
    assert run_cli(["validate", "-"]) == 1
    err = capsys.readouterr().err
    assert f"mount paths are relative to the current folder, {spec.parent}" in err
    for line, column, message in BAD_MOUNT_PROBLEMS:
        assert f"<stdin>:{line}:{column}: {message}" in err
    # From another folder the good mount is missing too: it is the current folder that counts.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(spec.read_bytes())))
    assert run_cli(["validate", "-"]) == 1
    err = capsys.readouterr().err
    assert "<stdin>:6:9: steps[1].mount[1]: mount path './data.txt' does not exist" in err


def test_runner_validate_refuses_an_invalid_glob_with_its_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from runner.cli import run_cli

    text = (
        "name: a\nworkspaces:\n  - rootAtLocationOf: go.mod\n    in: github.com/[z-a]\n"
        + GOOD_TAIL
        + "  published:\n    - github.com/{a,b}/*: draft\n    - 'github.com/[': true\n"
    )
    spec = write(tmp_path, text)
    assert run_cli(["validate", str(spec)]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:4:9: workspaces[1].in: 'github.com/[z-a]' is not a valid glob pattern" in err
    assert (
        f"{spec}:13:7: changesetTemplate.published[2]: 'github.com/[' is not a valid glob pattern"
        in err
    )
    assert "published[1]" not in err


@pytest.fixture
def coordinator_url(tmp_path: Path) -> Iterator[tuple[dict[str, str], str, Path]]:
    """A coordinator in a subprocess, a client environment and alice's token file."""
    import signal
    import subprocess
    import time

    import httpx

    from tests.helpers import RUNNER, run_runner, runner_env
    from tests.test_queue_support import free_port

    server_env = runner_env(tmp_path / "server-home")
    made = run_runner(["token", "create", "--user", "alice"], server_env)
    assert made.returncode == 0, made.stderr
    token = tmp_path / "alice.token"
    token.write_text(made.stdout.strip() + "\n")
    token.chmod(0o600)
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [RUNNER, "server", "--listen", url.removeprefix("http://")],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                httpx.get(url + "/openapi.json", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        yield runner_env(tmp_path / "client-home"), url, token
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_runner_submit_refuses_each_bad_mount_before_uploading(
    tmp_path: Path, coordinator_url: tuple[dict[str, str], str, Path]
) -> None:
    from tests.helpers import run_runner

    env, url, token = coordinator_url
    spec = bad_mounts_spec(tmp_path)
    remote = ["--url", url, "--token-file", str(token)]
    proc = run_runner(["submit", str(spec), *remote], env)
    assert proc.returncode == 1, proc.stderr
    for line, column, message in BAD_MOUNT_PROBLEMS:
        assert f"{spec}:{line}:{column}: {message}" in proc.stderr
    assert "Traceback" not in proc.stderr
    listed = run_runner(["jobs", "list", "--json", *remote], env)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
