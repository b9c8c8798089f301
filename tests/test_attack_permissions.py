"""The permission matrix: every caller × resource × action, over the coordinator's HTTP API.

Callers, for resources that belong to alice (``user:alice``) and to the org
acme (``org:acme``, of which alice and dave are members):

- ``owner`` alice, ``member`` dave, ``other`` bob (no relation), ``admin``
  carol (admin, not a member), ``executor`` (an executor token),
  ``no_token``, ``revoked`` (alice's revoked token).

Outcomes: ``ok`` (2xx), ``denied`` (403), ``unauth`` (401), ``final`` (200,
and nothing changed: a finished job's result cannot be rewritten), ``none``
(the API has no such operation: the route does not exist, for every caller).

"Use in a job" for a secret means submitting a job, in the namespace where
the secret would be visible, whose step env names it; a caller denied there
must also not reach it from a namespace of their own (the name resolves to
nothing). Job, log and result "create" and "update" are the executor's
writes, under the job's lease.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runner.queue.bundle import Bundle

# Starlette's TestClient asks for a package we do not use; the warning is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

MATRIX = """
resource       action   owner   member  other   admin   executor  no_token  revoked
secret:global  read     ok      ok      ok      ok      denied    unauth    unauth
secret:global  use      ok      ok      ok      ok      denied    unauth    unauth
secret:global  create   denied  denied  denied  ok      denied    unauth    unauth
secret:global  update   denied  denied  denied  ok      denied    unauth    unauth
secret:global  delete   denied  denied  denied  ok      denied    unauth    unauth
secret:global  cancel   none    none    none    none    none      none      none
secret:org     read     ok      ok      denied  ok      denied    unauth    unauth
secret:org     use      ok      ok      denied  denied  denied    unauth    unauth
secret:org     create   ok      ok      denied  ok      denied    unauth    unauth
secret:org     update   ok      ok      denied  ok      denied    unauth    unauth
secret:org     delete   ok      ok      denied  ok      denied    unauth    unauth
secret:org     cancel   none    none    none    none    none      none      none
secret:user    read     ok      denied  denied  ok      denied    unauth    unauth
secret:user    use      ok      denied  denied  denied  denied    unauth    unauth
secret:user    create   ok      denied  denied  ok      denied    unauth    unauth
secret:user    update   ok      denied  denied  ok      denied    unauth    unauth
secret:user    delete   ok      denied  denied  ok      denied    unauth    unauth
secret:user    cancel   none    none    none    none    none      none      none
job:org        read     ok      ok      denied  ok      denied    unauth    unauth
job:org        use      none    none    none    none    none      none      none
job:org        create   ok      ok      denied  denied  denied    unauth    unauth
job:org        update   denied  denied  denied  denied  ok        unauth    unauth
job:org        delete   none    none    none    none    none      none      none
job:org        cancel   ok      ok      denied  ok      denied    unauth    unauth
job:user       read     ok      denied  denied  ok      denied    unauth    unauth
job:user       use      none    none    none    none    none      none      none
job:user       create   ok      denied  denied  denied  denied    unauth    unauth
job:user       update   denied  denied  denied  denied  ok        unauth    unauth
job:user       delete   none    none    none    none    none      none      none
job:user       cancel   ok      denied  denied  ok      denied    unauth    unauth
logs:org       read     ok      ok      denied  ok      denied    unauth    unauth
logs:org       use      none    none    none    none    none      none      none
logs:org       create   denied  denied  denied  denied  ok        unauth    unauth
logs:org       update   none    none    none    none    none      none      none
logs:org       delete   none    none    none    none    none      none      none
logs:org       cancel   none    none    none    none    none      none      none
logs:user      read     ok      denied  denied  ok      denied    unauth    unauth
logs:user      use      none    none    none    none    none      none      none
logs:user      create   denied  denied  denied  denied  ok        unauth    unauth
logs:user      update   none    none    none    none    none      none      none
logs:user      delete   none    none    none    none    none      none      none
logs:user      cancel   none    none    none    none    none      none      none
result:org     read     ok      ok      denied  ok      denied    unauth    unauth
result:org     use      none    none    none    none    none      none      none
result:org     create   denied  denied  denied  denied  ok        unauth    unauth
result:org     update   denied  denied  denied  denied  final     unauth    unauth
result:org     delete   none    none    none    none    none      none      none
result:org     cancel   none    none    none    none    none      none      none
result:user    read     ok      denied  denied  ok      denied    unauth    unauth
result:user    use      none    none    none    none    none      none      none
result:user    create   denied  denied  denied  denied  ok        unauth    unauth
result:user    update   denied  denied  denied  denied  final     unauth    unauth
result:user    delete   none    none    none    none    none      none      none
result:user    cancel   none    none    none    none    none      none      none
"""


def parse_matrix(text: str) -> list[tuple[str, str, str, str]]:
    lines = [line.split() for line in text.strip().splitlines()]
    header, rows = lines[0], lines[1:]
    callers = header[2:]
    cells = []
    for row in rows:
        assert len(row) == len(header), row
        for caller, expected in zip(callers, row[2:], strict=True):
            cells.append((row[0], row[1], caller, expected))
    return cells


CELLS = parse_matrix(MATRIX)
CALLERS = ("owner", "member", "other", "admin", "executor", "no_token", "revoked")
ACTIONS = ("read", "use", "create", "update", "delete", "cancel")
RESOURCES = (
    "secret:global", "secret:org", "secret:user", "job:org", "job:user",
    "logs:org", "logs:user", "result:org", "result:user",
)  # fmt: skip
USER_OF = {"owner": "alice", "member": "dave", "other": "bob", "admin": "carol"}
NS = {"org": "org:acme", "user": "user:alice", "global": "global"}
SECRET_NAME = {"global": "G_TOKEN", "org": "O_TOKEN", "user": "U_TOKEN"}
VALUE = "matrix-value-0123456789"


def test_the_matrix_has_every_cell_once() -> None:
    seen = {(r, a, c) for r, a, c, _ in CELLS}
    assert len(seen) == len(CELLS) == len(RESOURCES) * len(ACTIONS) * len(CALLERS)
    assert seen == {(r, a, c) for r in RESOURCES for a in ACTIONS for c in CALLERS}


SPEC = """\
name: matrix
on:
  - repository: github.com/acme/one
