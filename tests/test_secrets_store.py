"""The store's contract, run against the fake, SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest

from runner.errors import (
    SecretNotFoundError,
    SecretValidationError,
    StaleSecretError,
    UsageError,
)
from runner.secrets.models import AuditEvent
from runner.secrets.store import SecretStore
from runner.secrets.value import Secret
from runner.users.directory import UserDirectory
from tests import test_secrets_support as support

store = support.store
users = support.users

VALUE = "s3cr3t-value-1"
OTHER = "an0ther-value-2"


def test_first_write_creates_version_1_and_later_writes_add_versions(store: SecretStore) -> None:
    first, created = store.set("GH_TOKEN", "user:alice", Secret(VALUE), actor="alice")
    assert created is True
    assert (first.name, first.namespace, first.scope, first.version) == (
        "GH_TOKEN",
        "user:alice",
        "batches",
        1,
    )
    assert first.created_by == first.updated_by == "alice"

    second, created = store.set("GH_TOKEN", "user:alice", Secret(OTHER), actor="bob")
    third, _ = store.set("GH_TOKEN", "user:alice", Secret(VALUE), actor="carol")
    assert created is False
    assert second.id == third.id == first.id
    assert (second.version, third.version) == (2, 3)
    assert third.created_by == "alice"
    assert third.created_at == first.created_at
    assert third.updated_by == "carol"
    assert third.updated_at >= second.updated_at >= first.updated_at


def test_a_name_not_in_upper_case_is_refused_with_the_upper_case_suggestion(
    store: SecretStore,
) -> None:
    for typed in ("gh_token", "Gh_Token"):
        with pytest.raises(SecretValidationError, match="did you mean GH_TOKEN"):
            store.set(typed, "global", Secret(VALUE), actor="root")
    assert store.list() == []  # nothing stored under a changed name
    meta, _ = store.set("GH_TOKEN", "global", Secret(VALUE), actor="root")
    with pytest.raises(SecretValidationError, match="did you mean GH_TOKEN"):
        store.get("gh_token", "global")
    # A step's env name is looked up in upper case: `gh_token` uses GH_TOKEN.
    assert store.resolve("gh_token", "user:alice") == meta


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("1TOKEN", "invalid secret name"),
        ("GH-TOKEN", "invalid secret name"),
        ("GH_TOKEN\n", "invalid secret name"),
        ("", "empty"),
        ("A" * 129, "at most 128"),
        ("RUNNER_TOKEN", "RUNNER_"),
        ("runner_x", "RUNNER_"),
        ("LD_PRELOAD", "loaded or run"),
        ("PATH", "loaded or run"),
        ("git_ssh_command", "loaded or run"),
        ("NODE_OPTIONS", "loaded or run"),
    ],
)
def test_refused_names_say_what_to_do(store: SecretStore, name: str, says: str) -> None:
    with pytest.raises(SecretValidationError) as info:
        store.set(name, "global", Secret(VALUE), actor="root")
    assert says in str(info.value)
    assert info.value.hint
    assert store.list() == []


def test_a_128_character_name_is_accepted(store: SecretStore) -> None:
    meta, _ = store.set("A" * 128, "global", Secret(VALUE), actor="root")
    assert len(meta.name) == 128


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("1234567", "at least 8 characters"),
        ("abc\x00defgh", "NUL"),
        ("x" * (48 * 1024 + 1), "at most 48 KiB"),
        ("é" * (24 * 1024 + 1), "at most 48 KiB"),
        ("abcdefgh\udc80", "UTF-8"),
    ],
)
def test_refused_values_never_show_the_value(store: SecretStore, value: str, says: str) -> None:
    with pytest.raises(SecretValidationError) as info:
        store.set("TOKEN", "global", Secret(value), actor="root")
    assert says in str(info.value)
    assert value not in str(info.value)
    assert store.list() == []
    assert store.log() == []


def test_short_value_message_explains_redaction(store: SecretStore) -> None:
    with pytest.raises(SecretValidationError) as info:
        store.set("TOKEN", "global", Secret("short"), actor="root")
    assert str(info.value) == (
        "secret values must be at least 8 characters — a shorter value cannot be redacted safely"
    )


@pytest.mark.parametrize("value", ["12345678", "x" * (48 * 1024), "é" * (24 * 1024), "ééééééé€"])
def test_boundary_values_are_accepted(store: SecretStore, value: str) -> None:
    meta, _ = store.set("TOKEN", "global", Secret(value), actor="root")
    assert store.reveal(meta, version=1, actor="root") == Secret(value)


def test_bad_namespaces_and_scopes_are_refused(store: SecretStore) -> None:
    with pytest.raises(UsageError):
        store.set("TOKEN", "team:x", Secret(VALUE), actor="root")
    with pytest.raises(UsageError):
        store.set("TOKEN", "user:", Secret(VALUE), actor="root")
    with pytest.raises(SecretValidationError, match="scope"):
        store.set("TOKEN", "global", Secret(VALUE), scope="deploys", actor="root")


def test_unique_per_name_namespace_and_scope(store: SecretStore) -> None:
    a, _ = store.set("TOKEN", "global", Secret(VALUE), actor="root")
    b, _ = store.set("TOKEN", "global", Secret(VALUE), scope="codeintel", actor="root")
    c, _ = store.set("TOKEN", "org:acme", Secret(VALUE), actor="root")
    d, _ = store.set("TOKEN", "user:alice", Secret(VALUE), actor="root")
    assert len({a.id, b.id, c.id, d.id}) == 4
    assert {m.version for m in (a, b, c, d)} == {1}
    assert store.get("TOKEN", "global", scope="codeintel") == b
    assert len(store.list()) == 4


def test_removed_secret_is_gone_and_its_id_is_never_reused(store: SecretStore) -> None:
    first, _ = store.set("TOKEN", "org:acme", Secret(VALUE), actor="root")
    store.set("TOKEN", "org:acme", Secret(OTHER), actor="root")
    removed = store.remove("TOKEN", "org:acme", actor="bob")
    assert (removed.id, removed.version) == (first.id, 2)
    assert store.get("TOKEN", "org:acme") is None
    assert store.resolve("TOKEN", "org:acme") is None
    assert store.list() == []
    with pytest.raises(SecretNotFoundError) as info:
        store.remove("TOKEN", "org:acme", actor="bob")
    assert "TOKEN in org:acme" in str(info.value)

    again, created = store.set("TOKEN", "org:acme", Secret(VALUE), actor="root")
    assert created is True
    assert again.version == 1
    assert again.id != first.id


def test_reveal_returns_the_current_value_and_records_the_access(store: SecretStore) -> None:
    store.set("TOKEN", "user:alice", Secret(VALUE), actor="alice")
    meta, _ = store.set("TOKEN", "user:alice", Secret(OTHER), actor="alice")
    value = store.reveal(meta, version=2, actor="executor-1", run_id="job-7", step=3)
    assert value == Secret(OTHER)
    assert isinstance(value, Secret)
    accesses = [e for e in store.log() if e.event == "accessed"]
    assert len(accesses) == 1
    access = accesses[0]
    assert (access.actor, access.job, access.step, access.version) == ("executor-1", "job-7", 3, 2)
    assert (access.secret_id, access.name, access.namespace) == (meta.id, "TOKEN", "user:alice")
    # By id, too.
    assert store.reveal(meta.id, version=2, actor="x") == Secret(OTHER)


def test_a_superseded_version_does_not_resolve(store: SecretStore) -> None:
    old, _ = store.set("TOKEN", "user:alice", Secret(VALUE), actor="alice")
    store.set("TOKEN", "user:alice", Secret(OTHER), actor="alice")
    with pytest.raises(StaleSecretError) as info:
        store.reveal(old, version=1, actor="x")
    assert "v1 asked for, v2 is current" in str(info.value)
    assert "re-run" in str(info.value)
    assert [e.event for e in store.log()] == ["created", "updated"]


def test_a_removed_secret_does_not_reveal(store: SecretStore) -> None:
    meta, _ = store.set("TOKEN", "user:alice", Secret(VALUE), actor="alice")
    store.remove("TOKEN", "user:alice", actor="alice")
    with pytest.raises(StaleSecretError, match="removed"):
        store.reveal(meta, version=1, actor="x")
    with pytest.raises(SecretNotFoundError):
        store.reveal("sec_doesnotexist", version=1, actor="x")


def test_namespaced_secret_is_preferred_over_the_global_one(store: SecretStore) -> None:
    glob, _ = store.set("TOKEN", "global", Secret(VALUE), actor="root")
    mine, _ = store.set("TOKEN", "user:alice", Secret(OTHER), actor="alice")
    org, _ = store.set("TOKEN", "org:acme", Secret(OTHER), actor="root")

    resolved = store.resolve("token", "user:alice")
    assert resolved is not None
    assert (resolved.id, resolved.overrides_global) == (mine.id, True)
    org_resolved = store.resolve("TOKEN", "org:acme")
    assert org_resolved is not None
    assert org_resolved.id == org.id
    # bob has no secret of his own: the global one.
    bob = store.resolve("TOKEN", "user:bob")
    assert bob is not None
    assert (bob.id, bob.overrides_global) == (glob.id, False)
    # Resolving writes nothing to the audit log.
    assert {e.event for e in store.log()} == {"created"}


def test_a_users_secrets_are_not_visible_to_an_orgs_jobs(
    store: SecretStore, users: UserDirectory
) -> None:
    users.add_member("acme", "alice")
    store.set("PERSONAL", "user:alice", Secret(VALUE), actor="alice")
    assert store.resolve("PERSONAL", "org:acme") is None
    assert store.resolve("PERSONAL", "user:bob") is None
    assert store.resolve("PERSONAL", "global") is None
    store.set("ORG_ONLY", "org:acme", Secret(VALUE), actor="alice")
    assert store.resolve("ORG_ONLY", "user:alice") is None
    assert store.list(visible_from="org:acme")[0].name == "ORG_ONLY"
    assert [m.name for m in store.list(visible_from="user:alice")] == ["PERSONAL"]


def test_resolve_keeps_scopes_apart(store: SecretStore) -> None:
    store.set("TOKEN", "user:alice", Secret(VALUE), scope="codeintel", actor="alice")
    glob, _ = store.set("TOKEN", "global", Secret(VALUE), actor="root")
    batches = store.resolve("TOKEN", "user:alice")
    assert batches is not None
    assert batches.id == glob.id
    codeintel = store.resolve("TOKEN", "user:alice", scope="codeintel")
    assert codeintel is not None
    assert (codeintel.namespace, codeintel.overrides_global) == ("user:alice", False)


def test_list_filters(store: SecretStore) -> None:
    store.set("A_TOKEN", "global", Secret(VALUE), actor="root")
    store.set("B_TOKEN", "global", Secret(VALUE), actor="root")
    store.set("B_TOKEN", "user:alice", Secret(VALUE), actor="alice")
    store.set("C_TOKEN", "user:bob", Secret(VALUE), actor="bob")
    store.set("D_TOKEN", "org:acme", Secret(VALUE), scope="codeintel", actor="root")

    everything = store.list()
    assert [(m.name, m.namespace) for m in everything] == [
        ("A_TOKEN", "global"),
        ("B_TOKEN", "global"),
        ("B_TOKEN", "user:alice"),
        ("C_TOKEN", "user:bob"),
        ("D_TOKEN", "org:acme"),
    ]
    assert [m.overrides_global for m in everything] == [False, False, True, False, False]
    assert [m.name for m in store.list(namespace="global")] == ["A_TOKEN", "B_TOKEN"]
    assert [m.name for m in store.list(scope="codeintel")] == ["D_TOKEN"]
    # What alice's jobs see: her B_TOKEN shadows the global one.
    seen = store.list(visible_from="user:alice")
    assert [(m.name, m.namespace) for m in seen] == [
        ("A_TOKEN", "global"),
        ("B_TOKEN", "user:alice"),
    ]
    assert [m.name for m in store.list(visible_from="org:acme", scope="batches")] == [
        "A_TOKEN",
        "B_TOKEN",
    ]


def test_audit_log_records_every_change_and_outlives_the_secret(store: SecretStore) -> None:
    created, _ = store.set("TOKEN", "user:alice", Secret(VALUE), actor="alice")
    store.set("TOKEN", "user:alice", Secret(OTHER), actor="alice")
    store.reveal(created.id, version=2, actor="exec", run_id="run-1", step=1)
    store.remove("TOKEN", "user:alice", actor="admin")
    store.set("OTHER", "global", Secret(VALUE), actor="root")

    log = store.log("TOKEN")
    assert [(e.event, e.actor, e.version) for e in log] == [
        ("created", "alice", 1),
        ("updated", "alice", 2),
        ("accessed", "exec", 2),
        ("deleted", "admin", 2),
    ]
    assert all(e.secret_id == created.id for e in log)
    assert all((e.name, e.namespace, e.scope) == ("TOKEN", "user:alice", "batches") for e in log)
    assert [e.at for e in log] == sorted(e.at for e in log)
    assert len(store.log()) == 5
    assert [e.name for e in store.log(namespace="global")] == ["OTHER"]


def test_other_components_record_events(store: SecretStore) -> None:
    meta, _ = store.set("TOKEN", "global", Secret(VALUE), actor="root")
    store.record(
        AuditEvent(
            event="cache_invalidated",
            actor="cache",
            secret_id=meta.id,
            name=meta.name,
            namespace=meta.namespace,
            scope=meta.scope,
            version=meta.version,
            count=4,
        )
    )
    last = store.log("TOKEN")[-1]
    assert (last.event, last.count, last.actor) == ("cache_invalidated", 4, "cache")
    with pytest.raises(ValueError, match="unknown audit event"):
        store.record(AuditEvent(event="viewed", actor="x"))
