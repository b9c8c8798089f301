"""Jobs: the list, one job with its log and changeset specs, the log poller, cancel.

A job's log is read page by page; the page's script polls ``log.json`` for the
rest. Every line is redacted again before it is shown (``runner.web.render``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from runner.errors import NotAuthenticatedError, RunnerError, error_to_json
from runner.queue.models import TERMINAL_STATES
from runner.redact import active
from runner.web.context import harden
from runner.web.deps import FormPoster, PageRoute, SignedIn, Web, redirect
from runner.web.render import changesets_of, job_url, redact, render_chunks

router = APIRouter(route_class=PageRoute, include_in_schema=False)
# The poller's answers are JSON, errors included: not a page route.
poll_router = APIRouter(include_in_schema=False)

# Pages of a job's log read at most this many chunks at once (the poller fetches the rest).
LOG_PAGE: Final = 1000
LOG_PAGES_MAX: Final = 20


@router.get("/jobs", response_class=HTMLResponse)
def jobs(request: Request, web: Web, viewer: SignedIn) -> Response:
    records = list(reversed(web.coordinator.list_jobs(viewer.principal)))
    waiting = web.coordinator.why_waiting(records)
    return web.render(request, "jobs.html", viewer, jobs=records, waiting=waiting)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job(request: Request, web: Web, viewer: SignedIn, job_id: str) -> Response:
    c = web.coordinator
    shown = c.show_job(viewer.principal, job_id)
    texts: list[str] = []
    cursor = 0
    for _ in range(LOG_PAGES_MAX):
        _, chunks = c.job_logs(viewer.principal, job_id, after=cursor, limit=LOG_PAGE)
        texts.extend(ch.text for ch in chunks)
        if chunks:
            cursor = chunks[-1].cursor
        if len(chunks) < LOG_PAGE:
            break
    return web.render(
        request,
        "job.html",
        viewer,
        job=shown,
        terminal=shown["state"] in TERMINAL_STATES,
        lines=render_chunks(texts),
        cursor=cursor,
        changesets=changesets_of(shown.get("result")),
        isolation=isolation_of(shown.get("result"), texts),
        poll_ms=int(web.poll_interval_s * 1000),
        error=redact(shown.get("error")),
    )


def isolation_of(result: Mapping[str, Any] | None, texts: Sequence[str]) -> str | None:
    """The isolation level the job ran at: its result's, else its last attempt's start.

    A failed job has no result; its log's ``run.started`` says what its
    executor ran it under. None for a job no executor has started.
    """
    sandbox = (result or {}).get("sandbox")
    if isinstance(sandbox, Mapping) and sandbox.get("isolation"):
        return str(sandbox["isolation"])
    for text in reversed(texts):
        for line in reversed(text.splitlines()):
            if '"run.started"' not in line:
                continue
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                started = event.get("sandbox") if isinstance(event, dict) else None
                if isinstance(started, dict) and started.get("isolation"):
                    return str(started["isolation"])
    return None


def _json_error(exc: RunnerError) -> Response:
    body = {"error": error_to_json(exc, active().redact)}
    return harden(JSONResponse(body, status_code=exc.http_status))


@poll_router.get("/jobs/{job_id}/log.json")
def job_log_json(
    request: Request, web: Web, job_id: str, after: Annotated[int, Query(ge=0)] = 0
) -> Response:
    """The log lines after ``after``, for the page's poller."""
    viewer = web.viewer(request)
    if viewer is None:
        return _json_error(NotAuthenticatedError("not signed in", hint="sign in again at /sign-in"))
    try:
        record, chunks = web.coordinator.job_logs(
            viewer.principal, job_id, after=after, limit=LOG_PAGE
        )
    except RunnerError as exc:
        return _json_error(exc)
    more = len(chunks) == LOG_PAGE
    answer = JSONResponse(
        {
            "job_id": record.id,
            "state": record.state,
            "terminal": record.terminal and not more,
            "cancel_requested": record.cancel_requested,
            "next": chunks[-1].cursor if chunks else after,
            "more": more,
            "lines": [ln.to_json() for ln in render_chunks(ch.text for ch in chunks)],
        }
    )
    return harden(answer)


@router.post("/jobs/{job_id}/cancel", response_class=HTMLResponse)
def job_cancel(web: Web, viewer: FormPoster, job_id: str) -> Response:
    record = web.coordinator.cancel_job(viewer.principal, job_id)
    if record.state == "canceled":
        web.notify(viewer, f"Job {job_id} canceled.")
    elif record.state == "processing":
        web.notify(viewer, f"Cancel requested for job {job_id}; its executor stops it.")
    else:
        web.notify(viewer, f"Job {job_id} is already {record.state}.")
    return redirect(job_url(job_id))
