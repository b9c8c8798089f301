"""Each validation rule, with a broken spec that checks the reported line."""

from __future__ import annotations

import textwrap
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


def test_step_is_only_known_inside_outputs(tmp_path: Path) -> None:
    ok = (
        "name: a\nsteps:\n  - run: x\n    container: c\n    outputs:\n"
        "      o:\n        value: ${{ step.stdout }}\n" + GOOD_TAIL
    )
    load_spec(write(tmp_path, ok))
    text = "name: a\nsteps:\n  - run: echo ${{ step.stdout }}\n    container: c\n" + GOOD_TAIL
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
