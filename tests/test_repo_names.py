"""How local repositories are named: --repos-root paths, origin remotes, NAME=PATH.

The repositories are built by the tests, each with the remote (or none) the
case needs; the names are checked where a user sees them: `runner env
explain`'s errors and warnings, and on the real engine the results folder and
the changeset's baseRepository.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runner.errors import RepositoryNotFoundError, UsageError
from runner.plan import RepoArg, discover, name_from_remote, parse_repo_arg, plan_workspaces
from runner.spec import load_spec_text
from tests.helpers import TEST_IMAGE, git, make_repo, run_runner, runner_env

# (remote URL, the name runner gives the repository; None: a local remote, the folder names it)
REMOTES: list[tuple[str, str | None]] = [
    ("https://github.com/psf/requests.git", "github.com/psf/requests"),
    ("https://github.com/psf/requests", "github.com/psf/requests"),
    ("https://github.com/psf/requests/", "github.com/psf/requests"),
    ("https://x-access-token:ghp_notreal@github.com/psf/requests.git", "github.com/psf/requests"),
    ("http://GitHub.com:8080/psf/requests.git", "github.com/psf/requests"),
    ("git@github.com:psf/requests.git", "github.com/psf/requests"),
    ("github.com:psf/requests", "github.com/psf/requests"),
    ("ssh://git@host.example:22/a/b.git", "host.example/a/b"),
    ("ssh://git@gitlab.example/group/sub/project.git", "gitlab.example/group/sub/project"),
    ("git://git.example.org/tools/lint", "git.example.org/tools/lint"),
    ("/srv/git/requests.git", None),
    ("../requests", None),
    ("file:///srv/git/requests.git", None),
    ("https://github.com/", None),
    ("https://evil.example/../../etc", None),  # never a path that leaves the results folder
]


@pytest.mark.parametrize(("url", "name"), REMOTES, ids=[u for u, _ in REMOTES])
def test_a_remote_url_gives_host_and_path(url: str, name: str | None) -> None:
    assert name_from_remote(url) == name


@pytest.mark.parametrize(("url", "name"), REMOTES, ids=[u for u, _ in REMOTES])
def test_repo_path_is_named_after_its_origin_remote(
    tmp_path: Path, url: str, name: str | None
) -> None:
    repo = make_repo(tmp_path, "requests-clone", {"a.py": "import os\n"})
    git(repo, "remote", "add", "origin", url)
    git(repo, "remote", "add", "upstream", "https://github.com/someone/else.git")
    (found,) = discover(None, [repo])
    assert found.name == (name or "requests-clone")
    assert found.path == repo.resolve()


def test_without_origin_the_folder_names_it_and_other_remotes_do_not(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "flask", {"app.py": "x\n"})
    git(repo, "remote", "add", "upstream", "https://github.com/pallets/flask.git")
    assert [r.name for r in discover(None, [repo])] == ["flask"]


def test_name_equals_path_names_it_and_wins_over_origin(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "requests", {"a.py": "x\n"})
    git(repo, "remote", "add", "origin", "https://github.com/psf/requests.git")
    arg = parse_repo_arg(f"example.com/mirror/requests={repo}")
    assert arg == RepoArg(repo, "example.com/mirror/requests")
    assert [r.name for r in discover(None, [arg])] == ["example.com/mirror/requests"]


def test_a_path_holding_an_equals_sign_is_a_path_when_it_starts_with_slash_or_dot() -> None:
    assert parse_repo_arg("/tmp/a=b") == RepoArg(Path("/tmp/a=b"))
    assert parse_repo_arg("./a=b") == RepoArg(Path("./a=b"))
    assert parse_repo_arg("a=b") == RepoArg(Path("b"), "a")
    assert parse_repo_arg("plain/path") == RepoArg(Path("plain/path"))
    with pytest.raises(UsageError, match="no path after ="):
        parse_repo_arg("github.com/a/b=")


def test_under_repos_root_the_path_below_it_names_the_repository(tmp_path: Path) -> None:
    root = tmp_path / "root"
    repo = make_repo(root, "github.com/acme/app", {"a": "1\n"})
    git(repo, "remote", "add", "origin", "https://github.com/acme/renamed.git")
    # One rule for the whole root, whether found by walking it or given with --repo.
    assert [r.name for r in discover(root, [repo])] == ["github.com/acme/app"]
    # NAME=PATH renames it; it is not known twice.
    renamed = discover(root, [RepoArg(repo, "example.com/x")])
    assert [r.name for r in renamed] == ["example.com/x"]


def test_two_repositories_with_one_name_are_refused_with_a_way_out(tmp_path: Path) -> None:
    one = make_repo(tmp_path, "one/requests", {"a": "1\n"})
    two = make_repo(tmp_path, "two/requests", {"a": "2\n"})
    for repo in (one, two):
        git(repo, "remote", "add", "origin", "git@github.com:psf/requests.git")
    with pytest.raises(UsageError) as info:
        discover(None, [one, two])
    assert "two repositories are named github.com/psf/requests" in info.value.message
    assert "--repo NAME=" in str(info.value.hint)
    named = discover(None, [one, RepoArg(two, "github.com/psf/requests-fork")])
    assert [r.name for r in named] == ["github.com/psf/requests", "github.com/psf/requests-fork"]
    with pytest.raises(UsageError, match="given twice"):
        discover(None, [one, RepoArg(one, "other/name")])


def test_a_missing_repository_lists_the_names_runner_knows(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for i in range(25):
        make_repo(root, f"github.com/acme/lib{i:02d}", {"a": "1\n"})
    spec = load_spec_text("name: x\non:\n  - repository: github.com/psf/requests\n", "s.yaml")
    with pytest.raises(RepositoryNotFoundError) as info:
        plan_workspaces(spec, discover(root, []))
    hint = str(info.value.hint)
    listed = re.findall(r"github\.com/acme/lib\d\d", hint)
    assert listed == [f"github.com/acme/lib{i:02d}" for i in range(20)]  # the first 20, sorted
    assert "(and 5 more)" in hint
    assert "--repo github.com/psf/requests=PATH" in hint
    assert "s.yaml:3" in info.value.message


SPEC_REPOSITORY = """name: names
on:
  - repository: github.com/psf/requests