steps:
  - run: echo hi > hi.txt
    container: runner-test/busybox:latest
{env}changesetTemplate:
  title: t
  body: b
  branch: b
  commit:
    message: m
"""


class Matrix:
    """A coordinator over SQLite with the callers' tokens, served in-process."""

    def __init__(self, root: Path, db_url: str | None = None) -> None:
        from fastapi.testclient import TestClient

        from runner.db import connect
        from runner.queue.policies import SqlPolicyStore
        from runner.queue.server import create_app
        from runner.queue.service import Coordinator, CoordinatorSettings
        from runner.queue.store import SqlJobStore
        from runner.queue.tokens import SqlTokenStore
        from runner.secrets.crypto import Keyring, new_master_key
        from runner.secrets.store import SqlSecretStore
        from runner.secrets.value import Secret
        from runner.users.sql import SqlUserDirectory
        from tests.test_queue_support import make_repo

        make_repo(root / "repos", "github.com/acme/one")
        self.root = root
        self.db = connect(db_url or f"sqlite:///{root / 'state.db'}")
        self.secrets = SqlSecretStore(self.db, Keyring([new_master_key()]))
        self.jobs = SqlJobStore(self.db)
        tokens = SqlTokenStore(self.db)
        users = SqlUserDirectory(self.db)
        for user in ("alice", "dave", "bob"):
            users.add_user(user)
        users.add_user("carol", admin=True)
        users.add_member("acme", "alice")
        users.add_member("acme", "dave")
        self.token: dict[str, str | None] = {
            caller: tokens.create("user", user)[1] for caller, user in USER_OF.items()
        }
        self.token["executor"] = tokens.create("executor", "ex1")[1]
        self.token["no_token"] = None
        revoked, self.token["revoked"] = tokens.create("user", "alice")
        tokens.revoke(revoked.id)
        for kind, name in SECRET_NAME.items():
            self.secrets.set(name, NS[kind], Secret(VALUE), actor="carol")
        self.coordinator = Coordinator(
            jobs=self.jobs,
            tokens=tokens,
            secrets=self.secrets,
            users=users,
            settings=CoordinatorSettings(repos_root=root / "repos"),
            policies=SqlPolicyStore(self.db),
        )
        self.http = TestClient(create_app(self.coordinator), base_url="http://testserver")
        self._specs = 0

    def close(self) -> None:
        self.http.close()
        self.db.close()

    def call(self, caller: str, method: str, path: str, **kwargs: Any) -> Any:
        token = self.token[caller]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.request(method, path, headers=headers, **kwargs)

    def bundle(self, env: tuple[str, ...] = ()) -> dict[str, Any]:
        self._specs += 1
        folder = self.root / "specs" / str(self._specs)
        folder.mkdir(parents=True)
        block = "    env:\n" + "".join(f"      - {n}\n" for n in env) if env else ""
        (folder / "spec.yaml").write_text(SPEC.format(env=block))
        return Bundle.from_spec_file(folder / "spec.yaml").to_json()

    # Jobs in each state, made by alice and the executor ---------------------------------------
    def queued_job(self, ns: str) -> str:
        answer = self.call(
            "owner", "POST", "/api/submissions", json={"namespace": ns, "bundle": self.bundle()}
        )
        assert answer.status_code == 201, answer.text
        job_id: str = answer.json()["jobs"][0]["id"]
        return job_id

    def claimed_job(self, ns: str) -> tuple[str, str]:
        """A job claimed by the executor: (id, lease). Every other queued job is canceled first."""
        job_id = self.queued_job(ns)
        for other in self.jobs.list():
            if other.state == "queued" and other.id != job_id:
                self.jobs.request_cancel(other.id)
        answer = self.call("executor", "POST", "/api/executor/claim", json={"executor": "ex1"})
        assert answer.status_code == 200, answer.text
        claimed = answer.json()
        assert claimed["job"]["id"] == job_id
        return job_id, claimed["lease"]

    def completed_job(self, ns: str) -> tuple[str, str]:
        job_id, lease = self.claimed_job(ns)
        self.call("executor", "POST", f"/api/executor/jobs/{job_id}/logs",
                  json={"lease": lease, "chunks": [{"seq": 0, "text": "{\"event\": \"run.started\"}\n"}]})  # fmt: skip
        done = self.call("executor", "POST", f"/api/executor/jobs/{job_id}/complete",
                         json={"lease": lease, "result": {"status": "changed", "mark": "first"}})  # fmt: skip
        assert done.status_code == 200, done.text
        return job_id, lease


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    m = Matrix(tmp_path_factory.mktemp("matrix"))
    yield m
    m.close()


