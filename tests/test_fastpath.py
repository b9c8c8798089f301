"""The executors' endpoints answered in front of FastAPI (``runner.queue.fastpath``), the
token cache and uvicorn's coalesced writes (issue 21).

The fast path must be invisible: every request below gets the same status, headers
and body with it as through FastAPI's routes, on SQLite (called on the event loop)
and PostgreSQL (on its thread pool); a full executor cycle goes through it. A token
remembered for speed still stops working when revoked.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from runner.db import connect
from runner.queue import fastpath
from runner.queue.coalesce import CoalescingTransport
from runner.queue.tokens import SqlTokenStore
from runner.testing.clock import FakeClock
from tests.test_queue_support import SPEC_PLAIN, World, world, write_spec

__all__ = ["world"]  # a fixture, used by name

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


def answer(world: World, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    kwargs: dict[str, Any] = {"headers": headers}
    if isinstance(body, bytes):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    response = world.http.request(method, path, **kwargs)
    kept = {k: v for k, v in response.headers.items() if k != "date"}
    return response.status_code, kept, response.content


def both_ways(world: World, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    """The answer with the fast path in front, and through FastAPI alone; they must agree."""
    fast = answer(world, method, path, body, headers)
    saved, world.app.fast_path = world.app.fast_path, None  # type: ignore[attr-defined]
    try:
        slow = answer(world, method, path, body, headers)
    finally:
        world.app.fast_path = saved  # type: ignore[attr-defined]
    assert fast == slow, (method, path, body, headers)
    return fast


def test_executor_requests_get_the_same_answers_with_and_without_the_fast_path(
    world: World, tmp_path: Path
) -> None:
    executor = {"Authorization": f"Bearer {world.token['exec']}"}
    json_type = {"Content-Type": "application/json"}
    as_json = {**executor, **json_type}
    alice = world.client("alice")
    # One job, claimed here: the lease "x" below is a stale one for every write.
    (job,) = alice.submit(_bundle(tmp_path), "user:alice")["jobs"]
    claimed = world.client("exec").claim("ex1")
    assert claimed is not None
    jid = job["id"]
    cases: list[tuple[str, str, Any, dict[str, str], int]] = [
        # who: no token, another scheme, an unknown token, a user's token
        ("POST", "/api/executor/claim", {}, {}, 401),
        ("POST", "/api/executor/claim", {}, {"Authorization": "Basic eDp5"}, 401),
        ("POST", "/api/executor/claim", {}, {"Authorization": "Bearer rnr_nope"}, 401),
        ("POST", "/api/executor/claim", {}, {"Authorization": "bearer"}, 401),
        (
            "POST",
            "/api/executor/heartbeat",
            {},
            {"Authorization": f"Bearer {world.token['alice']}"},
            403,
        ),
        # bodies: invalid JSON, the wrong shape, no body, not JSON's type, too many labels
        ("POST", "/api/executor/claim", b"{not json", as_json, 422),
        ("POST", "/api/executor/claim", b"[]", as_json, 422),
        ("POST", "/api/executor/claim", b"", as_json, 422),
        ("POST", "/api/executor/claim", b'{"executor": "ex1"}', executor, 422),
        ("POST", "/api/executor/claim", b"{}", {**executor, "Content-Type": "text/plain"}, 422),
        ("POST", "/api/executor/claim", {"labels": ["x"] * 101}, executor, 422),
        # a body error comes before the token check, as through FastAPI
        ("POST", "/api/executor/claim", {"labels": "x"}, {}, 422),
        ("POST", f"/api/executor/jobs/{jid}/steps", {"lease": "x", "step": 0}, executor, 422),
        (
            "POST",
            f"/api/executor/jobs/{jid}/logs",
            {"lease": "x", "chunks": [{"seq": 0, "text": "a\x00b"}]},
            executor,
            422,
        ),
        ("POST", f"/api/executor/jobs/{jid}/fail", {"lease": "x", "state": "odd"}, executor, 422),
        (
            "POST",
            f"/api/executor/jobs/{jid}/complete",
            {"lease": "x", "result": {}, "claim": {"labels": "x"}},
            executor,
            422,
        ),
        # the service's own refusals: a stale lease, an unknown job
        ("POST", f"/api/executor/jobs/{jid}/complete", {"lease": "x", "result": {}}, executor, 409),
        (
            "POST",
            f"/api/executor/jobs/{jid}/complete",
            {"lease": "x", "result": {}, "claim": {"executor": "ex1"}},
            executor,
            409,
        ),
        ("POST", f"/api/executor/jobs/{jid}/logs", {"lease": "x", "chunks": []}, executor, 409),
        (
            "POST",
            f"/api/executor/jobs/{jid}/steps",
            {"lease": "x", "step": 1, "status": "started"},
            executor,
            409,
        ),
        (
            "POST",
            "/api/executor/jobs/job_nope/fail",
            {"lease": "x", "state": "failed", "error": "e"},
            executor,
            404,
        ),
        # an empty queue, with a charset; a heartbeat that says the lease is gone
        (
            "POST",
            "/api/executor/claim",
            {},
            {**executor, "Content-Type": "application/json; charset=utf-8"},
            204,
        ),
        (
            "POST",
            "/api/executor/heartbeat",
            {"executor": "ex1", "jobs": [{"id": jid, "lease": "x"}]},
            executor,
            200,
        ),
        # paths and methods that are not the fast path's
        ("GET", "/api/executor/claim", None, executor, 405),
        ("POST", "/api/executor/claim/", {}, executor, 204),  # redirected; the test client follows
        ("POST", "/api/executor/jobs//complete", {"lease": "x", "result": {}}, executor, 404),
        ("POST", f"/api/executor/jobs/{jid}/other", {}, executor, 404),
    ]
    for method, path, body, headers, status in cases:
        code, _, content = both_ways(world, method, path, body, headers)
        assert code == status, (path, body, content)
    # The claim is still the executor's: nothing above changed it.
    shown = alice.job_show(jid)
    assert shown["state"] == "processing" and shown["attempts"] == 1


def test_an_end_with_a_claim_gets_the_same_answers_with_and_without_the_fast_path(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each answer changes the queue, so the two ways end different jobs: their answers
    must agree but for the ids and the lease of the job each claimed."""
    from runner.queue.client import Claim

    alice, executor = world.client("alice"), world.client("exec")
    headers = {"Authorization": f"Bearer {world.token['exec']}"}
    served = _count_fast_answers(monkeypatch)

    def held(queued: int) -> list[Any]:
        for _ in range(queued):
            alice.submit(_bundle(tmp_path), "user:alice")
        return [executor.claim("ex1"), executor.claim("ex1")]

    def end(job: Any, fast: bool, claim: Any, action: str = "complete") -> Any:
        body: dict[str, Any] = {"lease": job.lease, "claim": claim}
        ending: dict[str, Any] = {"result": {}}
        body.update(ending if action == "complete" else {"state": "failed", "error": "e"})
        saved = world.app.fast_path  # type: ignore[attr-defined]
        world.app.fast_path = saved if fast else None  # type: ignore[attr-defined]
        try:
            path = f"/api/executor/jobs/{job.job_id}/{action}"
            status, kept, content = answer(world, "POST", path, body, headers)
        finally:
            world.app.fast_path = saved  # type: ignore[attr-defined]
        assert kept.pop("runner-job-ended") == ("completed" if action == "complete" else "failed")
        if status != 200:
            return (status, kept, content), None
        claimed = Claim.from_json(json.loads(content))
        for value in (claimed.job_id, claimed.job["submission_id"], claimed.lease):
            content = content.replace(value.encode(), b"ID")
        return (status, kept, content), claimed

    # The next job, each way.
    first = held(4)
    claim = {"executor": "ex1", "labels": []}
    (fast, second_a), (slow, second_b) = end(first[0], True, claim), end(first[1], False, claim)
    assert fast == slow and fast[0] == 200
    # The claim part refused, the end kept.
    bad = {"executor": "no such name!"}
    (fast, _), (slow, _) = end(second_a, True, bad, "fail"), end(second_b, False, bad, "fail")
    assert fast == slow and fast[0] == 400
    # An empty queue.
    third = held(2)
    (fast, _), (slow, _) = end(third[0], True, claim), end(third[1], False, claim)
    assert fast == slow and fast[0] == 204
    assert served.count("complete") == 2 and served.count("fail") == 1  # the fast ones


