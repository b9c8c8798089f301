"""Secret types and broker bindings (issue 19, 20): stored, listed, explained, keyed.

The store cases run against the fake, SQLite and PostgreSQL (the store
contract); the CLI, API and web cases go through what a user types.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.cache.keys import StepKeyInput, WorkspaceKeyInput, step_keys
from runner.env import PlannedVar, Provenance, plan_env
from runner.errors import SecretValidationError, SpecError
from runner.queue.bundle import Bundle
from runner.secrets.crypto import Keyring
from runner.secrets.delivery import DEFAULT_DELIVERY, Broker, Delivery
from runner.secrets.schema import MIGRATIONS
from runner.secrets.store import SecretStore
from runner.secrets.value import Secret
from runner.spec import load_spec
from runner.spec.models import BatchSpec
from runner.testing import FakeSecretStore
from tests import test_secrets_support as support
from tests.test_cli_secret import Cli, Run
from tests.test_cli_secret import runner as cli_runner
from tests.test_queue_support import (
    SPEC_WITH_SECRET,
    World,
    sqlite_world,
    write_spec,
)
from tests.web_support import WebWorld, csrf_of

store = support.store
backend = support.backend
keyring = support.keyring

VALUE = "s3cr3t-value-1"
FILE = Delivery(type="file")
GITHUB = Delivery.of("env", ["API.GitHub.com", "uploads.github.com"], "token")


WORKSPACE = WorkspaceKeyInput(
    namespace="user:alice",
    repository="github.com/acme/app",
    base_tree="0" * 40,
    path="",
    only_fetch_workspace=False,
    batch_change_name="types",
    batch_change_description="",
)


def key_input(var: PlannedVar) -> StepKeyInput:
    return StepKeyInput(
        definition={"run": "true"},
        image_id="sha256:0",
        file_hashes={},
        mount_hashes={},
        env=[var],
    )


def load_spec_text(text: str, folder: Path) -> BatchSpec:
    path = folder / "spec.yaml"
    path.write_text(text)
    return load_spec(str(path))


# The store --------------------------------------------------------------------------


def test_delivery_is_stored_with_each_version_and_read_back_everywhere(
    store: SecretStore,
) -> None:
    first, created = store.set(
        "KUBECONFIG", "user:alice", Secret(VALUE), actor="alice", delivery=FILE
    )
    assert created and first.delivery == FILE
    store.set("GH_TOKEN", "global", Secret(VALUE), actor="root", delivery=GITHUB)
    store.set("PLAIN_TOKEN", "global", Secret(VALUE), actor="root")

    assert store.get("KUBECONFIG", "user:alice") == first
    resolved = store.resolve("gh_token", "user:alice")
    assert resolved is not None and resolved.delivery.broker == Broker(
        hosts=("api.github.com", "uploads.github.com"), as_="token"
    )
    listed = {m.name: m.delivery.describe() for m in store.list()}
    assert listed == {
        "GH_TOKEN": "brokered for api.github.com, uploads.github.com as token",
        "KUBECONFIG": "file",
        "PLAIN_TOKEN": "env",
    }
    assert [m.delivery for m in store.list(visible_from="user:alice")] == [
        GITHUB,
        FILE,
        DEFAULT_DELIVERY,
    ]


def test_changing_only_the_delivery_is_a_new_audited_version(store: SecretStore) -> None:
    store.set("KUBECONFIG", "user:alice", Secret(VALUE), actor="alice")
    second, created = store.set(
        "KUBECONFIG", "user:alice", Secret(VALUE), actor="alice", delivery=FILE
    )
    third, _ = store.set("KUBECONFIG", "user:alice", Secret(VALUE), actor="bob", delivery=FILE)
    fourth, _ = store.set(
        "KUBECONFIG", "user:alice", Secret(VALUE), actor="bob", delivery=DEFAULT_DELIVERY
    )
    assert not created
    assert [m.version for m in (second, third, fourth)] == [2, 3, 4]
    assert (second.delivery, fourth.delivery) == (FILE, DEFAULT_DELIVERY)
    assert store.reveal(fourth, version=4, actor="alice") == Secret(VALUE)
    # Each change of delivery is on record; a write that keeps it says nothing more.
    assert [(e.event, e.version, e.detail) for e in store.log("KUBECONFIG")][:4] == [
        ("created", 1, None),
        ("updated", 2, "delivery env -> file"),
        ("updated", 3, None),
        ("updated", 4, "delivery file -> env"),
    ]
    # A new secret made with a type says so in its `created` event.
    store.set("SA_JSON", "global", Secret(VALUE), actor="root", delivery=FILE)
    assert store.log("SA_JSON")[0].detail == "delivery env -> file"


def test_a_new_value_without_a_delivery_keeps_the_current_one(store: SecretStore) -> None:
    store.set("GH_TOKEN", "global", Secret(VALUE), actor="root", delivery=GITHUB)
    rotated, _ = store.set("GH_TOKEN", "global", Secret(VALUE + "2"), actor="root")
    assert (rotated.version, rotated.delivery) == (2, GITHUB)
    assert store.log("GH_TOKEN")[-1].detail is None


def test_a_removed_and_set_again_secret_starts_from_its_new_delivery(store: SecretStore) -> None:
    store.set("KUBECONFIG", "global", Secret(VALUE), actor="root", delivery=FILE)
    store.remove("KUBECONFIG", "global", actor="root")
    again, created = store.set("KUBECONFIG", "global", Secret(VALUE), actor="root")
    assert created and again.delivery == DEFAULT_DELIVERY


def test_sql_rows_written_before_the_delivery_column_read_as_env(
    backend: support.Backend, keyring: Keyring
) -> None:
    db = backend.connect()
    try:
        db.migrate([m for m in MIGRATIONS if m.version < 103])
        with db.transaction() as tx:
            tx.execute(
                "INSERT INTO secrets (id, name, namespace, scope, current_version, created_at,"
                " created_by, updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    "sec_old",
                    "OLD_TOKEN",
                    "global",
                    "batches",
                    1,
                    "2024-01-01T00:00:00.000000Z",
                    "root",
                    "2024-01-01T00:00:00.000000Z",
                    "root",
                ],
            )
    finally:
        db.close()
    with backend.open(keyring) as opened:
        old = opened.get("OLD_TOKEN", "global")
        assert old is not None and old.delivery == DEFAULT_DELIVERY
        meta, _ = opened.set("NEW_FILE", "global", Secret(VALUE), actor="root", delivery=FILE)
        assert opened.get("NEW_FILE", "global") == meta


# The value object ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        (("file", ["api.github.com"], None), "a file secret cannot be brokered"),
        (("env", [], "token"), "--broker-as needs --broker-host"),
        (("env", ["https://api.github.com/x"], None), "is not a host name"),
        (("env", ["api.github.com"], "cookie"), "is not one of bearer"),
        (("secretfile", [], None), "is not one of env, file"),
    ],
)
def test_bad_deliveries_are_refused_saying_what_to_pass(
    fields: tuple[str, list[str], str | None], says: str
) -> None:
    with pytest.raises(SecretValidationError, match=says) as info:
        Delivery.of(*fields)
    assert info.value.hint


def test_delivery_json_round_trips() -> None:
    for delivery in (DEFAULT_DELIVERY, FILE, GITHUB, Delivery.of("env", ["x.io"], "basic:bot")):
        assert Delivery.from_json(json.loads(json.dumps(delivery.to_json()))) == delivery


# What a user types ------------------------------------------------------------------

SPEC = """\
name: types
on:
  - repository: github.com/acme/app
