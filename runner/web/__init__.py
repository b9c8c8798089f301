"""Web pages of the coordinator: executor secrets per namespace, jobs and their logs.

``mount_web(app, coordinator)`` adds the pages to the coordinator's FastAPI
app (``runner.queue.server.create_app`` calls it). They act through the same
``Coordinator`` service as the JSON API and the CLI, so the same permission
rules apply; see ``docs/web.md``.

- ``session``: server-side sessions, in the database (the browser holds a random id;
  the server keeps the token's id, never the token);
- ``csrf``: the form-post checks;
- ``render``: templates, log-line rendering, URLs;
- ``context``: the viewer, rendering and error pages every page shares;
- ``deps``: the pages' dependencies (viewer, CSRF, managed namespace) and route class;
- ``routes``: every page, from ``account``, ``secret_pages`` and ``job_pages``.
"""

from __future__ import annotations

from fastapi import FastAPI

from runner.queue.service import Coordinator
from runner.web.context import WebContext
from runner.web.render import STATIC_DIR, HardenedStaticFiles
from runner.web.routes import router
from runner.web.session import Sessions, SessionStore


def mount_web(
    app: FastAPI,
    coordinator: Coordinator,
    *,
    sessions: Sessions | None = None,
    poll_interval_s: float = 1.0,
) -> None:
    """Serve the pages (``/``, ``/sign-in``, ``/secrets…``, ``/jobs…``) and ``/static``.

    Mounting twice keeps the first routes and updates their settings.
    """
    existing = getattr(app.state, "web", None)
    if isinstance(existing, WebContext):
        existing.poll_interval_s = poll_interval_s
        if sessions is not None:
            existing.sessions = sessions
        return
    app.state.web = WebContext(
        coordinator=coordinator,
        sessions=sessions if sessions is not None else SessionStore(),
        poll_interval_s=poll_interval_s,
    )
    app.include_router(router)
    app.mount("/static", HardenedStaticFiles(directory=STATIC_DIR), name="web-static")


__all__ = ["mount_web"]
