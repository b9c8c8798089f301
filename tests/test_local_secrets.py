"""One-off local secrets (issue 19): `--secret-file` and `--secret`, never stored.

The parser and the plan are tested here with fakes; one run on the real
engine shows a value reaching its step, redacted, and nowhere on disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import stat
from pathlib import Path

import pytest

from runner.cache.keys import StepKeyInput
from runner.cli._local_secrets import read_local_secrets
from runner.env import HostEnv, materialize, plan_env
from runner.errors import SecretValidationError
from runner.execute.job import first_uses, register_values, reveal_secrets
from runner.execute.run import local_first
from runner.explain import explain, render_text
from runner.redact.active import ActiveRedactor
from runner.secrets.local import LocalSecrets, check_private, one, parse_dotenv
from runner.secrets.value import Secret
from runner.spec import load_spec
from runner.testing import FakeSecretStore
from tests.helpers import (
    RUNNER,
    TEST_IMAGE,
    leak_forms,
    make_repo,
    run_runner,
    runner_env,
    scan_bytes,
    scan_tree,
    set_secret,
)

LOCAL = "local-value-0123456789"
STORED = "stored-value-9876543210"

DOTENV = """\
# tokens for trying the spec out
export GITHUB_TOKEN=ghp_plain-value-01   # a comment after it
API_KEY='single # quoted $NOT_EXPANDED'
EMPTY_LINE_ABOVE="double \\"quoted\\" \\\\ tab\\tend"

KUBECONFIG="apiVersion: v1
clusters:
  - name: dev"
SPACED = "  kept spaces  "
"""


def values(found: LocalSecrets) -> dict[str, str]:
    return {name: found.values[name].reveal() for name in found}


# The dotenv parser ---------------------------------------------------------------------


def test_dotenv_lines_comments_quotes_and_multi_line_values() -> None:
    found = parse_dotenv(DOTENV.replace("\n", "\r\n"), "dev.env")
    assert values(found) == {
        "GITHUB_TOKEN": "ghp_plain-value-01",
        "API_KEY": "single # quoted $NOT_EXPANDED",
        "EMPTY_LINE_ABOVE": 'double "quoted" \\ tab\tend',
        "KUBECONFIG": "apiVersion: v1\nclusters:\n  - name: dev",
        "SPACED": "  kept spaces  ",
    }
    assert set(found.origins.values()) == {"dev.env"}
    assert "ghp_plain" not in repr(found)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("GITHUB_TOKEN=ok-value-1\nghp_lineWithoutEquals0123\n", "dev.env:2: not a NAME=VALUE"),
        ("1TOKEN=value-value-1\n", "dev.env:1: not a NAME=VALUE"),
        ("github_token=value-value-1\n", "dev.env:1: secret name 'github_token' is not upper case"),
        ("PATH=/usr/local/bin:/bin\n", "dev.env:1: secret name PATH is refused"),
        ("TOKEN=tiny\n", "dev.env:1: TOKEN: secret values must be at least 8 characters"),
        ('TOKEN="unfinished-value\nMORE=x\n', "dev.env:1: the double quote is never closed"),
        ("TOKEN='not closed-value\n", "dev.env:1: the single quote is not closed"),
        ('TOKEN="quoted-value" trailing-value\n', "dev.env:1: text after the closing quote"),
        ("TOKEN=value-value-1\nTOKEN=value-value-2\n", "dev.env:2: TOKEN is given twice"),
    ],
)
def test_bad_lines_are_refused_naming_the_line_never_the_value(text: str, says: str) -> None:
    with pytest.raises(SecretValidationError) as info:
        parse_dotenv(text, "dev.env")
    shown = str(info.value)
    assert says in shown and info.value.hint
    for secret in ("ghp_lineWithoutEquals0123", "value-value", "tiny", "unfinished", "trailing"):
        assert secret not in shown


@pytest.mark.parametrize(
    ("mode", "refused"),
    [(0o600, False), (0o400, False), (0o640, True), (0o604, True), (0o620, True)],
)
def test_a_file_others_may_read_is_refused(mode: int, refused: bool) -> None:
    if not refused:
        check_private(stat.S_IFREG | mode, "dev.env")
        return
    with pytest.raises(SecretValidationError, match=r"chmod 600 dev.env"):
        check_private(stat.S_IFREG | mode, "dev.env")


class Stdin(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_the_cli_reads_files_and_one_stdin_line_per_secret(tmp_path: Path) -> None:
    path = tmp_path / "dev.env"
    path.write_text("GITHUB_TOKEN=ghp_file-value-01\n")
    path.chmod(0o600)
    found = read_local_secrets(
        (path,), ("API_KEY", "OTHER_KEY"), Stdin("api-value-01\nother-value-02\n")
    )
    assert values(found) == {
        "GITHUB_TOKEN": "ghp_file-value-01",
        "API_KEY": "api-value-01",
        "OTHER_KEY": "other-value-02",
    }
    assert found.origins == {"GITHUB_TOKEN": "dev.env", "API_KEY": "stdin", "OTHER_KEY": "stdin"}
    with pytest.raises(SecretValidationError, match="stdin ended before a value for --secret B"):
        read_local_secrets((), ("A_KEY", "B_KEY"), Stdin("only-one-value\n"))
    with pytest.raises(SecretValidationError, match="GITHUB_TOKEN is given twice"):
        read_local_secrets((path,), ("GITHUB_TOKEN",), Stdin("ghp_other-value-02\n"))
    path.chmod(0o644)
    with pytest.raises(SecretValidationError, match="can be read or written by other users"):
        read_local_secrets((path,), ())
    link = tmp_path / "link.env"
    link.symlink_to(path)
    with pytest.raises(SecretValidationError, match="not a link"):
        read_local_secrets((link,), ())


# The plan, explain, the cache key and the redactor -----------------------------------------

SPEC = f"""\
name: local
on:
  - repository: github.com/acme/app
