"""The executor fleet (admins): each executor's latest heartbeat, stale ones marked.

The same ``Coordinator.executors`` as `runner executors list` and the API, so
the same rule applies: only site admins see the fleet.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from runner.web.deps import PageRoute, SignedIn, Web

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/executors", response_class=HTMLResponse)
def executors(request: Request, web: Web, viewer: SignedIn) -> Response:
    fleet = web.coordinator.executors(viewer.principal)
    return web.render(request, "executors.html", viewer, executors=fleet)
