"""The executors' hot endpoints, answered in front of FastAPI.

Every executor posts to claim, heartbeat, logs, steps, complete and fail
several times a second. Through FastAPI each of those requests crossed eight
ASGI middlewares, the router, dependency resolution and a thread hop through
anyio: about half of the coordinator's CPU per job over HTTP (issue 21;
BENCHMARKS.md has the profile). ``ExecutorFastPath`` answers exactly these
POSTs itself, with the functions the FastAPI routes call
(``api.claim_answer`` …), the same request models and the same error answers.

What it does not take as its own goes on to FastAPI unchanged, the body
replayed: another method or path, a body that is not ``application/json``,
is not JSON or fails its model. FastAPI then answers as it always did (the
422 and its wording, a 405, a redirect), so the two paths cannot disagree
about a malformed request. The FastAPI routes stay registered: they are the
OpenAPI document and that fallback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Final

from pydantic import BaseModel, ValidationError
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from runner.errors import RunnerError
from runner.queue import api
from runner.queue.service import Coordinator

# A handler: (coordinator, bearer token, [job id,] validated body) -> the response.
Handler = Callable[..., Response]

_FIXED: Final[dict[str, tuple[type[BaseModel], Handler]]] = {
    "/api/executor/claim": (api.ClaimBody, api.claim_answer),
    "/api/executor/heartbeat": (api.HeartbeatBody, api.heartbeat_answer),
}
_JOBS: Final = "/api/executor/jobs/"
_PER_JOB: Final[dict[str, tuple[type[BaseModel], Handler]]] = {
    "complete": (api.CompleteBody, api.complete_answer),
    "logs": (api.LogsBody, api.logs_answer),
    "steps": (api.StepBody, api.step_answer),
    "fail": (api.FailBody, api.fail_answer),
}


def match(path: str) -> tuple[type[BaseModel], Handler, tuple[str, ...]] | None:
    """The model, handler and path arguments of an executor POST to ``path``, or None.

    The same paths the routes declare: ``{job_id}`` is one non-empty segment.
    """
    fixed = _FIXED.get(path)
    if fixed is not None:
        return fixed[0], fixed[1], ()
    if not path.startswith(_JOBS):
        return None
    job_id, slash, action = path[len(_JOBS) :].partition("/")
    found = _PER_JOB.get(action) if slash and job_id else None
    if found is None:
        return None
    return found[0], found[1], (job_id,)


def _header(scope: Scope, name: bytes) -> str | None:
    """The first header called ``name`` (lower case), as Starlette's ``headers.get``."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def bearer(scope: Scope) -> str | None:
    """The bearer token, as FastAPI's ``HTTPBearer(auto_error=False)`` reads it."""
    authorization = _header(scope, b"authorization")
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    credentials = credentials.strip()
    if not scheme or not credentials or scheme.lower() != "bearer":
        return None
    return credentials


def parse(model: type[BaseModel], scope: Scope, body: bytes) -> BaseModel | None:
    """The body as ``model`` when it is plain JSON that validates; otherwise None (FastAPI
    will answer, with its own wording)."""
    content_type = _header(scope, b"content-type")
    if not body or content_type is None:
        return None
    if content_type.partition(";")[0].strip().lower() != "application/json":
        return None
    try:
        # Parsed and validated in one pass by pydantic (2 µs against json.loads and
        # model_validate's 5, issue 21). Anything it refuses that FastAPI's json.loads
        # takes (another UTF encoding, a lone surrogate) goes to FastAPI, which answers.
        return model.model_validate_json(body)
    except (ValueError, ValidationError):  # UnicodeDecodeError too
        return None


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when the client went away."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` giving ``body`` once, then whatever the connection says next."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


Next = Callable[[Scope, Receive, Send], Awaitable[None]]


class ExecutorFastPath:
    """Answers the executors' POSTs of one coordinator; ``next`` gets every other request.

    ``inline``: call the service on the event loop's own thread. Right for SQLite,
    whose one connection serves one statement at a time behind a process-wide lock:
    a worker thread adds no parallelism there (the lock and the GIL serialize the
    work anyway), only its cost, two thread switches and their GIL hand-offs per
    request, 0.3 ms of a 1 ms job over HTTP. The loop then waits as a thread would
    have: for another thread's transaction on that connection, or another process's
    write (short ones: `runner secret set`, `runner token create`). Otherwise
    (PostgreSQL: a connection per thread, waiting on the network in parallel) the
    work runs on a pool of threads.
    """

    def __init__(self, coordinator: Coordinator, *, inline: bool = False) -> None:
        self._coordinator = coordinator
        self._inline = inline
        # Its own pool, not anyio's: the same hop for less Python (no capacity limiter,
        # no cancel scope); sized like the executors' concurrency, not like a web server.
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="executor-api")

    async def __call__(self, scope: Scope, receive: Receive, send: Send, next: Next) -> None:
        found = match(scope["path"]) if scope["type"] == "http" else None
        if found is None or scope["method"] != "POST":
            await next(scope, receive, send)
            return
        model, handler, args = found
        body = await _read_body(receive)
        if body is None:
            return  # the client disconnected: no one to answer
        parsed = parse(model, scope, body)
        if parsed is None:
            await next(scope, _replay(body, receive), send)
            return
        call = partial(handler, self._coordinator, bearer(scope), *args, parsed)
        if self._inline:
            response = _answer(call, scope["path"])
        else:
            loop = asyncio.get_running_loop()
            response = await loop.run_in_executor(self._pool, _answer, call, scope["path"])
        await response(scope, receive, send)


def _answer(call: Callable[[], Response], path: str) -> Response:
    """``call``'s response, or the error answer FastAPI's handlers would give."""
    try:
        return call()
    except RunnerError as exc:
        return api.runner_error_answer(path, exc)
    except Exception as exc:  # the InternalError answer; the log says what
        return api.internal_error_answer(path, exc)