steps:
  - run: echo hello > hello.txt
    container: {image}
changesetTemplate:
  title: Add hello
  body: Made in ${{{{ repository.name }}}}
  branch: runner/hello
  commit:
    message: Add hello
"""


def write_spec(tmp_path: Path) -> Path:
    spec = tmp_path / "spec" / "batch.yaml"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(SPEC_REPOSITORY.format(image=TEST_IMAGE))
    return spec


def test_the_cli_error_for_a_missing_repository_names_what_it_knows(tmp_path: Path) -> None:
    flask = make_repo(tmp_path, "flask", {"a": "1\n"})
    env = runner_env(tmp_path / "home")
    proc = run_runner(["env", "explain", str(write_spec(tmp_path)), "--repo", str(flask)], env)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert "repository github.com/psf/requests" in lines[first]
    details = " ".join(line.strip() for line in lines[first + 1 :])
    assert "runner knows flask;" in details
    assert "--repo github.com/psf/requests=PATH" in details


def test_help_explains_how_repositories_are_named(tmp_path: Path) -> None:
    for command in (["run", "--help"], ["env", "explain", "--help"]):
        proc = run_runner(command, runner_env(tmp_path / "home"))
        text = " ".join(proc.stdout.split())
        assert "--repo [NAME=]PATH" in text
        assert "named by its path below --repos-root" in text
        assert "origin remote" in text
        assert "git@github.com:org/repo.git are github.com/org/repo" in text
        assert "NAME=PATH names it yourself" in text
        assert "each named by its path below it" in text


@pytest.mark.docker
@pytest.mark.usefixtures("docker_client")
def test_a_run_over_repo_path_uses_the_origin_name_for_its_results(tmp_path: Path) -> None:
    clone = make_repo(tmp_path, "work/requests", {"README.md": "# requests\n"})
    git(clone, "remote", "add", "origin", "https://github.com/psf/requests.git")
    renamed = make_repo(tmp_path, "work/other", {"README.md": "# other\n"})
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = runner_env(tmp_path / "home", TMPDIR=str(tmp))
    spec = write_spec(tmp_path)
    spec.write_text(
        spec.read_text().replace(
            "  - repository: github.com/psf/requests\n",
            "  - repository: github.com/psf/requests\n  - repository: example.com/other\n",
        )
    )
    out = tmp_path / "out"
    args = ["run", str(spec), "--repo", str(clone), "--repo", f"example.com/other={renamed}"]
    proc = run_runner([*args, "--out", str(out), "--json", "-j", "1"], env)
    assert proc.returncode == 0, proc.stderr
    for name in ("github.com/psf/requests", "example.com/other"):
        changeset = json.loads((out / name / "_root" / "runner-hello.json").read_text())
        assert changeset["baseRepository"] == name
        assert changeset["body"] == f"Made in {name}"
    assert "ghp_" not in proc.stdout + proc.stderr
