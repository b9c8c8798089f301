"""A claim keeps its submission's checks only while nothing they read has changed (issue 21).

The checks (the submitter's rights, the secrets' and registry credentials'
metadata, the namespace's policy) are made once per submission and kept under
the claim stamp the claim's own statement read; a write to any of those tables
raises the stamp in the database, whoever writes. So the writes here come from
a second connection, as another replica or `runner secret set` on the
server's database would make them, and each must reach the very next claim.
Also: jobs queued before a database had a turn row per namespace are claimed
after the upgrade.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner.db import Database, connect, db_time
from runner.execute.registry import AuthSource, find_registry_auth
from runner.migrations import registered
from runner.queue.bundle import Bundle
from runner.queue.client import Claim
from runner.queue.policies import SqlPolicyStore
from runner.queue.store import FAIR_TURNS, SqlJobStore
from runner.sandbox.tighten import NamespacePolicy
from runner.secrets.store import SqlSecretStore
from runner.secrets.value import Secret
from runner.testing.clock import FakeClock
from runner.users.sql import SqlUserDirectory
from tests.test_queue_support import (
    BACKENDS,
    ORG_VALUE,
    SPEC_WITH_SECRET,
    World,
    fresh_postgres_database,
    world,
    write_spec,
)

__all__ = ["world"]  # the fixture, on each backend
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

AUTH = json.dumps({"auths": {"registry.example.com": {"auth": "dXNlcjpwYXNzd29yZDEyMzQ="}}})


@pytest.fixture
def elsewhere(world: World) -> Iterator[Database]:
    """A second connection to the coordinator's database."""
    db = connect(world.db.url)
    yield db
    db.close()


def count_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The namespaces whose registry credentials the coordinator resolves from now on
    (once per check of a claim's metadata)."""
    seen: list[str] = []

    def counting(store: AuthSource, namespace: str) -> object:
        seen.append(namespace)
        return find_registry_auth(store, namespace)

    monkeypatch.setattr("runner.queue.service.find_registry_auth", counting)
    return seen


def test_each_change_made_elsewhere_reaches_the_next_claim_and_nothing_else_rechecks(
    world: World, elsewhere: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = count_checks(monkeypatch)
    carol, executor = world.client("carol"), world.client("exec")
    carol.secret_set("TOKEN", "org:acme", Secret(ORG_VALUE))
    bundle = Bundle.from_spec_file(write_spec(tmp_path / "spec", SPEC_WITH_SECRET))
    alice = world.client("alice")
    secrets = SqlSecretStore(elsewhere, world.secrets.keyring)

    def two_claims(change: Callable[[], object] | None) -> Claim | None:
        """Submit two jobs; claim one, make the change elsewhere, claim the other."""
        alice.submit(bundle, "org:acme")
        first = executor.claim("ex-a")
        assert first is not None
        executor.complete(first.job_id, first.lease, {"status": "unchanged"})
        checks.clear()
        if change is not None:
            change()
        claimed: Claim | None = executor.claim("ex-b")
        return claimed

    # Nothing changed that a check reads (a completion, audit events, a token's use):
    # the second claim of the submission reuses the first one's checks.
    second = two_claims(None)
    assert second is not None and checks == []
    assert [s.reveal() for s in second.secrets.values()] == [ORG_VALUE]
    executor.complete(second.job_id, second.lease, {"status": "unchanged"})

    # A new version of a secret: the next claim hands it out.
    second = two_claims(
        lambda: secrets.set("TOKEN", "org:acme", Secret(ORG_VALUE + "-v2"), actor="carol")
    )
    assert second is not None and checks == ["org:acme"]
    assert [s.reveal() for s in second.secrets.values()] == [ORG_VALUE + "-v2"]
    executor.complete(second.job_id, second.lease, {"status": "unchanged"})

    # Registry credentials set, then a policy: each reaches the next claim.
    second = two_claims(
        lambda: secrets.set("DOCKER_AUTH_CONFIG", "org:acme", Secret(AUTH), actor="carol")
    )
    assert second is not None and second.registry_auth is not None
    assert second.registry_auth.reveal() == AUTH
    executor.complete(second.job_id, second.lease, {"status": "unchanged"})
    policies = SqlPolicyStore(elsewhere)
    second = two_claims(
        lambda: policies.set("org:acme", NamespacePolicy(isolation="gvisor"), actor="carol")
    )
    assert second is not None and second.policy.isolation == "gvisor"
    executor.complete(second.job_id, second.lease, {"status": "unchanged"})

    # A membership removed: the next claim refuses the job, as it did before any keeping.
    refused = two_claims(lambda: SqlUserDirectory(elsewhere).remove_member("acme", "alice"))
    assert refused is None
    failed = [j for j in carol.jobs_list() if j["state"] == "failed"]
    assert len(failed) == 1 and "alice may not run jobs in org:acme" in failed[0]["error"]


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a database with no table yet, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        yield url


def test_jobs_queued_before_the_turn_rows_are_claimed_after_the_upgrade(empty_url: str) -> None:
    """A database whose jobs were queued before each namespace had its turn row."""
    _claims_after_upgrade(empty_url)


def _claims_after_upgrade(url: str) -> None:
    before = [m for m in registered() if m.version < FAIR_TURNS.version]
    now = db_time(FakeClock().now())
    with connect(url, migrations=before) as db:
        db.once(
            "INSERT INTO runner_submissions (id, namespace, submitter, spec_name, bundle,"
            " created_at) VALUES ('sub_old', 'user:alice', 'alice', 's', '{}', ?)",
            [now],
        )
        for n, namespace in enumerate(["user:alice", "user:alice", "org:acme"]):
            db.once(
                "INSERT INTO runner_jobs (id, submission_id, namespace, submitter, state,"
                " repository, branch, commit_sha, path, payload, created_at)"
                " VALUES (?, 'sub_old', ?, 'alice', 'queued', 'r', 'main', 'c', '', '{}', ?)",
                [f"job_old{n}", namespace, now],
            )
        store = SqlJobStore(db)
        claimed = [store.claim("ex") for _ in range(4)]
    ids = [lease.job.id for lease in claimed if lease is not None]
    # Every old job, the two namespaces taking turns from the oldest job on.
    assert ids == ["job_old0", "job_old2", "job_old1"]
