"""The coordinator's HTTP API: FastAPI over ``runner.queue.service.Coordinator``.

Every answer is JSON; every error is ``{"error": {"type", "message", "hint"}}``
with a 4xx status when the request was at fault (a 5xx only for the
coordinator's own failures). A ``RunnerError`` adds its declared ``fields`` and
answers with its class's ``http_status``. Every string of an error passes
through the process's redactor.
Request bodies are never logged: a secret's value arrives in one.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, SecretStr
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException

from runner.errors import RunnerError, error_to_json
from runner.execute.job import register_values
from runner.log import get_logger
from runner.namespaces import parse_namespace, parse_optional
from runner.queue.models import ENDED_HEADER, JobRecord
from runner.queue.service import ClaimedJob, Coordinator
from runner.queue.tokens import Principal
from runner.redact import active
from runner.sandbox.tighten import NamespacePolicy
from runner.secrets.delivery import MAX_USE_HOSTS, Delivery
from runner.secrets.value import Secret

log = get_logger("runner.queue.api")

_bearer = HTTPBearer(auto_error=False, description="A token from `runner token create`.")


def error_body(kind: str, message: str, hint: str | None = None, **extra: Any) -> dict[str, Any]:
    redact = active().redact
    body: dict[str, Any] = {
        "type": kind,
        "message": redact(message),
        "hint": redact(hint) if hint else None,
    }
    body.update(extra)
    return {"error": body}


# Request bodies ----------------------------------------------------------------------


# Integers the database stores: a 64-bit column, whatever a client sends; the
# sequence, step and exit-code columns are 32-bit.
MAX_INT = 2**63 - 1
MAX_INT32 = 2**31 - 1


class BrokerBody(BaseModel):
    hosts: list[str]
    as_: str | None = Field(default=None, alias="as")


class DeliveryBody(BaseModel):
    """``Delivery.to_json``'s form: how the secret reaches a step (default env)."""

    type: str = "env"
    broker: BrokerBody | None = None

    def delivery(self) -> Delivery:
        if self.broker is None:
            return Delivery.of(self.type)
        return Delivery.of(self.type, self.broker.hosts, self.broker.as_)


class SecretSetBody(BaseModel):
    value: SecretStr
    scope: str | None = None
    delivery: DeliveryBody | None = None


class BundleBody(BaseModel):
    namespace: str
    bundle: dict[str, Any]
    # Labels each job's executor must have (submit only).
    labels: list[str] = Field(default_factory=list, max_length=100)


class ClaimBody(BaseModel):
    executor: str | None = None
    labels: list[str] = Field(default_factory=list, max_length=100)


class HeldJob(BaseModel):
    id: str
    lease: str


class ExecutorInfoBody(BaseModel):
    """What an executor says about itself in a heartbeat (``runner.queue.fleet``)."""

    version: str = Field(default="", max_length=200)
    hostname: str = Field(default="", max_length=200)
    docker_version: str = Field(default="", max_length=200)
    isolations: list[str] = Field(default_factory=list, max_length=16)
    labels: list[str] = Field(default_factory=list, max_length=64)
    running: list[str] = Field(default_factory=list, max_length=1000)
    limits: dict[str, float] = Field(default_factory=dict, max_length=32)


class HeartbeatBody(BaseModel):
    executor: str | None = None
    jobs: list[HeldJob] = Field(default_factory=list)
    info: ExecutorInfoBody | None = None


class RetryBody(BaseModel):
    """Retry these jobs, or (``failed``) every failed job not retried yet."""

    # Ids are text without NUL: PostgreSQL cannot compare one that holds it.
    job_ids: list[Annotated[str, Field(pattern=r"^[^\x00]*$")]] = Field(
        default_factory=list, max_length=10000
    )
    failed: bool = False
    namespace: str | None = None


class ChunkBody(BaseModel):
    seq: int = Field(ge=0, le=MAX_INT32)
    # A log line is text: PostgreSQL cannot store NUL, and no terminal shows it.
    text: str = Field(pattern=r"^[^\x00]*$")


class LogsBody(BaseModel):
    lease: str
    chunks: list[ChunkBody]


