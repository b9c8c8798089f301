"""`runner env explain` on every corpus spec that uses env, against golden output.

Set RUNNER_UPDATE_GOLDENS=1 to rewrite the golden files after a deliberate change
(then read the diff before committing it).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from runner.cli import run_cli

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "batch-change-examples"
GOLDENS = Path(__file__).parent / "goldens" / "env-explain"
ENV_SPECS = sorted(
    p for p in CORPUS.rglob("*") if p.suffix in (".yaml", ".yml") and "env:" in p.read_text()
)
UPDATE = os.environ.get("RUNNER_UPDATE_GOLDENS") == "1"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RUNNER_DATABASE_URL", raising=False)
    monkeypatch.delenv("RUNNER_MASTER_KEY_FILE", raising=False)
    for name, ns, value in [
        ("GH_TOKEN", "--global", "global-gh-token-value"),
        ("GH_TOKEN", "--user=alice", "alice-gh-token-value"),
        ("JIRA_TOKEN", "--global", "global-jira-token-value"),
    ]:
        import io
        import sys

        monkeypatch.setattr(sys, "stdin", io.StringIO(value))
        assert run_cli(["secret", "set", name, ns]) == 0
    return tmp_path / "home"


def test_there_are_corpus_specs_with_env() -> None:
    assert len(ENV_SPECS) == 5


@pytest.mark.parametrize("spec", ENV_SPECS, ids=lambda p: p.stem)
def test_explain_matches_golden(spec: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code = run_cli(["env", "explain", str(spec), "--namespace", "user:alice"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    text = captured.out.replace(str(CORPUS), "CORPUS")
    golden = GOLDENS / f"{spec.stem}.txt"
    if UPDATE:
        golden.write_text(text)
    assert text == golden.read_text()
    for value in ("global-gh-token-value", "alice-gh-token-value", "global-jira-token-value"):
        assert value not in captured.out + captured.err


def test_explain_json_shape(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = next(p for p in ENV_SPECS if p.stem == "gh-issues.batch")
    capsys.readouterr()
    assert run_cli(["env", "explain", str(spec), "--namespace", "user:alice", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    token = next(d for d in data if d["name"] == "GH_TOKEN")
    assert token["source"] == "secret"
    assert token["namespace"] == "user:alice"
    assert token["version"] == 1
    assert token["overrides_global"] is True
    assert token["secret_id"]
    assert {"step", "name", "source"} <= set(token)


def test_explain_writes_no_access_event(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = next(p for p in ENV_SPECS if p.stem == "gh-issues.batch")
    assert run_cli(["env", "explain", str(spec), "--namespace", "user:bob"]) == 0
    capsys.readouterr()
    assert run_cli(["secret", "log", "--json"]) == 0
    events = [e["event"] for e in json.loads(capsys.readouterr().out)]
    assert "accessed" not in events


def test_explain_lists_every_missing_name_and_exits_1(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: m\nsteps:\n  - run: x\n    container: c\n    env: [A_MISSING, GH_TOKEN]\n"
        "  - run: y\n    container: c\n    env: [B_MISSING]\n"
        "changesetTemplate:\n  title: t\n  branch: b\n  commit:\n    message: m\n"
    )
    code = run_cli(["env", "explain", str(spec), "--namespace", "org:acme"])
    err = capsys.readouterr().err
    assert code == 1
    assert "A_MISSING" in err and "B_MISSING" in err
    assert "org:acme, global" in err
    assert "runner secret set A_MISSING --org acme" in err


def test_explain_renders_templates_for_the_first_repository(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repos" / "github.com" / "acme" / "app"
    repo.mkdir(parents=True)
    env = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "PATH": os.environ["PATH"]}
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "i",
        ],
    ):
        subprocess.run(cmd, cwd=repo, env=env, check=True)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: t\non:\n  - repository: github.com/acme/app\nsteps:\n  - run: x\n    container: c\n"
        "    env:\n      WHO: ${{ repository.name }}@${{ repository.branch }}\n"
        "      LATER: ${{ previous_step.stdout }}\n"
        "changesetTemplate:\n  title: t\n  branch: b\n  commit:\n    message: m\n"
    )
    code = run_cli(
        [
            "env",
            "explain",
            str(spec),
            "--namespace",
            "user:alice",
            "--repos-root",
            str(tmp_path / "repos"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "→ github.com/acme/app@main" in out
    assert "rendered at run time" in out