def test_an_executor_cycle_goes_through_the_fast_path(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = _count_fast_answers(monkeypatch)
    alice, executor = world.client("alice"), world.client("exec")
    (job,) = alice.submit(_bundle(tmp_path), "user:alice")["jobs"]
    claim = executor.claim("ex1")
    assert claim is not None and claim.job_id == job["id"]
    assert executor.heartbeat("ex1", {job["id"]: claim.lease}).lost == ()
    assert executor.append_logs(job["id"], claim.lease, [(0, "hello\n")]) == 1
    executor.record_step(job["id"], claim.lease, step=1, status="started")
    executor.complete(job["id"], claim.lease, {"status": "unchanged", "changesets": []})
    assert executor.claim("ex1") is None
    assert served == ["claim", "heartbeat", "logs", "steps", "complete", "claim"]
    shown = alice.job_show(job["id"])
    assert shown["state"] == "completed"
    assert shown["result"] == {"status": "unchanged", "changesets": []}
    assert [c["text"] for c in alice.job_logs(job["id"])["chunks"]] == ["hello\n"]


def test_claim_and_end_answers_are_the_bytes_json_dumps_would_send(
    world: World, tmp_path: Path
) -> None:
    """``CompactJSON`` (pydantic's encoder) against Starlette's ``JSONResponse``: a real
    claim's answer and record, and the awkward strings a value or a path may hold."""
    from starlette.responses import JSONResponse

    from runner.queue.api import CompactJSON

    alice = world.client("alice")
    alice.submit(_bundle(tmp_path), "user:alice")
    executor = world.coordinator.authenticate(world.token["exec"])
    claimed = world.coordinator.claim(executor, executor="ex1")
    assert claimed is not None
    record = world.coordinator.complete(
        executor, claimed.lease.job.id, lease=claimed.lease.token, result={"status": "ok"}
    )
    awkward = {
        "text": 'é 😀 \u2028 \x00 \x1f \x7f " \\ </script> \t\n',
        "numbers": [0, -1, 2**63 - 1, -(2**63), 2**70, 1.5, 0.1, 1e16],
        "nested": {"a": [None, True, False, {}, []], "": "empty key"},
    }
    for content in (claimed.to_json(), record.to_json(), awkward):
        assert CompactJSON(content).body == JSONResponse(content).body
    # Never a non-JSON token: json.dumps refused these, the answer has null instead.
    assert json.loads(bytes(CompactJSON([float("nan"), float("inf")]).body)) == [None, None]


def test_an_unexpected_failure_answers_500_without_its_details(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire: sk-should-not-show")

    monkeypatch.setattr(world.coordinator, "heartbeat", broken)
    response = world.http.post(
        "/api/executor/heartbeat",
        json={"executor": "ex1"},
        headers={"Authorization": f"Bearer {world.token['exec']}"},
    )
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "InternalError"
    assert "sk-should-not-show" not in response.text


def _bundle(tmp_path: Path) -> Any:
    from runner.queue.bundle import Bundle

    return Bundle.from_spec_file(write_spec(tmp_path / "spec", SPEC_PLAIN))


# The token cache ---------------------------------------------------------------------


def test_a_cached_token_stops_working_when_revoked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runner.db'}"
    clock = FakeClock()
    db, other_db = connect(url), connect(url)
    try:
        server = SqlTokenStore(db, clock=clock, cache_s=1.0)
        cli = SqlTokenStore(other_db, clock=clock)  # `runner token …` in another process
        record, token = cli.create("executor", "ex1")
        assert server.authenticate(token) == server.authenticate(token) is not None

        # Revoked elsewhere: trusted for at most cache_s more, then refused.
        cli.revoke(record.id)
        assert server.authenticate(token) is not None
        clock.advance(1.0)
        assert server.authenticate(token) is None
        assert cli.authenticate(token) is None

        # Revoked through the server's own store: refused at once.
        record, token = cli.create("user", "alice")
        assert server.authenticate(token) is not None
        server.revoke(record.id)
        assert server.authenticate(token) is None

        # An unknown token is not remembered: once created, it works at once.
        assert server.authenticate("rnr_" + "x" * 43) is None
        assert server.authenticate("not-a-token") is None
        record, token = cli.create("user", "bob")
        assert server.authenticate(token) is not None

        # Without a cache (the default), a revocation elsewhere counts at the next request.
        plain = SqlTokenStore(db, clock=clock)
        assert plain.authenticate(token) is not None
        cli.revoke(record.id)
        assert plain.authenticate(token) is None
    finally:
        db.close()
        other_db.close()


# Coalesced writes --------------------------------------------------------------------


class RecordingTransport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def close(self) -> None:
        self.calls.append(("close", b""))

    def abort(self) -> None:
        self.calls.append(("abort", b""))

    def is_closing(self) -> bool:
        return False


def test_writes_in_one_loop_turn_leave_as_one_and_close_sends_what_is_pending() -> None:
    async def scenario() -> list[tuple[str, bytes]]:
        inner = RecordingTransport()
        outer = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
        outer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        outer.write(memoryview(b"body"))
        assert inner.calls == []  # nothing sent inside the turn
        await asyncio.sleep(0)
        outer.write(b"next")
        assert outer.is_closing() is False  # the rest is the real transport's
        outer.close()  # sends "next" first
        outer.write(b"dropped")
        outer.abort()
        await asyncio.sleep(0)
        return inner.calls

    assert asyncio.run(scenario()) == [
        ("write", b"HTTP/1.1 200 OK\r\n\r\nbody"),
        ("write", b"next"),
        ("close", b""),
        ("abort", b""),
    ]


def test_a_real_server_answers_requests_on_one_keep_alive_connection(
    world: World, tmp_path: Path
) -> None:
    """uvicorn with the coalescing protocol: answers of every kind, one connection."""
    import http.client
    import socket
    import threading

    import uvicorn

    from runner.queue.coalesce import CoalescingHttpProtocol

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        world.app,
        host="127.0.0.1",
        port=port,
        http=CoalescingHttpProtocol,
        log_config=None,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.05)
            assert thread.is_alive()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        auth = {
            "Authorization": f"Bearer {world.token['exec']}",
            "Content-Type": "application/json",
        }
        (job,) = world.client("alice").submit(_bundle(tmp_path), "user:alice")["jobs"]
        answers = []
        for method, path, body in [
            ("POST", "/api/executor/claim", {"executor": "ex1"}),
            ("POST", "/api/executor/claim", {"executor": "ex1"}),
            ("GET", "/openapi.json", None),
            ("POST", "/api/executor/heartbeat", {"executor": "ex1"}),
            ("POST", "/api/executor/claim", {"labels": 3}),
        ]:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, data, auth)
            response = conn.getresponse()
            answers.append((response.status, response.read()))
        conn.close()
    finally:
        server.should_exit = True
        thread.join(10)
    assert [status for status, _ in answers] == [200, 204, 200, 200, 422]
    assert json.loads(answers[0][1])["job"]["id"] == job["id"]
    assert answers[1][1] == b""
    assert "/api/executor/claim" in json.loads(answers[2][1])["paths"]
    assert json.loads(answers[4][1])["error"]["type"] == "InvalidRequest"


def _count_fast_answers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The last path segment of each request the fast path answered, in order."""
    served: list[str] = []
    real = fastpath._answer

    def counting(call: Any, path: str) -> Any:
        served.append(path.rsplit("/", 1)[-1])
        return real(call, path)

    monkeypatch.setattr(fastpath, "_answer", counting)
    return served