@dataclass
class Outcome:
    status: int
    body: Any
    unchanged: bool | None = None


def _secret(m: Matrix, caller: str, action: str, kind: str, cell: str) -> Outcome:
    ns, name = NS[kind], SECRET_NAME[kind]
    if action == "read":
        r = m.call(caller, "GET", "/api/secrets", params={"namespace": ns})
        if r.status_code == 200:
            assert name in {s["name"] for s in r.json()}
        return Outcome(r.status_code, r.json())
    if action == "use":
        target = {
            "global": f"user:{USER_OF.get(caller, 'alice')}",
            "org": "org:acme",
            "user": "user:alice",
        }[kind]
        r = m.call(
            caller,
            "POST",
            "/api/submissions",
            json={"namespace": target, "bundle": m.bundle((name,))},
        )
        if r.status_code == 403 and caller in USER_OF:
            # Nor can they reach it from a namespace of their own: the name resolves nowhere.
            own = m.call(caller, "POST", "/api/submissions",
                         json={"namespace": f"user:{USER_OF[caller]}", "bundle": m.bundle((name,))})  # fmt: skip
            assert (
                own.status_code == 422 and own.json()["error"]["type"] == "MissingSecretsError"
            ), own.text
        if r.status_code == 201:
            for job in r.json()["jobs"]:
                m.jobs.request_cancel(job["id"])
        return Outcome(r.status_code, r.json())
    if action == "create":
        r = m.call(caller, "PUT", f"/api/secrets/{ns}/NEW_{cell}", json={"value": VALUE + "-new"})
        if r.status_code == 200:
            assert r.json()["created"] is True
        return Outcome(r.status_code, r.json())
    if action == "update":
        before = m.secrets.get(name, ns)
        r = m.call(caller, "PUT", f"/api/secrets/{ns}/{name}", json={"value": VALUE + "-" + cell})
        after = m.secrets.get(name, ns)
        assert before is not None and after is not None
        assert (after.version == before.version + 1) == (r.status_code == 200)
        return Outcome(r.status_code, r.json())
    if action == "delete":
        from runner.secrets.value import Secret

        victim = f"DEL_{cell}"
        m.secrets.set(victim, ns, Secret(VALUE + "-del"), actor="carol")
        r = m.call(caller, "DELETE", f"/api/secrets/{ns}/{victim}")
        assert (m.secrets.get(victim, ns) is None) == (r.status_code == 200)
        return Outcome(r.status_code, r.json())
    r = m.call(caller, "POST", f"/api/secrets/{ns}/{name}/{action}")
    return Outcome(r.status_code, r.json())


