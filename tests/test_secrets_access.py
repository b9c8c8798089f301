"""Who may change, view, use and run where; every refusal is on record."""

from __future__ import annotations

import pytest

from runner.errors import PermissionDeniedError
from runner.namespaces import org, user
from runner.secrets.access import AccessPolicy
from runner.secrets.store import SecretStore
from runner.secrets.value import Secret
from runner.users.directory import UserDirectory
from tests import test_secrets_support as support

store = support.store
users = support.users

VALUE = "s3cr3t-value-1"


@pytest.fixture
def people(store: SecretStore, users: UserDirectory) -> AccessPolicy:
    users.add_user("root", admin=True)
    users.add_user("alice")
    users.add_user("bob")
    users.add_member("acme", "alice")
    return AccessPolicy(users, store)


def test_who_may_change_what(people: AccessPolicy) -> None:
    assert people.can_manage("root", "global")
    assert people.can_manage("root", "user:alice")
    assert people.can_manage("root", "org:acme")
    assert not people.can_manage("alice", "global")
    assert people.can_manage("alice", "user:alice")
    assert not people.can_manage("alice", "user:bob")
    assert people.can_manage("alice", "org:acme")
    assert not people.can_manage("bob", "org:acme")
    assert not people.can_manage("mallory", "user:mallory"), "unknown users have no rights"


def test_everyone_may_view_globals_but_not_others_namespaces(people: AccessPolicy) -> None:
    assert people.can_view("bob", "global")
    assert people.can_view("bob", "user:bob")
    assert not people.can_view("bob", "user:alice")
    assert not people.can_view("bob", "org:acme")
    assert people.can_view("alice", "org:acme")


def test_jobs_run_only_in_ones_own_namespaces_even_for_admins(people: AccessPolicy) -> None:
    assert people.can_run_in("alice", "user:alice")
    assert people.can_run_in("alice", "org:acme")
    assert not people.can_run_in("bob", "org:acme")
    assert not people.can_run_in("root", "user:alice")
    assert not people.can_run_in("root", "global")


def test_a_job_uses_only_its_namespaces_and_global(
    people: AccessPolicy, store: SecretStore
) -> None:
    personal, _ = store.set("TOKEN", "user:alice", Secret(VALUE), actor="alice")
    glob, _ = store.set("TOKEN", "global", Secret(VALUE), actor="root")
    org, _ = store.set("TOKEN", "org:acme", Secret(VALUE), actor="alice")
    assert people.can_use("user:alice", personal)
    assert people.can_use("user:alice", glob)
    assert not people.can_use("user:alice", org)
    assert people.can_use("org:acme", org)
    assert people.can_use("org:acme", glob)
    assert not people.can_use("org:acme", personal), "a user's secrets never reach an org's job"


def test_refusals_raise_and_are_audited(people: AccessPolicy, store: SecretStore) -> None:
    personal, _ = store.set("TOKEN", "user:alice", Secret(VALUE), actor="alice")
    with pytest.raises(PermissionDeniedError) as info:
        people.check_manage("bob", org("acme"), name="DEPLOY_KEY", scope="batches")
    assert (
        str(info.value)
        == "bob may not change secrets in org:acme — ask a member of acme or an admin to do it"
    )
    with pytest.raises(PermissionDeniedError, match="global"):
        people.check_run_in("alice", "global")
    with pytest.raises(PermissionDeniedError):
        people.check_view("bob", user("alice"))
    with pytest.raises(PermissionDeniedError, match="may not use secret TOKEN in user:alice"):
        people.check_use("org:acme", personal, actor="alice", job="job-9", step=2)

    denied = [e for e in store.log() if e.event == "denied"]
    assert [e.actor for e in denied] == ["bob", "alice", "bob", "alice"]
    assert (denied[0].name, denied[0].namespace) == ("DEPLOY_KEY", "org:acme")
    assert (denied[3].secret_id, denied[3].job, denied[3].step) == (personal.id, "job-9", 2)
    # Allowed checks pass silently and write nothing.
    people.check_manage("alice", user("alice"))
    people.check_run_in("alice", "org:acme")
    people.check_use("user:alice", personal, actor="alice")
    assert len([e for e in store.log() if e.event == "denied"]) == 4
