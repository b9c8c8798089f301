"""`runner secret`, `keys`, `user` and `org` as a user types them, on SQLite and PostgreSQL.

Values arrive on stdin, from a no-echo prompt or from a file, never on the
command line; nothing the commands print contains one.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import pytest

from runner.cli import run_cli
from runner.secrets.opening import open_store
from runner.secrets.value import Secret
from tests import test_secrets_support as support
from tests.test_secrets_support import Backend

backend = support.backend

VALUE = "ghp_cli-test-value-0001"
OTHER = "ghp_cli-test-value-0002"


class FakeStdin(io.TextIOWrapper):
    def __init__(self, data: bytes, *, tty: bool) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.fixture
def env(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Backend:
    for name in ("RUNNER_DATABASE_URL", "RUNNER_MASTER_KEY_FILE", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNNER_HOME", str(backend.home))
    monkeypatch.setenv("RUNNER_USER", "alice")
    if backend.kind == "postgres":
        monkeypatch.setenv("RUNNER_DATABASE_URL", backend.url)
    return backend


Run = tuple[int, str, str]


class Cli(Protocol):
    def __call__(self, *args: str, stdin: bytes = b"", tty: bool = False) -> Run: ...


def runner(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    stdin: bytes = b"",
    tty: bool = False,
) -> Run:
    monkeypatch.setattr(sys, "stdin", FakeStdin(stdin, tty=tty))
    code = run_cli(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli(env: Backend, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    def call(*args: str, stdin: bytes = b"", tty: bool = False) -> Run:
        return runner(capsys, monkeypatch, *args, stdin=stdin, tty=tty)

    return call


def stored(env: Backend, name: str, namespace: str, scope: str = "batches") -> Secret:
    with open_store(env.settings()) as store:
        meta = store.get(name, namespace, scope=scope)
        assert meta is not None
        return store.reveal(meta, version=meta.version, actor="test")


def no_value_in(*texts: str) -> bool:
    return all(VALUE not in t and OTHER not in t for t in texts)


def test_set_reads_stdin_and_reports_versions(cli: Cli, env: Backend) -> None:
    code, out, err = cli(
        "secret", "set", "GH_TOKEN", "--user", "alice", stdin=f"{VALUE}\n".encode()
    )
    assert (code, out) == (0, "created GH_TOKEN v1 in user:alice\n")
    code, out, err2 = cli(
        "secret", "set", "GH_TOKEN", "--namespace", "user:alice", stdin=OTHER.encode()
    )
    assert (code, out) == (0, "updated GH_TOKEN v2 in user:alice\n")
    code, out, _ = cli("secret", "set", "GH_TOKEN", "--global", stdin=VALUE.encode())
    assert out == "created GH_TOKEN v1 in global\n"
    code, out, _ = cli(
        "secret", "set", "GH_TOKEN", "--org", "acme", "--scope", "codeintel", stdin=VALUE.encode()
    )
    assert out == "created GH_TOKEN v1 in org:acme (scope codeintel)\n"
    assert no_value_in(out, err, err2)
    assert stored(env, "GH_TOKEN", "user:alice") == Secret(OTHER)
    assert stored(env, "GH_TOKEN", "global") == Secret(VALUE), "one trailing newline is dropped"


def test_set_creates_the_user_or_org_record(cli: Cli) -> None:
    cli("secret", "set", "TOKEN", "--user", "carol", stdin=VALUE.encode())
    cli("secret", "set", "TOKEN", "--org", "acme", stdin=VALUE.encode())
    _, users, _ = cli("user", "list", "--json")
    _, orgs, _ = cli("org", "list", "--json")
    assert [u["name"] for u in json.loads(users)] == ["carol"]
    assert [o["name"] for o in json.loads(orgs)] == ["acme"]


def test_set_from_a_file(cli: Cli, env: Backend, tmp_path: Path) -> None:
    path = tmp_path / "value.txt"
    path.write_bytes(f"{VALUE}\r\n".encode())
    code, out, err = cli("secret", "set", "TOKEN", "--global", "--from-file", str(path))
    assert (code, out) == (0, "created TOKEN v1 in global\n")
    assert stored(env, "TOKEN", "global") == Secret(VALUE)
    assert no_value_in(out, err)


def test_set_prompts_without_echo_on_a_terminal(
    cli: Cli, env: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []

    def fake_getpass(prompt: str, stream: object = None) -> str:
        prompts.append(prompt)
        return VALUE

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    code, out, err = cli("secret", "set", "TOKEN", "--user", "alice", tty=True)
    assert (code, out) == (0, "created TOKEN v1 in user:alice\n")
    assert prompts == ["Value for TOKEN: ", "Repeat the value for TOKEN: "]
    assert stored(env, "TOKEN", "user:alice") == Secret(VALUE)

    answers = iter([VALUE, OTHER])
    monkeypatch.setattr("getpass.getpass", lambda prompt, stream=None: next(answers))
    code, out, err = cli("secret", "set", "TOKEN", "--user", "alice", tty=True)
    assert (code, out) == (1, "")
    assert "differ" in err
    assert no_value_in(out, err)


@pytest.mark.parametrize(
    ("stdin", "says"),
    [
        (
            b"short",
            "error: secret values must be at least 8 characters — a shorter value cannot be redacted safely\n",
        ),
        (b"", "no secret value given"),
        (b"\xff\xfe-not-utf-8", "UTF-8"),
        (b"x" * (48 * 1024 + 10), "at most 48 KiB"),
        (b"abc\x00defghij", "NUL"),
    ],
)
def test_refused_values_exit_1_with_one_line(cli: Cli, stdin: bytes, says: str) -> None:
    code, out, err = cli("secret", "set", "TOKEN", "--global", stdin=stdin)
    assert code == 1
    assert out == ""
    assert says in err
    assert err.count("error:") == 1
    assert err.endswith("\n")
    assert "Traceback" not in err
    _, listed, _ = cli("secret", "list", "--json")
    assert json.loads(listed) == []


@pytest.mark.parametrize(
    "args",
    [
        ["secret", "set", "TOKEN"],
        ["secret", "set", "TOKEN", "--global", "--user", "alice"],
        ["secret", "set", "TOKEN", "--namespace", "team:x"],
        ["secret", "rm", "TOKEN"],
        ["secret", "set", "TOKEN", "--global", "--scope", "deploys"],
    ],
)
def test_namespace_and_scope_mistakes_are_usage_errors(cli: Cli, args: list[str]) -> None:
    code, out, err = cli(*args, stdin=VALUE.encode())
    assert code == 2
    assert out == ""
    assert err.startswith("error: ")


def test_bad_names_are_refused_before_the_value_is_read(cli: Cli) -> None:
    code, _, err = cli("secret", "set", "LD_PRELOAD", "--global", stdin=VALUE.encode())
    assert code == 1
    assert "LD_PRELOAD" in err
    code, _, err = cli("secret", "set", "runner_token", "--global", stdin=VALUE.encode())
    assert code == 1
    assert "RUNNER_" in err


def _seed(cli: Cli) -> None:
    for args in (
        ["A_TOKEN", "--global"],
        ["B_TOKEN", "--global"],
        ["B_TOKEN", "--user", "alice"],
        ["C_TOKEN", "--user", "bob"],
        ["D_TOKEN", "--org", "acme"],
    ):
        code, _, _ = cli("secret", "set", *args, stdin=VALUE.encode())
        assert code == 0


def test_list_json_has_the_documented_fields_and_no_value(cli: Cli) -> None:
    _seed(cli)
    code, out, err = cli("secret", "list", "--json")
    assert code == 0
    items = json.loads(out)
    assert [(i["name"], i["namespace"]) for i in items] == [
        ("A_TOKEN", "global"),
        ("B_TOKEN", "global"),
        ("B_TOKEN", "user:alice"),
        ("C_TOKEN", "user:bob"),
        ("D_TOKEN", "org:acme"),
    ]
    assert set(items[0]) == {
        "id",
        "name",
        "namespace",
        "scope",
        "version",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
        "overrides_global",
        "delivery",
    }
    assert [i["overrides_global"] for i in items] == [False, False, True, False, False]
    assert items[0]["delivery"] == {"type": "env", "broker": None}
    assert items[0]["created_at"].endswith("Z")
    assert items[0]["created_by"] == "alice"
    assert no_value_in(out, err)


def test_list_for_a_namespace_shows_what_its_jobs_see(cli: Cli) -> None:
    _seed(cli)
    _, out, _ = cli("secret", "list", "--user", "alice", "--json")
    assert [(i["name"], i["namespace"]) for i in json.loads(out)] == [
        ("A_TOKEN", "global"),
        ("B_TOKEN", "user:alice"),
    ]
    _, out, _ = cli("secret", "list", "--org", "acme", "--json")
    assert [(i["name"], i["namespace"]) for i in json.loads(out)] == [
        ("A_TOKEN", "global"),
        ("B_TOKEN", "global"),
        ("D_TOKEN", "org:acme"),
    ]
    _, out, _ = cli("secret", "list", "--global", "--json")
    assert [i["name"] for i in json.loads(out)] == ["A_TOKEN", "B_TOKEN"]
    _, out, _ = cli("secret", "list", "--user", "alice")
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "NAMESPACE", "SCOPE", "VERSION"]
    assert "overrides global" in lines[2]


def test_rm_removes_and_says_so(cli: Cli) -> None:
    cli("secret", "set", "TOKEN", "--org", "acme", stdin=VALUE.encode())
    cli("secret", "set", "TOKEN", "--org", "acme", stdin=OTHER.encode())
    code, out, _ = cli("secret", "rm", "TOKEN", "--org", "acme")
    assert (code, out) == (0, "removed TOKEN v2 from org:acme\n")
    code, out, err = cli("secret", "rm", "TOKEN", "--org", "acme")
    assert (code, out) == (1, "")
    assert err.startswith("error: no secret TOKEN in org:acme — ")


def test_log_json_lists_changes_with_actor_and_version(cli: Cli, env: Backend) -> None:
    cli("secret", "set", "TOKEN", "--user", "alice", stdin=VALUE.encode())
    cli("secret", "set", "TOKEN", "--user", "alice", stdin=OTHER.encode())
    with open_store(env.settings()) as store:
        meta = store.get("TOKEN", "user:alice")
        assert meta is not None
        store.reveal(meta, version=2, actor="executor", run_id="run-42", step=2)
    cli("secret", "rm", "TOKEN", "--user", "alice")
    cli("secret", "set", "OTHER_TOKEN", "--global", stdin=VALUE.encode())

    code, out, err = cli("secret", "log", "TOKEN", "--json")
    assert code == 0
    logged = json.loads(out)
    # Nothing was cached with it, so no invalidation is recorded.
    assert [e for e in logged if e["event"] == "cache_invalidated"] == []
    events = [e for e in logged if e["event"] != "cache_invalidated"]
    assert [(e["event"], e["version"], e["actor"]) for e in events] == [
        ("created", 1, "alice"),
        ("updated", 2, "alice"),
        ("accessed", 2, "executor"),
        ("deleted", 2, "alice"),
    ]
    assert {"event", "name", "namespace", "scope", "version", "at", "actor", "job"} <= set(
        events[0]
    )
    assert (events[2]["job"], events[2]["step"]) == ("run-42", 2)
    assert all(
        (e["name"], e["namespace"], e["scope"]) == ("TOKEN", "user:alice", "batches")
        for e in events
    )
    assert no_value_in(out, err)
    _, everything, _ = cli("secret", "log", "--json")
    assert len(json.loads(everything)) == 5  # TOKEN's four, OTHER_TOKEN's creation
    _, text, _ = cli("secret", "log")
    assert "job run-42, step 2" in text


def test_keys_rotate_keeps_values_readable(cli: Cli, env: Backend) -> None:
    cli("secret", "set", "TOKEN", "--global", stdin=VALUE.encode())
    cli("secret", "set", "OTHER", "--user", "alice", stdin=OTHER.encode())
    code, out, err = cli("keys", "rotate")
    assert code == 0
    assert "2 data keys re-wrapped" in out
    assert "back up" in err
    assert stored(env, "TOKEN", "global") == Secret(VALUE)
    assert stored(env, "OTHER", "user:alice") == Secret(OTHER)
    _, log, _ = cli("secret", "log", "--json")
    rotations = [e for e in json.loads(log) if e["event"] == "key_rotated"]
    assert [r["count"] for r in rotations] == [2]


def test_the_backup_notice_is_shown_once(cli: Cli, env: Backend) -> None:
    _, _, first = cli("secret", "set", "TOKEN", "--global", stdin=VALUE.encode())
    _, _, second = cli("secret", "set", "TOKEN", "--global", stdin=OTHER.encode())
    assert "back it up" in first
    assert str(env.home / "master.key") in first
    assert "back it up" not in second


def test_users_and_orgs(cli: Cli) -> None:
    assert cli("user", "add", "alice")[1] == "added user alice\n"
    assert cli("user", "add", "alice")[:2] == (0, "kept user alice\n")
    assert cli("user", "add", "root", "--admin")[1] == "added user root (admin)\n"
    assert cli("org", "add", "acme")[1] == "added org acme\n"
    assert cli("org", "add", "acme")[:2] == (0, "kept org acme\n")
    assert cli("org", "add-member", "acme", "bob")[1] == "added bob in org acme\n"
    assert cli("org", "add-member", "beta", "alice")[0] == 0
    _, out, _ = cli("user", "list", "--json")
    users = {u["name"]: u for u in json.loads(out)}
    assert set(users) == {"alice", "bob", "root"}
    assert users["root"]["admin"] is True
    assert users["bob"]["orgs"] == ["acme"]
    assert cli("org", "remove-member", "acme", "bob")[1] == "removed bob from org acme\n"
    code, out, err = cli("org", "remove-member", "acme", "bob")
    assert (code, out) == (0, "")
    assert "was not a member" in err
    code, _, err = cli("user", "add", "not a name")
    assert code == 2
    assert err.startswith("error: invalid user name")


def test_the_installed_command_reads_the_value_from_a_pipe(env: Backend, tmp_path: Path) -> None:
    runner_bin = Path(sys.executable).parent / "runner"
    child_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")},
        "RUNNER_HOME": str(env.home),
        "RUNNER_USER": "alice",
    }
    if env.kind == "postgres":
        child_env["RUNNER_DATABASE_URL"] = env.url
    proc = subprocess.run(
        [str(runner_bin), "secret", "set", "PIPED_TOKEN", "--user", "alice"],
        input=f"{VALUE}\n".encode(),
        capture_output=True,
        env=child_env,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"created PIPED_TOKEN v1 in user:alice\n"
    assert VALUE.encode() not in proc.stdout + proc.stderr
    assert stored(env, "PIPED_TOKEN", "user:alice") == Secret(VALUE)


def test_changing_a_secret_drops_the_cached_steps_that_used_it(cli: Cli, env: Backend) -> None:
    from runner.cache import CacheEntry
    from runner.cache.sql import SqlStepCache

    cli("secret", "set", "TOKEN", "--user", "alice", stdin=VALUE.encode())
    entry = CacheEntry(diff=b"", changes={}, accumulated={}, outputs={}, stdout="", stderr="")
    with open_store(env.settings()) as store:
        meta = store.get("TOKEN", "user:alice")
        assert meta is not None
        cache = SqlStepCache(store.db, max_bytes=1 << 20)
        cache.put("k1", entry, namespace="user:alice", secret_refs=[f"{meta.id}:1"])
        cache.put("k2", entry, namespace="user:alice", secret_refs=[])
    code, _, err = cli("secret", "set", "TOKEN", "--user", "alice", stdin=OTHER.encode())
    assert code == 0
    assert "dropped 1 cached step results" in err
    with open_store(env.settings()) as store:
        cache = SqlStepCache(store.db, max_bytes=1 << 20)
        assert cache.get("k1") is None
        assert cache.get("k2") is not None
    _, out, _ = cli("secret", "log", "TOKEN", "--json")
    invalidated = [e for e in json.loads(out) if e["event"] == "cache_invalidated"]
    assert [(e["count"], e["version"]) for e in invalidated] == [(1, 1)]