def _job(m: Matrix, caller: str, action: str, kind: str, cell: str) -> Outcome:
    ns = NS[kind]
    if action == "read":
        job_id = m.queued_job(ns)
        r = m.call(caller, "GET", f"/api/jobs/{job_id}")
        listed = m.call(caller, "GET", "/api/jobs")
        if listed.status_code == 200:
            assert (job_id in {j["id"] for j in listed.json()}) == (r.status_code == 200)
        return Outcome(r.status_code, r.json())
    if action == "create":
        r = m.call(caller, "POST", "/api/submissions", json={"namespace": ns, "bundle": m.bundle()})
        return Outcome(r.status_code, r.json())
    if action == "update":
        job_id, lease = m.claimed_job(ns)
        r = m.call(caller, "POST", f"/api/executor/jobs/{job_id}/steps",
                   json={"lease": lease, "step": 1, "status": "started"})  # fmt: skip
        return Outcome(r.status_code, r.json())
    if action == "cancel":
        job_id = m.queued_job(ns)
        r = m.call(caller, "POST", f"/api/jobs/{job_id}/cancel")
        state = m.jobs.get(job_id)
        assert state is not None and (state.state == "canceled") == (r.status_code == 200)
        return Outcome(r.status_code, r.json())
    job_id = m.queued_job(ns)
    method = "DELETE" if action == "delete" else "POST"
    r = m.call(caller, method, f"/api/jobs/{job_id}" + ("" if action == "delete" else f"/{action}"))
    return Outcome(r.status_code, r.json())


def _logs(m: Matrix, caller: str, action: str, kind: str, cell: str) -> Outcome:
    ns = NS[kind]
    if action == "read":
        job_id, _ = m.completed_job(ns)
        r = m.call(caller, "GET", f"/api/jobs/{job_id}/logs")
        if r.status_code == 200:
            assert r.json()["chunks"]
        return Outcome(r.status_code, r.json())
    if action == "create":
        job_id, lease = m.claimed_job(ns)
        r = m.call(caller, "POST", f"/api/executor/jobs/{job_id}/logs",
                   json={"lease": lease, "chunks": [{"seq": 0, "text": "{}\n"}]})  # fmt: skip
        return Outcome(r.status_code, r.json())
    job_id, lease = m.completed_job(ns)
    method = {"update": "PUT", "delete": "DELETE"}.get(action, "POST")
    suffix = "" if action in ("update", "delete") else f"/{action}"
    r = m.call(caller, method, f"/api/jobs/{job_id}/logs{suffix}", json={"lease": lease})
    return Outcome(r.status_code, r.json())


def _result(m: Matrix, caller: str, action: str, kind: str, cell: str) -> Outcome:
    ns = NS[kind]
    if action == "read":
        job_id, _ = m.completed_job(ns)
        r = m.call(caller, "GET", f"/api/jobs/{job_id}/result")
        if r.status_code == 200:
            assert r.json()["mark"] == "first"
        return Outcome(r.status_code, r.json())
    if action == "create":
        job_id, lease = m.claimed_job(ns)
        r = m.call(caller, "POST", f"/api/executor/jobs/{job_id}/complete",
                   json={"lease": lease, "result": {"status": "changed"}})  # fmt: skip
        return Outcome(r.status_code, r.json())
    if action == "update":
        job_id, lease = m.completed_job(ns)
        r = m.call(caller, "POST", f"/api/executor/jobs/{job_id}/complete",
                   json={"lease": lease, "result": {"status": "changed", "mark": "second"}})  # fmt: skip
        record = m.jobs.get(job_id)
        assert record is not None and record.result is not None
        return Outcome(r.status_code, r.json(), unchanged=record.result.get("mark") == "first")
    job_id, lease = m.completed_job(ns)
    method = "DELETE" if action == "delete" else "POST"
    suffix = "" if action == "delete" else f"/{action}"
    r = m.call(caller, method, f"/api/jobs/{job_id}/result{suffix}")
    return Outcome(r.status_code, r.json())