steps:
  - run: cat "$KUBECONFIG"
    container: runner-test/busybox:latest
    env:
      - KUBECONFIG
      - GH_TOKEN
      - PLAIN_TOKEN
changesetTemplate:
  title: t
  body: b
  branch: runner/types
  commit:
    message: m
"""


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    for name in ("RUNNER_DATABASE_URL", "RUNNER_MASTER_KEY_FILE", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RUNNER_USER", "alice")

    def call(*args: str, stdin: bytes = b"", tty: bool = False) -> Run:
        return cli_runner(capsys, monkeypatch, *args, stdin=stdin, tty=tty)

    return call


def test_set_list_and_explain_show_each_type(cli: Cli, tmp_path: Path) -> None:
    value = VALUE.encode()
    code, out, _ = cli(
        "secret", "set", "KUBECONFIG", "--user", "alice", "--type", "file", stdin=value
    )
    assert (code, out) == (0, "created KUBECONFIG v1 in user:alice (file)\n")
    code, out, _ = cli(
        "secret",
        "set",
        "GH_TOKEN",
        "--global",
        "--broker-host",
        "api.github.com",
        "--broker-host",
        "UPLOADS.github.com",
        "--broker-as",
        "token",
        stdin=value,
    )
    assert out == (
        "created GH_TOKEN v1 in global (brokered for api.github.com, uploads.github.com as token)\n"
    )
    assert cli("secret", "set", "PLAIN_TOKEN", "--global", stdin=value)[1] == (
        "created PLAIN_TOKEN v1 in global\n"
    )
    # A new value keeps the type; naming one changes it.
    assert cli("secret", "set", "KUBECONFIG", "--user", "alice", stdin=value)[1] == (
        "updated KUBECONFIG v2 in user:alice (file)\n"
    )
    code, _, err = cli(
        "secret",
        "set",
        "KUBECONFIG",
        "--user",
        "alice",
        "--type",
        "file",
        "--broker-host",
        "api.github.com",
        stdin=value,
    )
    assert code == 1 and "a file secret cannot be brokered" in err and VALUE not in err

    code, out, _ = cli("secret", "list", "--user", "alice")
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split()[:5] == ["NAME", "NAMESPACE", "SCOPE", "VERSION", "TYPE"]
    assert rows["KUBECONFIG"].split()[4] == "file"
    assert "brokered for api.github.com, uploads.github.com as token" in rows["GH_TOKEN"]
    assert rows["PLAIN_TOKEN"].split()[4] == "env"
    listed = {m["name"]: m["delivery"] for m in json.loads(cli("secret", "list", "--json")[1])}
    assert listed["KUBECONFIG"] == {"type": "file", "broker": None}
    assert listed["GH_TOKEN"] == {
        "type": "env",
        "broker": {"hosts": ["api.github.com", "uploads.github.com"], "as": "token"},
    }
    log = json.loads(cli("secret", "log", "KUBECONFIG", "--json")[1])
    assert [e["detail"] for e in log] == ["delivery env -> file", None]

    spec = tmp_path / "types.yaml"
    spec.write_text(SPEC)
    code, out, err = cli("env", "explain", str(spec))
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert lines["KUBECONFIG"].endswith("secret KUBECONFIG from user:alice v2, file")
    assert lines["GH_TOKEN"].endswith(
        "secret GH_TOKEN from global v1, brokered for api.github.com, uploads.github.com as token"
    )
    assert lines["PLAIN_TOKEN"].endswith("secret PLAIN_TOKEN from global v1")
    explained = {v["name"]: v for v in json.loads(cli("env", "explain", str(spec), "--json")[1])}
    assert explained["KUBECONFIG"]["delivered_as"] == "file"
    assert explained["GH_TOKEN"]["delivery"]["broker"]["hosts"] == [
        "api.github.com",
        "uploads.github.com",
    ]
    assert explained["PLAIN_TOKEN"]["delivery"] == {"type": "env", "broker": None}
    assert VALUE not in out + err


def test_a_spec_naming_docker_auth_config_is_refused(cli: Cli, tmp_path: Path) -> None:
    # Stored as a secret (the registry credentials), but never given to a step.
    assert cli("secret", "set", "DOCKER_AUTH_CONFIG", "--global", stdin=b'{"auths": {}}')[0] == 0
    spec = tmp_path / "auth.yaml"
    for env in ("      - DOCKER_AUTH_CONFIG\n", "      - docker_auth_config: '{}'\n"):
        spec.write_text(
            SPEC.replace("      - KUBECONFIG\n", env).replace(
                "      - GH_TOKEN\n      - PLAIN_TOKEN\n", ""
            )
        )
        code, _, err = cli("env", "explain", str(spec))
        assert code == 1
        assert f"{spec}:8:" in err and "registry credentials" in err
        assert "never given to a step" in err


def test_plan_refuses_docker_auth_config_whatever_else_is_wrong(tmp_path: Path) -> None:
    text = SPEC.replace("      - PLAIN_TOKEN\n", "      - DOCKER_AUTH_CONFIG\n")
    spec = load_spec_text(text, tmp_path)
    with pytest.raises(SpecError) as info:
        plan_env(spec, "user:alice", FakeSecretStore())  # nothing stored: still the name first
    assert "DOCKER_AUTH_CONFIG" in str(info.value)


def test_the_cache_key_follows_the_type() -> None:
    ref = FakeSecretStore().set("KUBECONFIG", "global", Secret(VALUE), actor="root")[0]
    prov = Provenance("secret", namespace="global", secret_id=ref.id, version=1)
    keys = {
        step_keys(
            WORKSPACE, [key_input(PlannedVar(1, "KUBECONFIG", prov, secret=ref, delivery=d))]
        )[0]
        for d in (DEFAULT_DELIVERY, FILE, GITHUB, Delivery.of("env", ["api.github.com"]))
    }
    assert len(keys) == 4


# The coordinator's API and the web pages ----------------------------------------------------


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with sqlite_world(tmp_path) as w:
        yield w


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_the_api_takes_and_shows_the_type_and_claims_carry_it(world: World, tmp_path: Path) -> None:
    alice, executor = world.client("alice"), world.client("exec")
    meta, _ = alice.secret_set("TOKEN", "user:alice", Secret(VALUE), delivery=FILE)
    assert meta.delivery == FILE
    again, _ = alice.secret_set("TOKEN", "user:alice", Secret(VALUE))
    assert (again.version, again.delivery) == (2, FILE)
    assert [m.delivery for m in alice.secrets_list(namespace="user:alice")] == [FILE]
    bad = world.http.put(
        "/api/secrets/user:alice/TOKEN",
        headers={"Authorization": f"Bearer {world.token['alice']}"},
        json={"value": VALUE, "delivery": {"type": "file", "broker": {"hosts": ["x.io"]}}},
    )
    assert bad.status_code == 422 and "cannot be brokered" in bad.text and VALUE not in bad.text
    # The executor's claim says how to deliver it.
    bundle = Bundle.from_spec_file(write_spec(tmp_path / "spec", SPEC_WITH_SECRET))
    alice.submit(bundle, "user:alice")
    claim = executor.claim("ex-a")
    assert claim is not None
    (token,) = [v for v in claim.env.steps[1] if v.name == "TOKEN"]
    assert token.delivery == FILE


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_the_web_form_takes_and_shows_the_type(tmp_path: Path) -> None:
    world = WebWorld(f"sqlite:///{tmp_path / 'state.db'}", tmp_path)
    try:
        alice = world.signed_in("alice")
        token = csrf_of(alice.get("/secrets/user:alice").text)
        form = {"csrf_token": token, "name": "KUBECONFIG", "value": VALUE, "type": "file"}
        assert alice.post("/secrets/user:alice", data=form).status_code == 303
        page = alice.get("/secrets/user:alice").text
        assert '<td class="type">file</td>' in page
        update = alice.get("/secrets/user:alice/KUBECONFIG/update").text
        assert '<option value="file" selected>' in update
        refused = alice.post(
            "/secrets/user:alice/KUBECONFIG/update",
            data={
                "csrf_token": token,
                "value": VALUE,
                "type": "file",
                "broker_hosts": "api.github.com",
            },
        )
        assert refused.status_code == 422
        assert "a file secret cannot be brokered" in refused.text and VALUE not in refused.text
        brokered = alice.post(
            "/secrets/user:alice/KUBECONFIG/update",
            data={
                "csrf_token": token,
                "value": VALUE,
                "type": "env",
                "broker_hosts": "api.github.com, uploads.github.com",
                "broker_as": "bearer",
            },
        )
        assert brokered.status_code == 303
        page = alice.get("/secrets/user:alice").text
        assert '<td class="type">brokered for api.github.com, uploads.github.com</td>' in page
        meta = world.secrets.get("KUBECONFIG", "user:alice")
        assert meta is not None and meta.version == 2
    finally:
        world.close()