class StepBody(BaseModel):
    lease: str
    step: int = Field(ge=1, le=MAX_INT32)
    status: Literal["started", "finished", "skipped", "cached"]
    exit_code: int | None = Field(default=None, ge=-MAX_INT32 - 1, le=MAX_INT32)


class BrokeredUseBody(BaseModel):
    """A job's uses of one brokered secret (``BrokeredUse``): the coordinator audits them."""

    secret_id: str = Field(max_length=64)
    name: str = Field(max_length=256)
    version: int = Field(ge=1, le=MAX_INT32)
    hosts: dict[str, Annotated[int, Field(ge=1, le=MAX_INT32)]] = Field(
        min_length=1, max_length=MAX_USE_HOSTS
    )


class CompleteBody(BaseModel):
    lease: str
    result: dict[str, Any]
    brokered: list[BrokeredUseBody] = Field(default_factory=list, max_length=256)
    # Claim the executor's next job in the same request: the answer is then the claim's.
    claim: ClaimBody | None = None


class FailBody(BaseModel):
    lease: str
    state: Literal["failed", "errored", "canceled"]
    error: str
    brokered: list[BrokeredUseBody] = Field(default_factory=list, max_length=256)
    claim: ClaimBody | None = None


class PolicyBody(BaseModel):
    """A namespace's sandbox requirement; what is left out is not required."""

    isolation: Literal["runc", "gvisor"] | None = None
    network: Literal["open", "none", "allow"] | None = None
    allow_hosts: list[str] = Field(default_factory=list, max_length=1000)
    job_timeout_s: float | None = Field(default=None, gt=0, le=MAX_INT)
    disk_cap_bytes: int | None = Field(default=None, gt=0, le=MAX_INT)
    require_labels: list[str] = Field(default_factory=list, max_length=100)


class CachePutBody(BaseModel):
    namespace: str
    secret_refs: list[str] = Field(default_factory=list)
    entry: str


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    """The request's bearer token, read on the event loop (no database, no thread)."""
    return credentials.credentials if credentials is not None else None


Token = Annotated[str | None, Depends(bearer_token)]


def principal(request: Request, token: Token) -> Principal:
    coordinator: Coordinator = request.app.state.coordinator
    return coordinator.authenticate(token)


Who = Annotated[Principal, Depends(principal)]
# The executors' endpoints, called several times a second by each executor, take the
# Token and authenticate on the endpoint's own worker thread: a sync dependency runs
# on a thread of its own, and that second hop per request was a tenth of the
# coordinator's CPU per job (issue 21). They answer with a JSONResponse for the same
# reason: a returned dict is validated and encoded again, on a third hop. Their work
# is done by the functions below, which `runner.queue.fastpath` calls too: it answers
# the same requests without FastAPI's routing, dependencies and middleware.


class CompactJSON(JSONResponse):
    """``JSONResponse``'s body from pydantic's serializer instead of ``json.dumps``.

    The same bytes for the values these answers hold (str, int, bool, None, lists and
    dicts: ``tests/test_fastpath.py`` compares them), in a third of the time: a claim's
    answer of 1.3 kB took 9.8 µs to encode, 3 µs this way (issue 21). Only the
    executors' answers use it: they are sent once per job. Where ``json.dumps``
    refused a NaN or an infinity (none of these answers holds a float), this sends
    null.
    """

    def render(self, content: Any) -> bytes:
        return to_json(content, inf_nan_mode="null")


def claim_answer(c: Coordinator, token: str | None, body: ClaimBody) -> Response:
    return _claimed_answer(c, c.authenticate(token), body)


def _claimed_answer(c: Coordinator, who: Principal, body: ClaimBody) -> Response:
    return _job_answer(_claim(c, who, body))


def _claim(c: Coordinator, who: Principal, body: ClaimBody) -> ClaimedJob | None:
    with c.metrics.claim_seconds.time():
        claimed = c.claim(who, executor=body.executor, labels=body.labels)
    c.metrics.claims.labels("empty" if claimed is None else "claimed").inc()
    return claimed


