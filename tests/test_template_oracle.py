"""The template engine against Go itself.

tests/template_oracle/main.go renders every case of cases.json with Go's
text/template, set up as src-cli sets it up; each case here renders the same
template with ``render_template`` and must produce the same text, or fail
where Go fails. No expected output is written by hand.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runner.errors import TemplateError
from runner.spec.template import SearchResultPaths, render_template

ORACLE_DIR = Path(__file__).parent / "template_oracle"
CASES_FILE = ORACLE_DIR / "cases.json"
TABLE: dict[str, Any] = json.loads(CASES_FILE.read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = TABLE["cases"]


@pytest.fixture(scope="module")
def go_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    go = shutil.which("go") or ("/usr/bin/go" if Path("/usr/bin/go").exists() else None)
    if go is None:
        message = "the Go toolchain is not installed (apt-get install golang-go)"
        if os.environ.get("RUNNER_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    work = tmp_path_factory.mktemp("template-oracle")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "GOCACHE": str(work / "gocache"),
        "GOPATH": str(work / "gopath"),
        "GOTOOLCHAIN": "local",
        "GOPROXY": "off",
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
    }
    binary = work / "oracle"
    subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=ORACLE_DIR,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    done = subprocess.run(
        [str(binary), str(CASES_FILE)], env=env, check=True, capture_output=True, timeout=120
    )
    results = json.loads(done.stdout)
    return {r["name"]: r for r in results}


def _context(case: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = copy.deepcopy(case.get("context", TABLE["default_context"]))
    for mark in case.get("search_result_paths", []):
        *parents, last = mark.split(".")
        holder = context
        for key in parents:
            holder = holder[key]
        holder[last] = SearchResultPaths(holder[last])
    return context


def test_the_table_is_broad() -> None:
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    assert len(CASES) >= 60


def test_go_answers_every_case(go_results: dict[str, dict[str, Any]]) -> None:
    assert set(go_results) == {c["name"] for c in CASES}
    # The table must exercise both sides: renders that work and ones Go refuses.
    errors = sum(1 for r in go_results.values() if r.get("error"))
    assert 20 <= errors <= len(CASES) - 20


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_matches_go(case: dict[str, Any], go_results: dict[str, dict[str, Any]]) -> None:
    expected = go_results[case["name"]]
    if expected.get("error"):
        with pytest.raises(TemplateError):
            render_template(case["template"], _context(case))
    else:
        assert render_template(case["template"], _context(case)) == expected["output"]
