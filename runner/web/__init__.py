"""Web pages of the coordinator: executor secrets per namespace, jobs and their logs.

``mount_web(app, coordinator)`` adds the pages to the coordinator's FastAPI
app (``runner.queue.api.create_app``). They act through the same
``Coordinator`` service as the JSON API and the CLI, so the same permission
rules apply; see ``docs/web.md``.

- ``session``: server-side sessions (the browser holds a random id, never the token);
- ``csrf``: the form-post checks;
- ``render``: templates, log-line rendering, URLs;
- ``routes``: the pages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from runner.queue.service import Coordinator
    from runner.web.session import SessionStore


def mount_web(
    app: FastAPI,
    coordinator: Coordinator,
    *,
    sessions: SessionStore | None = None,
    poll_interval_s: float = 1.0,
) -> None:
    """Serve the pages (``/``, ``/sign-in``, ``/secrets…``, ``/jobs…``) and ``/static``.

    Mounting twice keeps the first routes and updates their settings.
    """
    from runner.web.render import STATIC_DIR, HardenedStaticFiles
    from runner.web.routes import WebPages
    from runner.web.session import SessionStore

    existing = getattr(app.state, "web", None)
    if isinstance(existing, WebPages):
        existing.poll_interval_s = poll_interval_s
        if sessions is not None:
            existing.sessions = sessions
        return
    pages = WebPages(
        coordinator, sessions=sessions or SessionStore(), poll_interval_s=poll_interval_s
    )
    app.state.web = pages
    app.include_router(pages.router())
    app.mount("/static", HardenedStaticFiles(directory=STATIC_DIR), name="web-static")


__all__ = ["mount_web"]