def _job_answer(claimed: ClaimedJob | None) -> Response:
    if claimed is None:
        return Response(status_code=204)
    # Values are revealed here, into the response body only. While they are in plain
    # text in this process, whatever it logs (a traceback's locals) is redacted too.
    with active().scoped(f"claim:{claimed.lease.job.id}:{claimed.lease.attempt}") as scope:
        register_values(scope, plan=claimed.plan, secrets=claimed.secrets)
        return CompactJSON(claimed.to_json(), headers={"Cache-Control": "no-store"})


def heartbeat_answer(c: Coordinator, token: str | None, body: HeartbeatBody) -> Response:
    who = c.authenticate(token)
    leases = {j.id: j.lease for j in body.jobs}
    info = body.info.model_dump() if body.info is not None else None
    answer = c.heartbeat(who, executor=body.executor, leases=leases, info=info)
    return JSONResponse(answer.to_json())


def logs_answer(c: Coordinator, token: str | None, job_id: str, body: LogsBody) -> Response:
    who = c.authenticate(token)
    added = c.append_logs(
        who, job_id, lease=body.lease, chunks=[(ch.seq, ch.text) for ch in body.chunks]
    )
    return JSONResponse({"added": added})


def step_answer(c: Coordinator, token: str | None, job_id: str, body: StepBody) -> Response:
    c.record_step(
        c.authenticate(token),
        job_id,
        lease=body.lease,
        step=body.step,
        status=body.status,
        exit_code=body.exit_code,
    )
    return JSONResponse({"ok": True})


def complete_answer(c: Coordinator, token: str | None, job_id: str, body: CompleteBody) -> Response:
    who = c.authenticate(token)
    brokered = [use.model_dump() for use in body.brokered]
    if body.claim is None:
        record = c.complete(who, job_id, lease=body.lease, result=body.result, brokered=brokered)
        return CompactJSON(record.to_json())
    with c.turn():  # the end and the next claim in one turn (Coordinator.turn)
        record = c.complete(who, job_id, lease=body.lease, result=body.result, brokered=brokered)
        claimed = _next_claim(c, who, body.claim)
    return _next_job_answer(claimed, record.state)


def fail_answer(c: Coordinator, token: str | None, job_id: str, body: FailBody) -> Response:
    who = c.authenticate(token)
    brokered = [use.model_dump() for use in body.brokered]

    def fail() -> JobRecord:
        return c.fail(
            who, job_id, lease=body.lease, state=body.state, error=body.error, brokered=brokered
        )

    if body.claim is None:
        return CompactJSON(fail().to_json())
    with c.turn():
        record = fail()
        claimed = _next_claim(c, who, body.claim)
    return _next_job_answer(claimed, record.state)


def _next_claim(c: Coordinator, who: Principal, claim: ClaimBody) -> ClaimedJob | Exception | None:
    """The executor's next claim after a job's end, or what it raised: the end is
    recorded by then and stays so, and the claim's error is answered as its own."""
    try:
        return _claim(c, who, claim)
    except Exception as exc:  # answered by _next_job_answer, with its traceback
        return exc


def _next_job_answer(claimed: ClaimedJob | Exception | None, state: str) -> Response:
    """After a job's end, the executor's next job answered as ``/api/executor/claim`` would
    (the job, a 204, or the claim's error): one round trip where there were two. The end
    stays recorded whatever the claim says; the header tells the executor so."""
    path = "/api/executor/claim"
    try:
        if isinstance(claimed, Exception):
            raise claimed
        response: Response = _job_answer(claimed)
    except RunnerError as exc:
        response = runner_error_answer(path, exc)
    except Exception as exc:  # the end stays recorded; the log says what failed
        response = internal_error_answer(path, exc)
    response.headers[ENDED_HEADER] = state
    return response


# The application ----------------------------------------------------------------------