steps:
  - run: echo "$GITHUB_TOKEN"
    container: {TEST_IMAGE}
    env:
      - GITHUB_TOKEN
      - API_KEY
changesetTemplate:
  title: t
  body: b
  branch: runner/local
  commit:
    message: m
"""


def test_a_local_secret_wins_over_the_stored_one_and_is_answered_locally(
    tmp_path: Path,
) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC)
    spec = load_spec(str(tmp_path / "spec.yaml"))
    store = FakeSecretStore()
    store.set("GITHUB_TOKEN", "user:alice", Secret(STORED), actor="alice")
    api, _ = store.set("API_KEY", "global", Secret(STORED + "-api"), actor="root")
    local = one("GITHUB_TOKEN", Secret(LOCAL), "dev.env").keyed(lambda n, v: f"mac({n})")
    plan = plan_env(spec, "user:alice", store, local=local)
    assert plan.notices == ("local secret GITHUB_TOKEN overrides the stored one from user:alice",)
    token, api_key = plan.steps[1]
    assert token.provenance.describe() == "local secret (dev.env)"
    assert api_key.secret.id == api.id

    text = render_text(spec, explain(spec, plan, None), None)
    assert "GITHUB_TOKEN  local secret (dev.env)" in text
    assert "API_KEY       secret API_KEY from global v1" in text
    explained = [e.as_json() for e in explain(spec, plan, None)]
    assert explained[0] == {
        "step": 1,
        "name": "GITHUB_TOKEN",
        "source": "local",
        "origin": "dev.env",
        "secret_name": "GITHUB_TOKEN",
    }

    # The store reveals only the stored one; the local value never touches it.
    revealed = reveal_secrets(
        plan,
        local_first(lambda ref, step: store.reveal(ref.id, version=ref.version, actor="a"), local),
    )
    assert [e.name for e in store.log() if e.event == "accessed"] == ["API_KEY"]
    assert set(first_uses(plan)) == {"local:GITHUB_TOKEN", api.id}
    redactor = ActiveRedactor()
    register_values(redactor, plan=plan, secrets=revealed)
    assert redactor.redact(f"token {LOCAL}") == "token [REDACTED:GITHUB_TOKEN]"
    resolved = materialize(plan.steps[1], context={}, secrets=revealed, host=HostEnv())
    assert resolved[0].value == Secret(LOCAL)

    # The cache key holds the keyed hash, never the value nor a plain hash of it.
    key = json.dumps(StepKeyInput("d", "i", {}, {}, plan.steps[1]).canonical())
    assert '"local_hmac": "mac(GITHUB_TOKEN)"' in key
    assert LOCAL not in key


def test_the_cache_key_changes_with_the_local_value_only(tmp_path: Path) -> None:
    from runner.cache import host_mac

    (tmp_path / "spec.yaml").write_text(SPEC.replace("      - API_KEY\n", ""))
    spec = load_spec(str(tmp_path / "spec.yaml"))

    def key(value: str, mac_key: bytes = b"k" * 32) -> str:
        local = one("GITHUB_TOKEN", Secret(value), "dev.env").keyed(
            lambda n, v: host_mac(mac_key, n, v)
        )
        plan = plan_env(spec, "user:alice", FakeSecretStore(), local=local)
        return json.dumps(StepKeyInput("d", "i", {}, {}, plan.steps[1]).canonical())

    assert key(LOCAL) == key(LOCAL)
    assert key(LOCAL) != key(LOCAL + "x")
    assert key(LOCAL) != key(LOCAL, b"j" * 32)


# On the real engine ------------------------------------------------------------------------


@pytest.mark.docker
def test_run_with_a_secret_file_redacts_it_caches_by_hmac_and_leaves_it_nowhere(
    tmp_path: Path,
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = runner_env(tmp_path / "home", TMPDIR=str(tmp))
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"README.md": "# app\n"})
    set_secret(env, "GITHUB_TOKEN", STORED, "--user", "alice")
    spec = tmp_path / "spec" / "batch.yaml"
    spec.parent.mkdir()
    spec.write_text(
        "name: local\non:\n  - repository: github.com/acme/app\nsteps:\n"
        "  - run: |\n"
        "      printf %s \"$GITHUB_TOKEN\" | sha256sum | cut -d' ' -f1 > token.sha\n"
        '      echo "the token is $GITHUB_TOKEN"\n'
        '      printf "%s\\n" "$KUBECONFIG"\n'
        f"    container: {TEST_IMAGE}\n    env:\n      - GITHUB_TOKEN\n      - KUBECONFIG\n"
        "changesetTemplate:\n  title: t\n  body: b\n  branch: runner/local\n"
        "  commit:\n    message: m\n"
    )
    secrets = tmp_path / "private" / "dev.env"
    secrets.parent.mkdir()
    multi = "apiVersion: v1\nsecond-line-of-kubeconfig-42"
    secrets.write_text(f'GITHUB_TOKEN={LOCAL}\nKUBECONFIG="{multi}"\n')
    secrets.chmod(0o600)
    out = tmp_path / "out"
    args = [
        "run",
        str(spec),
        "--repos-root",
        str(repos),
        "--out",
        str(out),
        "--json",
        "--secret-file",
        str(secrets),
    ]

    first = run_runner(args, env)
    assert first.returncode == 0, first.stderr
    assert "notice: local secret GITHUB_TOKEN overrides the stored one from user:alice" in (
        first.stderr
    )
    events = [json.loads(line) for line in first.stdout.splitlines()]
    lines = [e["line"] for e in events if e["event"] == "step.output"]
    assert "the token is [REDACTED:GITHUB_TOKEN]" in lines
    assert "[REDACTED:KUBECONFIG]" in lines  # a multi-line value, masked whole
    patch = (out / "github.com/acme/app/_root/runner-local.patch").read_text()
    assert hashlib.sha256(LOCAL.encode()).hexdigest() in patch

    again = run_runner(args, env)
    assert again.returncode == 0, again.stderr
    cached = [json.loads(line)["event"] for line in again.stdout.splitlines()]
    assert "step.cached" in cached and "step.started" not in cached

    # The store was never asked for GITHUB_TOKEN: no access on record.
    log = run_runner(["secret", "log", "GITHUB_TOKEN", "--json"], env)
    assert [e["event"] for e in json.loads(log.stdout)] == ["created"]
    found = [LOCAL, multi, "second-line-of-kubeconfig-42"]
    forms = leak_forms(found)
    for proc in (first, again, log):
        assert scan_bytes((proc.stdout + proc.stderr).encode(), forms) == []
    assert scan_tree([out, Path(env["RUNNER_HOME"]), tmp], found) == []

    secrets.chmod(0o644)
    refused = run_runner(args, env)
    assert refused.returncode == 1
    assert "chmod 600" in refused.stderr and LOCAL not in refused.stderr


def test_on_a_terminal_each_secret_is_asked_for_without_echo(tmp_path: Path) -> None:
    """`--secret NAME` on a terminal: a prompt per name, the value typed is not shown,
    and nothing the command draws or leaves on disk holds it."""
    import pexpect

    value, other = "ghp_typed-at-the-prompt-0001", "typed-value-0002"
    spec = tmp_path / "local.yaml"
    spec.write_text(SPEC)
    env = runner_env(tmp_path / "home")
    child = pexpect.spawn(
        RUNNER,
        ["env", "explain", str(spec), "--secret", "GITHUB_TOKEN", "--secret", "API_KEY"],
        env={**env, "TERM": "xterm", "COLUMNS": "120"},
        timeout=60,
    )
    drawn = io.BytesIO()
    child.logfile_read = drawn  # every byte the terminal got
    for name, typed in (("GITHUB_TOKEN", value), ("API_KEY", other)):
        child.expect(f"Value for {name} \\(this run only\\): ".encode())
        child.sendline(typed)
    child.expect(pexpect.EOF)
    child.close()
    text = drawn.getvalue().decode()
    assert child.exitstatus == 0, text
    for name in ("GITHUB_TOKEN", "API_KEY"):
        assert re.search(rf"^  {name} +local secret \(prompt\)\r?$", text, re.MULTILINE), text
    assert value not in text and other not in text  # not echoed, not printed
    assert scan_tree([tmp_path], [value, other]) == []
