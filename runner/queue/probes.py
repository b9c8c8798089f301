"""What a load balancer and Prometheus ask a coordinator: ``/healthz``, ``/readyz``, ``/metrics``.

All three answer without a token and reveal nothing else: ``/healthz`` says
the process answers; ``/readyz`` that its database answers and has every
migration this runner knows (a replica on a database another version has
not finished migrating, or one restored from an older backup, is not
ready); ``/metrics`` is this replica's registry (``runner.metrics``) in
Prometheus' text format, with the job and executor gauges read from the
database as it is scraped.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from runner.db import Database
from runner.errors import RunnerError
from runner.log import get_logger
from runner.metrics import CONTENT_TYPE, CoordinatorMetrics
from runner.migrations import registered

log = get_logger("runner.queue.probes")

_NO_STORE = {"Cache-Control": "no-store"}


def schema_problem(db: Database) -> str | None:
    """Why ``db`` is not ready (unreachable, or migrations missing), or None."""
    try:
        applied = db.applied_migrations()
    except RunnerError as exc:
        log.warning("readiness: the database does not answer", error=type(exc).__name__)
        return "the database does not answer"
    missing = [m.version for m in registered() if m.version not in applied]
    if missing:
        return f"the database schema is behind: {len(missing)} migration(s) not applied"
    return None


def add_probes(app: FastAPI, metrics: CoordinatorMetrics, db: Database | None) -> None:
    """Serve the three probes on ``app``; without ``db`` (a memory store) readiness is health."""

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return JSONResponse({"status": "ok"}, headers=_NO_STORE)

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        problem = await run_in_threadpool(schema_problem, db) if db is not None else None
        if problem is not None:
            return JSONResponse(
                {"status": "not ready", "reason": problem}, status_code=503, headers=_NO_STORE
            )
        return JSONResponse({"status": "ready"}, headers=_NO_STORE)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_page() -> Response:
        # Scraping reads the database: off the event loop.
        body = await run_in_threadpool(metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE, headers=_NO_STORE)
