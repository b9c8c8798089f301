"""The pages' FastAPI dependencies, and the route class that answers their refusals.

A page declares what it needs and gets it checked in this order: the
``WebContext``; the signed-in ``Viewer`` (``SignedIn``, or ``MaybeViewer``);
for a form post, the CSRF check (``FormPoster``); for a namespace in the path,
the right to manage it (``Managed``: the namespace parsed once, the refusal
audited). ``PageRoute`` turns a missing sign-in into a redirect to it and any
``RunnerError`` into an HTML error page, and adds the security headers to
every answer.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute

from runner.errors import RunnerError
from runner.namespaces import Namespace, parse_namespace
from runner.web import csrf
from runner.web.context import Viewer, WebContext, harden


class SignInNeeded(Exception):
    """The page needs a signed-in user and there is none."""


def web_context(request: Request) -> WebContext:
    context: WebContext = request.app.state.web
    return context


Web = Annotated[WebContext, Depends(web_context)]


def maybe_viewer(request: Request, web: Web) -> Viewer | None:
    return web.viewer(request)


MaybeViewer = Annotated[Viewer | None, Depends(maybe_viewer)]


def signed_in(viewer: MaybeViewer) -> Viewer:
    if viewer is None:
        raise SignInNeeded
    return viewer


SignedIn = Annotated[Viewer, Depends(signed_in)]


def form_poster(
    request: Request, viewer: SignedIn, csrf_token: Annotated[str, Form()] = ""
) -> Viewer:
    """The viewer, once the form proved it came from our own page."""
    csrf.check_form(request, viewer.csrf, csrf_token)
    return viewer


FormPoster = Annotated[Viewer, Depends(form_poster)]


def managed_namespace(namespace: str, viewer: SignedIn, web: Web) -> Namespace:
    """The path's namespace, if the viewer manages it; else a refusal (audited)."""
    ns = parse_namespace(namespace)
    web.coordinator.policy.check_manage(viewer.name, ns)
    return ns


Managed = Annotated[Namespace, Depends(managed_namespace)]


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def _to_sign_in(request: Request) -> Response:
    target = request.url.path
    if request.method == "GET" and request.url.query:
        target += "?" + request.url.query
    query = urlencode({"next": target}) if target != "/" else ""
    return redirect("/sign-in" + (f"?{query}" if query else ""))


class PageRoute(APIRoute):
    """A route that answers like a page: redirects and HTML errors, never JSON errors."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                response = await handle(request)
            except SignInNeeded:
                response = _to_sign_in(request)
            except RunnerError as exc:
                # Rendering reads the session and the stores: off the event loop.
                response = await run_in_threadpool(web_context(request).error_page, request, exc)
            return harden(response)

        return page