def add_api(app: FastAPI, coordinator: Coordinator) -> None:
    """Serve the JSON API (``/api/…``) of ``coordinator`` and its error answers on ``app``.

    Namespaces are parsed here, once; the service takes ``Namespace`` values.
    """
    _install_error_handlers(app)

    app.state.coordinator = coordinator
    c = coordinator

    # Executors first: the router tries routes in order, and an executor calls these
    # several times a second (matching twenty routes was a tenth of a request's CPU).

    @app.post("/api/executor/claim", tags=["executors"], response_model=None)
    def claim(token: Token, body: ClaimBody) -> Response:
        return claim_answer(c, token, body)

    @app.post("/api/executor/heartbeat", tags=["executors"], response_model=None)
    def heartbeat(token: Token, body: HeartbeatBody) -> Response:
        return heartbeat_answer(c, token, body)

    @app.get("/api/executors", tags=["executors"])
    def list_executors(who: Who) -> list[dict[str, Any]]:
        return c.executors(who)

    @app.post("/api/executor/jobs/{job_id}/logs", tags=["executors"], response_model=None)
    def append_logs(token: Token, job_id: str, body: LogsBody) -> Response:
        return logs_answer(c, token, job_id, body)

    @app.post("/api/executor/jobs/{job_id}/steps", tags=["executors"], response_model=None)
    def record_step(token: Token, job_id: str, body: StepBody) -> Response:
        return step_answer(c, token, job_id, body)

    @app.post("/api/executor/jobs/{job_id}/complete", tags=["executors"], response_model=None)
    def complete(token: Token, job_id: str, body: CompleteBody) -> Response:
        return complete_answer(c, token, job_id, body)

    @app.post("/api/executor/jobs/{job_id}/fail", tags=["executors"], response_model=None)
    def fail(token: Token, job_id: str, body: FailBody) -> Response:
        return fail_answer(c, token, job_id, body)

    @app.get("/api/executor/cache/{key}", tags=["executors"], response_model=None)
    def cache_get(who: Who, key: str) -> Response:
        data = c.cache_get(who, key)
        if data is None:
            return JSONResponse(error_body("CacheMiss", f"no cache entry {key}"), status_code=404)
        return JSONResponse({"key": key, "entry": base64.b64encode(data).decode("ascii")})

    @app.put("/api/executor/cache/{key}", tags=["executors"])
    def cache_put(who: Who, key: str, body: CachePutBody) -> dict[str, Any]:
        c.cache_put(
            who, key, entry=body.entry, namespace=body.namespace, secret_refs=body.secret_refs
        )
        return {"ok": True}

    # Users ----------------------------------------------------------------------

    @app.get("/api/whoami", tags=["users"])
    def whoami(who: Who) -> dict[str, Any]:
        return c.whoami(who)

    @app.get("/api/secrets", tags=["secrets"])
    def list_secrets(
        who: Who, namespace: str | None = None, scope: str | None = None
    ) -> list[dict[str, Any]]:
        metas = c.list_secrets(who, namespace=parse_optional(namespace), scope=scope)
        return [m.to_json() for m in metas]

    @app.get("/api/secrets/log", tags=["secrets"])
    def secret_log(
        who: Who, name: str | None = None, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        events = c.secret_log(who, name=name, namespace=parse_optional(namespace))
        return [e.to_json() for e in events]

    @app.put("/api/secrets/{namespace}/{name}", tags=["secrets"])
    def set_secret(who: Who, namespace: str, name: str, body: SecretSetBody) -> dict[str, Any]:
        value = Secret(body.value.get_secret_value())
        # No delivery in the body keeps the secret's current one.
        delivery = body.delivery.delivery() if body.delivery else None
        meta, created = c.set_secret(
            who,
            name=name,
            namespace=parse_namespace(namespace),
            value=value,
            scope=body.scope,
            delivery=delivery,
        )
        return {"created": created, "secret": meta.to_json()}

    @app.delete("/api/secrets/{namespace}/{name}", tags=["secrets"])
    def remove_secret(
        who: Who, namespace: str, name: str, scope: str | None = None
    ) -> dict[str, Any]:
        ns = parse_namespace(namespace)
        return c.remove_secret(who, name=name, namespace=ns, scope=scope).to_json()

    @app.post("/api/env/explain", tags=["specs"])
    def env_explain(who: Who, body: BundleBody) -> dict[str, Any]:
        return c.explain(who, bundle=body.bundle, namespace=parse_namespace(body.namespace))

    @app.post("/api/submissions", tags=["jobs"], status_code=201)
    def submit(who: Who, body: BundleBody) -> dict[str, Any]:
        ns = parse_namespace(body.namespace)
        submission, jobs = c.submit(who, bundle=body.bundle, namespace=ns, labels=body.labels)
        return {
            "submission_id": submission.id,
            "namespace": submission.namespace,
            "jobs": [j.to_json() for j in jobs],
        }

    @app.get("/api/jobs", tags=["jobs"])
    def list_jobs(
        who: Who, limit: Annotated[int, Query(ge=1, le=10000)] = 1000
    ) -> list[dict[str, Any]]:
        return c.jobs_json(c.list_jobs(who, limit=limit))

    @app.get("/api/jobs/{job_id}", tags=["jobs"])
    def show_job(who: Who, job_id: str) -> dict[str, Any]:
        return c.show_job(who, job_id)

    @app.get("/api/jobs/{job_id}/logs", tags=["jobs"])
    def job_logs(
        who: Who,
        job_id: str,
        after: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    ) -> dict[str, Any]:
        job, chunks = c.job_logs(who, job_id, after=after, limit=limit)
        return {
            "job_id": job.id,
            "state": job.state,
            "chunks": [ch.to_json() for ch in chunks],
            "next": chunks[-1].cursor if chunks else after,
        }

    @app.post("/api/jobs/retry", tags=["jobs"])
    def retry_jobs(who: Who, body: RetryBody) -> dict[str, Any]:
        if body.failed:
            made = c.retry_failed(who, namespace=parse_optional(body.namespace))
        else:
            made = c.retry_jobs(who, body.job_ids)
        return {"jobs": [j.to_json() for j in made]}

    @app.post("/api/jobs/{job_id}/cancel", tags=["jobs"])
    def cancel_job(who: Who, job_id: str) -> dict[str, Any]:
        return c.cancel_job(who, job_id).to_json()

    @app.get("/api/jobs/{job_id}/result", tags=["jobs"])
    def job_result(who: Who, job_id: str) -> dict[str, Any]:
        return dict(c.job_result(who, job_id))

    # Namespaces ----------------------------------------------------------------------

    @app.get("/api/namespaces/{namespace}/policy", tags=["namespaces"])
    def namespace_policy(who: Who, namespace: str) -> dict[str, Any]:
        return c.namespace_policy(who, parse_namespace(namespace)).to_json()

    @app.put("/api/namespaces/{namespace}/policy", tags=["namespaces"])
    def set_namespace_policy(who: Who, namespace: str, body: PolicyBody) -> dict[str, Any]:
        policy = NamespacePolicy.from_json(body.model_dump())
        ns = parse_namespace(namespace)
        return c.set_namespace_policy(who, ns, policy, labels=body.require_labels).to_json()

    @app.delete("/api/namespaces/{namespace}/policy", tags=["namespaces"])
    def clear_namespace_policy(who: Who, namespace: str) -> dict[str, Any]:
        ns = parse_namespace(namespace)
        return {"namespace": str(ns), "cleared": c.clear_namespace_policy(who, ns)}


def runner_error_answer(path: str, exc: RunnerError) -> JSONResponse:
    """The class, message, hint and declared fields, every string redacted: the client
    raises the same class again from them."""
    status = exc.http_status
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status >= 500:
        log.error("request failed", path=path, error=str(exc))
    return JSONResponse(
        {"error": error_to_json(exc, active().redact)}, status_code=status, headers=headers
    )


def internal_error_answer(path: str, exc: Exception) -> JSONResponse:
    log.error("internal error", path=path, error=f"{type(exc).__name__}: {exc}")
    return JSONResponse(
        error_body(
            "InternalError",
            "the coordinator failed to handle the request",
            "see the coordinator's log",
        ),
        status_code=500,
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RunnerError)
    async def runner_error(request: Request, exc: RunnerError) -> JSONResponse:
        return runner_error_answer(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Pydantic's details echo the input, which may hold a secret: keep only where and what.
        problems = [_problem(e) for e in exc.errors()]
        return JSONResponse(
            error_body(
                "InvalidRequest",
                "invalid request: " + "; ".join(problems[:5]),
                "see /openapi.json for the expected shape",
            ),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body("HTTPError", str(exc.detail)),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return internal_error_answer(request.url.path, exc)


def _problem(error: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
    return f"{where}: {error.get('msg', 'invalid')}"