HANDLERS: dict[str, Callable[[Matrix, str, str, str, str], Outcome]] = {
    "secret": _secret,
    "job": _job,
    "logs": _logs,
    "result": _result,
}


def _matches(outcome: Outcome, expected: str) -> bool:
    status, body = outcome.status, outcome.body
    error = body.get("error", {}) if isinstance(body, dict) else {}
    if expected == "ok":
        return 200 <= status < 300
    if expected == "denied":
        return status == 403 and error.get("type") == "PermissionDeniedError"
    if expected == "unauth":
        return status == 401 and error.get("type") == "NotAuthenticatedError"
    if expected == "final":
        return status == 200 and outcome.unchanged is True
    if expected == "none":
        return status in (404, 405) and error.get("type") == "HTTPError"
    raise AssertionError(f"unknown outcome {expected!r}")


@pytest.mark.parametrize(
    ("resource", "action", "caller", "expected"),
    CELLS,
    ids=[f"{r}-{a}-{c}" for r, a, c, _ in CELLS],
)
def test_cell(matrix: Matrix, resource: str, action: str, caller: str, expected: str) -> None:
    family, kind = resource.split(":")
    cell = f"{family}_{kind}_{action}_{caller}".upper().replace("-", "_")
    outcome = HANDLERS[family](matrix, caller, action, kind, cell)
    assert _matches(outcome, expected), (outcome.status, json.dumps(outcome.body)[:300])


# == Beyond the table ===========================================================================


def test_executor_writes_need_the_lease(matrix: Matrix) -> None:
    job_id, _ = matrix.claimed_job("user:alice")
    for path, body in (
        (f"/api/executor/jobs/{job_id}/logs", {"chunks": [{"seq": 0, "text": "x\n"}]}),
        (f"/api/executor/jobs/{job_id}/steps", {"step": 1, "status": "started"}),
        (f"/api/executor/jobs/{job_id}/complete", {"result": {}}),
        (f"/api/executor/jobs/{job_id}/fail", {"state": "failed", "error": "x"}),
    ):
        wrong = matrix.call("executor", "POST", path, json={"lease": "not-the-lease", **body})
        assert wrong.status_code == 409 and wrong.json()["error"]["type"] == "LeaseLostError"
    record = matrix.jobs.get(job_id)
    assert record is not None and record.state == "processing"


def test_lists_show_only_what_the_caller_may_see(matrix: Matrix) -> None:
    org_job = matrix.queued_job("org:acme")
    user_job = matrix.queued_job("user:alice")
    seen = {}
    for caller in ("owner", "member", "other", "admin"):
        jobs = {j["id"] for j in matrix.call(caller, "GET", "/api/jobs").json()}
        secrets = {
            (s["namespace"], s["name"]) for s in matrix.call(caller, "GET", "/api/secrets").json()
        }
        log = matrix.call(caller, "GET", "/api/secrets/log").json()
        seen[caller] = (
            {org_job, user_job} & jobs,
            {ns for ns, _ in secrets},
            {e["namespace"] for e in log},
        )
    assert seen["owner"][0] == {org_job, user_job}
    assert seen["member"][0] == {org_job}
    assert seen["other"][0] == set()
    assert seen["admin"][0] == {org_job, user_job}
    assert "user:alice" not in seen["member"][1] | seen["other"][1]
    assert "org:acme" not in seen["other"][1]
    assert "user:alice" not in seen["member"][2] | seen["other"][2]
    assert "org:acme" not in seen["other"][2]


def test_no_answer_carries_a_secret_value(matrix: Matrix) -> None:
    """Every user-facing read, by every caller, after the matrix ran: no value anywhere."""
    from runner.redact import forms_of

    forms = {f for v in (VALUE, VALUE + "-new") for f in forms_of(v)}
    job_id, _ = matrix.completed_job("user:alice")
    for caller in CALLERS:
        for path in ("/api/secrets", "/api/secrets/log", "/api/jobs", f"/api/jobs/{job_id}",
                     f"/api/jobs/{job_id}/logs", f"/api/jobs/{job_id}/result", "/api/whoami"):  # fmt: skip
            body = matrix.call(caller, "GET", path).content
            assert not [f for f in forms if f in body], (caller, path)
