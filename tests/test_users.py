"""The user directory's contract, run against the fake, SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest

from runner.errors import RunnerError
from runner.namespaces import GLOBAL, org, user
from runner.users.directory import UserDirectory, ensure_owner
from tests import test_secrets_support as support

directory = support.directory


def test_users_and_orgs(directory: UserDirectory) -> None:
    assert directory.add_user("alice") is True
    assert directory.add_user("alice") is False
    assert directory.is_admin("alice") is False
    assert directory.add_user("alice", admin=True) is False
    assert directory.is_admin("alice") is True
    assert directory.add_user("alice") is False
    assert directory.is_admin("alice") is True, "adding again never demotes"
    assert directory.is_admin("nobody") is False

    assert directory.add_org("acme") is True
    assert directory.add_org("acme") is False
    assert directory.add_member("acme", "bob") is True
    assert directory.add_member("acme", "bob") is False
    assert directory.add_member("beta", "bob") is True
    assert directory.orgs_of("bob") == ["acme", "beta"]
    assert directory.org_members("acme") == ["bob"]
    assert [u.name for u in directory.users()] == ["alice", "bob"]
    assert [o.name for o in directory.orgs()] == ["acme", "beta"]
    assert directory.remove_member("acme", "bob") is True
    assert directory.remove_member("acme", "bob") is False
    assert directory.orgs_of("bob") == ["beta"]
    assert directory.org_members("acme") == []
    assert directory.get_user("zed") is None
    assert directory.get_org("zed") is None
    with pytest.raises(RunnerError):
        directory.add_user("not a name")
    with pytest.raises(RunnerError):
        directory.add_org("org:acme")


def test_records_carry_their_relations_in_name_order(directory: UserDirectory) -> None:
    directory.add_member("zeta", "carol")
    directory.add_member("acme", "carol")
    directory.add_member("acme", "alice")
    carol = directory.get_user("carol")
    acme = directory.get_org("acme")
    assert carol is not None and acme is not None
    assert carol.orgs == ("acme", "zeta")
    assert acme.members == ("alice", "carol")
    assert [(u.name, u.orgs) for u in directory.users()] == [
        ("alice", ("acme",)),
        ("carol", ("acme", "zeta")),
    ]
    assert [(o.name, o.members) for o in directory.orgs()] == [
        ("acme", ("alice", "carol")),
        ("zeta", ("carol",)),
    ]


def test_records_as_json(directory: UserDirectory) -> None:
    directory.add_user("root", admin=True)
    directory.add_member("acme", "root")
    root = directory.get_user("root")
    acme = directory.get_org("acme")
    assert root is not None and acme is not None
    as_json = root.to_json()
    assert list(as_json) == ["name", "admin", "created_at", "orgs"]
    assert (as_json["name"], as_json["admin"], as_json["orgs"]) == ("root", True, ["acme"])
    assert as_json["created_at"].endswith("Z")
    assert acme.to_json()["members"] == ["root"]
    assert list(acme.to_json()) == ["name", "created_at", "members"]


def test_ensure_owner_creates_the_record_a_namespace_names(directory: UserDirectory) -> None:
    ensure_owner(directory, user("dave"))
    ensure_owner(directory, org("beta"))
    ensure_owner(directory, GLOBAL)
    assert [u.name for u in directory.users()] == ["dave"]
    assert [o.name for o in directory.orgs()] == ["beta"]
    directory.add_user("dave", admin=True)
    ensure_owner(directory, user("dave"))
    assert directory.is_admin("dave"), "an existing record is kept as it is"
