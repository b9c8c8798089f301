"""The coordinator's HTTP API on SQLite and PostgreSQL: auth, permissions, submit, claim."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runner.cache import CacheEntry
from runner.cache.remote import CoordinatorStepCache
from runner.errors import (
    BundleError,
    CoordinatorError,
    JobNotFoundError,
    LeaseLostError,
    MissingSecretsError,
    NotAuthenticatedError,
    PermissionDeniedError,
)
from runner.queue.bundle import Bundle
from runner.queue.client import Claim
from runner.redact import active
from runner.secrets.value import Secret
from tests.test_queue_support import (
    ORG_VALUE,
    SPEC_PLAIN,
    SPEC_WITH_SECRET,
    TOKEN_VALUE,
    World,
    leaks,
    world,
    write_spec,
)

__all__ = ["world"]  # a fixture, used by name

# Starlette's TestClient asks for a package we do not use; the warning is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


def bundle(tmp_path: Path, text: str = SPEC_WITH_SECRET) -> Bundle:
    return Bundle.from_spec_file(write_spec(tmp_path / "spec", text))


def db_dump(world: World) -> bytes:
    tables = ["runner_jobs", "runner_submissions", "runner_job_logs", "secret_audit"]
    out = []
    with world.db.transaction(write=False) as tx:
        for table in tables:
            out.append(repr(tx.all(f"SELECT * FROM {table}")))  # noqa: S608
    return "\n".join(out).encode()


def accessed(world: World) -> list[Any]:
    return [e for e in world.secrets.log() if e.event == "accessed"]


def test_openapi_document_is_served(world: World) -> None:
    response = world.http.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/api/submissions" in paths and "/api/executor/claim" in paths


def test_requests_without_a_valid_token_are_refused_with_json(world: World) -> None:
    for headers in ({}, {"Authorization": "Bearer rnr_nonsense"}, {"Authorization": "Basic x"}):
        response = world.http.get("/api/jobs", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "NotAuthenticatedError"
    alice = world.client("alice")
    assert alice.whoami()["name"] == "alice"
    (record,) = [t for t in world.tokens.list() if t.owner == "alice"]
    world.tokens.revoke(record.id)
    with pytest.raises(NotAuthenticatedError, match="unknown or revoked"):
        alice.whoami()


def test_token_kinds_are_kept_apart(world: World) -> None:
    with pytest.raises(PermissionDeniedError, match="executor tokens cannot use the user API"):
        world.client("exec").jobs_list()
    with pytest.raises(PermissionDeniedError, match="user tokens cannot use the executor API"):
        world.client("alice").claim()
    with pytest.raises(PermissionDeniedError):
        world.client("alice").heartbeat(None, {})
    with pytest.raises(PermissionDeniedError):
        world.client("bob").cache_get("0" * 64)


def test_submit_queues_one_job_per_workspace_and_decrypts_nothing(
    world: World, tmp_path: Path
) -> None:
    alice = world.client("alice")
    alice.secret_set("TOKEN", "user:alice", Secret(TOKEN_VALUE))
    answer = alice.submit(bundle(tmp_path), "user:alice")
    jobs = answer["jobs"]
    assert [j["repository"] for j in jobs] == ["github.com/acme/one", "github.com/acme/two"]
    assert {j["state"] for j in jobs} == {"queued"}
    assert accessed(world) == []
    assert leaks(TOKEN_VALUE, db_dump(world)) == []
    shown = alice.job_show(jobs[0]["id"])
    (step,) = shown["env"]["steps"].values()
    token = next(v for v in step if v["name"] == "TOKEN")
    assert token["source"] == "secret" and token["namespace"] == "user:alice"
    assert token["version"] == 1 and "value" not in token


def test_submit_refuses_a_missing_secret_and_queues_nothing(world: World, tmp_path: Path) -> None:
    with pytest.raises(MissingSecretsError, match="TOKEN"):
        world.client("alice").submit(bundle(tmp_path), "user:alice")
    assert world.jobs.list() == []


def test_users_cannot_act_in_foreign_namespaces(world: World, tmp_path: Path) -> None:
    alice, bob = world.client("alice"), world.client("bob")
    plain = bundle(tmp_path, SPEC_PLAIN)
    for namespace in ("user:bob", "org:other", "global"):
        with pytest.raises(PermissionDeniedError, match="may not run jobs"):
            alice.submit(plain, namespace)
    job_id = alice.submit(plain, "org:acme")["jobs"][0]["id"]
    assert [j["id"] for j in alice.jobs_list()] == [job_id]
    assert bob.jobs_list() == []
    assert [j["id"] for j in world.client("carol").jobs_list()] == [job_id]
    for call in (bob.job_show, bob.job_logs, bob.job_cancel, bob.job_result):
        with pytest.raises(PermissionDeniedError, match="bob may not see jobs in org:acme"):
            call(job_id)
    assert world.jobs.get(job_id).state == "queued"  # type: ignore[union-attr]
    # Secrets of others: neither managed nor listed.
    with pytest.raises(PermissionDeniedError):
        alice.secret_set("TOKEN", "user:bob", Secret(TOKEN_VALUE))
    with pytest.raises(PermissionDeniedError):
        alice.secret_set("TOKEN", "global", Secret(TOKEN_VALUE))
    bob.secret_set("BOBS", "user:bob", Secret("bob-0123456789"))
    with pytest.raises(PermissionDeniedError):
        alice.secrets_list(namespace="user:bob")
    with pytest.raises(PermissionDeniedError):
        alice.secret_remove("BOBS", "user:bob")
    with pytest.raises(PermissionDeniedError):
        alice.secret_log(namespace="user:bob")
    assert "BOBS" not in {m.name for m in alice.secrets_list()}
    assert "BOBS" not in {e.name for e in alice.secret_log()}
    assert [m.name for m in bob.secrets_list()] == ["BOBS"]


def test_remote_secret_commands_for_own_namespace(world: World) -> None:
    alice = world.client("alice")
    meta, created = alice.secret_set("TOKEN", "user:alice", Secret(TOKEN_VALUE))
    assert created and meta.version == 1 and meta.namespace == "user:alice"
    meta, created = alice.secret_set("TOKEN", "user:alice", Secret(TOKEN_VALUE + "2"))
    assert not created and meta.version == 2
    assert [(m.name, m.version) for m in alice.secrets_list(namespace="user:alice")] == [
        ("TOKEN", 2)
    ]
    removed = alice.secret_remove("TOKEN", "user:alice")
    assert removed.name == "TOKEN"
    events = [e.event for e in alice.secret_log("TOKEN", namespace="user:alice")]
    assert events == ["created", "updated", "deleted"]
    raw = world.http.get(
        "/api/secrets/log", headers={"Authorization": f"Bearer {world.token['alice']}"}
    ).content
    assert leaks(TOKEN_VALUE, raw) == []


def test_remote_env_explain_shows_provenance_only(world: World, tmp_path: Path) -> None:
    alice = world.client("alice")
    alice.secret_set("TOKEN", "user:alice", Secret(TOKEN_VALUE))
    answer = alice.env_explain(bundle(tmp_path), "user:alice")
    by_name = {v["name"]: v for v in answer["variables"]}
    assert by_name["TOKEN"]["source"] == "secret"
    assert by_name["TOKEN"]["namespace"] == "user:alice"
    assert by_name["GREETING"]["value"] == "hello"
    assert "secret TOKEN from user:alice v1" in answer["text"]
    assert leaks(TOKEN_VALUE, json.dumps(answer).encode()) == []
    with pytest.raises(PermissionDeniedError):
        world.client("bob").env_explain(bundle(tmp_path), "user:alice")


def test_claim_decrypts_and_audits_once_per_secret_per_job(world: World, tmp_path: Path) -> None:
    alice, executor = world.client("alice"), world.client("exec")
    alice.secret_set("TOKEN", "user:alice", Secret(TOKEN_VALUE))
    ids = [j["id"] for j in alice.submit(bundle(tmp_path), "user:alice")["jobs"]]
    first = executor.claim("ex-a")
    second = executor.claim("ex-b")
    assert executor.claim("ex-a") is None
    assert isinstance(first, Claim) and isinstance(second, Claim)
    assert {first.job_id, second.job_id} == set(ids)
    (secret_id,) = first.secrets
    assert first.secrets[secret_id].reveal() == TOKEN_VALUE
    assert TOKEN_VALUE not in repr(first)
    assert first.env.secrets()[0].id == secret_id
    events = accessed(world)
    assert sorted((e.job, e.actor, e.name) for e in events) == sorted(
        [
            (first.job_id, "executor:ex-a", "TOKEN"),
            (second.job_id, "executor:ex-b", "TOKEN"),
        ]
    )
    assert all(e.step == 1 and e.version == 1 for e in events)
    assert leaks(TOKEN_VALUE, db_dump(world)) == []
    # Redacted only while the answer was built: the coordinator keeps no value.
    assert active().redact(TOKEN_VALUE) == TOKEN_VALUE


def test_a_secret_removed_after_submit_fails_its_job_at_claim(world: World, tmp_path: Path) -> None:
    alice = world.client("alice")
    alice.secret_set("TOKEN", "user:alice", Secret(TOKEN_VALUE))
    ids = [j["id"] for j in alice.submit(bundle(tmp_path), "user:alice")["jobs"]]
    alice.secret_remove("TOKEN", "user:alice")
    assert world.client("exec").claim() is None
    for job_id in ids:
        job = alice.job_show(job_id)
        assert job["state"] == "failed"
        assert "TOKEN" in job["error"] and "removed after it was submitted" in job["error"]
    assert accessed(world) == []


def test_a_lost_membership_fails_the_job_at_claim(world: World, tmp_path: Path) -> None:
    alice, carol = world.client("alice"), world.client("carol")
    carol.secret_set("TOKEN", "org:acme", Secret(ORG_VALUE))
    spec = SPEC_WITH_SECRET.replace("  - repository: github.com/acme/two\n", "")
    (job,) = alice.submit(bundle(tmp_path, spec), "org:acme")["jobs"]
    world.users.remove_member("acme", "alice")
    assert world.client("exec").claim() is None
    shown = carol.job_show(job["id"])
    assert shown["state"] == "failed"
    assert "alice may not run jobs in org:acme" in shown["error"]
    assert accessed(world) == []
    assert "rights changed after the job was submitted" in shown["error"]
    assert any(
        e.event == "denied" and e.actor == "alice" and e.namespace == "org:acme"
        for e in world.secrets.log()
    )


def test_a_late_write_with_a_stale_lease_is_refused(world: World, tmp_path: Path) -> None:
    alice, executor = world.client("alice"), world.client("exec")
    (job,) = alice.submit(bundle(tmp_path, SPEC_PLAIN), "user:alice")["jobs"]
    dead = executor.claim("ex-dead")
    assert dead is not None
    world.clock.advance(31)
    (reset,) = world.coordinator.reset_stalled()
    assert reset.state == "queued" and reset.resets == 1
    alive = executor.claim("ex-alive")
    assert alive is not None and alive.attempt == 2
    with pytest.raises(LeaseLostError):
        executor.append_logs(job["id"], dead.lease, [(0, "late\n")])
    with pytest.raises(LeaseLostError):
        executor.complete(job["id"], dead.lease, {"status": "unchanged"})
    assert executor.heartbeat("ex-dead", {job["id"]: dead.lease}).lost == (job["id"],)
    executor.append_logs(job["id"], alive.lease, [(0, "ok\n")])
    executor.complete(job["id"], alive.lease, {"status": "unchanged", "changesets": []})
    shown = alice.job_show(job["id"])
    assert shown["state"] == "completed" and shown["resets"] == 1
    assert shown["result"] == {"status": "unchanged", "changesets": []}
    assert alice.job_result(job["id"])["status"] == "unchanged"


def test_logs_are_paged_and_steps_recorded(world: World, tmp_path: Path) -> None:
    alice, executor = world.client("alice"), world.client("exec")
    (job,) = alice.submit(bundle(tmp_path, SPEC_PLAIN), "user:alice")["jobs"]
    claim = executor.claim()
    assert claim is not None
    executor.append_logs(job["id"], claim.lease, [(0, "a\n"), (1, "b\n")])
    executor.append_logs(job["id"], claim.lease, [(1, "b\n"), (2, "c\n")])
    executor.record_step(job["id"], claim.lease, step=1, status="finished", exit_code=0)
    page = alice.job_logs(job["id"], limit=2)
    assert [c["text"] for c in page["chunks"]] == ["a\n", "b\n"] and page["state"] == "processing"
    rest = alice.job_logs(job["id"], after=page["next"])
    assert [c["text"] for c in rest["chunks"]] == ["c\n"]
    assert alice.job_show(job["id"])["steps"] == [
        {"attempt": 1, "step": 1, "status": "finished", "exit_code": 0}
    ]
    with pytest.raises(CoordinatorError, match="only a completed job has a result"):
        alice.job_result(job["id"])


def test_cancel_reaches_the_executor_through_the_heartbeat(world: World, tmp_path: Path) -> None:
    alice, executor = world.client("alice"), world.client("exec")
    spec = SPEC_PLAIN.replace(
        "  - repository: github.com/acme/one\n",
        "  - repository: github.com/acme/one\n  - repository: github.com/acme/two\n",
    )
    running, waiting = (j["id"] for j in alice.submit(bundle(tmp_path, spec), "user:alice")["jobs"])
    claim = executor.claim()
    assert claim is not None and claim.job_id == running
    assert alice.job_cancel(waiting)["state"] == "canceled"
    assert alice.job_cancel(running)["cancel_requested"] is True
    assert executor.heartbeat(None, {running: claim.lease}).cancel == (running,)
    executor.fail(running, claim.lease, state="canceled", error="canceled on request")
    assert alice.job_show(running)["state"] == "canceled"


def test_bad_requests_get_4xx_json(world: World, tmp_path: Path) -> None:
    auth = {"Authorization": f"Bearer {world.token['alice']}"}
    good = bundle(tmp_path, SPEC_PLAIN).to_json()
    tampered = json.loads(json.dumps(good))
    tampered["files"] = [{"path": "x.txt", "sha256": "0" * 64, "content": "aGk="}]
    escaping = json.loads(json.dumps(good))
    escaping["files"] = [{"path": "../x", "sha256": "0" * 64, "content": ""}]
    cases: list[tuple[str, str, Any, int]] = [
        ("POST", "/api/submissions", b"{not json", 422),
        ("POST", "/api/submissions", {"namespace": "user:alice"}, 422),
        ("POST", "/api/submissions", {"namespace": "nonsense", "bundle": good}, 400),
        ("POST", "/api/submissions", {"namespace": "user:alice", "bundle": {}}, 422),
        ("POST", "/api/submissions", {"namespace": "user:alice", "bundle": tampered}, 422),
        ("POST", "/api/submissions", {"namespace": "user:alice", "bundle": escaping}, 422),
        (
            "POST",
            "/api/submissions",
            {"namespace": "user:alice", "bundle": {"spec": {"name": "s.yaml", "text": "on: 3"}}},
            422,
        ),
        ("GET", "/api/jobs/job_missing", None, 404),
        ("GET", "/api/jobs?limit=-1", None, 422),
        ("GET", "/api/jobs/x/logs?after=abc", None, 422),
        ("PUT", "/api/secrets/user:alice/bad-name", {"value": "x" * 20}, 422),
        ("PUT", "/api/secrets/user:alice/SHORT", {"value": "x"}, 422),
        ("GET", "/api/nowhere", None, 404),
    ]
    for method, path, body, status in cases:
        kwargs: dict[str, Any] = {"headers": auth}
        if isinstance(body, bytes):
            kwargs["content"] = body
            kwargs["headers"] = {**auth, "Content-Type": "application/json"}
        elif body is not None:
            kwargs["json"] = body
        response = world.http.request(method, path, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        error = response.json()["error"]
        assert error["message"], (method, path)
    short = world.http.put(
        "/api/secrets/user:alice/SHORT", json={"value": "tiny-val"[:5]}, headers=auth
    )
    assert "tiny" not in short.text


def test_bundle_errors_name_the_problem(tmp_path: Path) -> None:
    spec = SPEC_PLAIN.replace(
        "    container: runner-test/busybox:latest\n",
        "    container: runner-test/busybox:latest\n"
        "    mount:\n      - path: ./tools\n        mountpoint: /tools\n",
    )
    path = write_spec(tmp_path / "spec", spec)
    with pytest.raises(BundleError, match="does not exist next to the spec"):
        Bundle.from_spec_file(path)
    (tmp_path / "spec" / "tools").mkdir()
    (tmp_path / "spec" / "tools" / "fix.sh").write_text("echo fixed\n")
    made = Bundle.from_spec_file(path)
    assert [f.path for f in made.files] == ["tools/fix.sh"]
    again = Bundle.from_json(made.to_json())
    assert again == made
    written = again.write_to(tmp_path / "out")
    assert (written.parent / "tools" / "fix.sh").read_text() == "echo fixed\n"
    bare = Bundle(spec_name="spec.yaml", spec_text=spec)
    from runner.spec import load_spec_text

    with pytest.raises(BundleError, match="lacks the mounted path tools"):
        bare.check_mounts(load_spec_text(spec, "spec.yaml"))


def test_cache_entries_round_trip_through_the_coordinator(world: World) -> None:
    from runner.testing import MemoryStepCache

    cache = CoordinatorStepCache(world.client("exec"))
    assert cache.get("a" * 64) is None  # no cache configured
    world.coordinator.cache = MemoryStepCache()
    entry = CacheEntry(
        diff=b"diff --git a/x b/x\n",
        changes={"modified_files": ["x"]},
        accumulated={"modified_files": ["x"]},
        outputs={"n": 1},
        stdout="out",
        stderr="",
    )
    assert cache.get("a" * 64) is None
    cache.put("a" * 64, entry, namespace="user:alice", secret_refs=["sec_1:1"])
    assert cache.get("a" * 64) == entry


def test_unknown_jobs_are_404(world: World) -> None:
    with pytest.raises(JobNotFoundError):
        world.client("alice").job_show("job_0000")
    with pytest.raises(JobNotFoundError):
        world.client("exec").complete("job_0000", "lease", {})
