"""Signing in and out, and the home page.

Signing in takes a user token once: the session keeps the token's id (never
the token) and the browser gets only a random session id (``runner.web.session``). The
sign-in form has no session yet, so its CSRF token also goes in a short-lived
cookie (double submit).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from runner.errors import RunnerError
from runner.web import csrf
from runner.web.context import WebContext, log
from runner.web.deps import FormPoster, MaybeViewer, PageRoute, Web, redirect
from runner.web.render import redact
from runner.web.session import COOKIE_NAME

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def safe_next(target: str | None) -> str:
    """A local path to go to after sign-in; anything else goes to the secrets."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(ch) < 0x20 for ch in target)
    ):
        return "/secrets"
    return target


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _sign_in_form(
    web: WebContext,
    request: Request,
    *,
    next_url: str,
    status: int = 200,
    error: str | None = None,
    notice: str | None = None,
) -> Response:
    token = csrf.new_token()
    response = web.render(
        request,
        "sign_in.html",
        None,
        status=status,
        csrf_token=token,
        next_url=next_url,
        error=error,
        notice=notice,
    )
    response.set_cookie(
        csrf.SIGN_IN_COOKIE,
        token,
        max_age=3600,
        path="/sign-in",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


@router.get("/", response_class=HTMLResponse)
def home(viewer: MaybeViewer) -> Response:
    return redirect("/secrets" if viewer else "/sign-in")


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in(
    request: Request,
    web: Web,
    viewer: MaybeViewer,
    next_url: Annotated[str | None, Query(alias="next")] = None,
    signed_out: Annotated[int, Query()] = 0,
) -> Response:
    if viewer is not None:
        return redirect(safe_next(next_url))
    notice = "You are signed out." if signed_out else None
    return _sign_in_form(web, request, next_url=safe_next(next_url), notice=notice)


@router.post("/sign-in", response_class=HTMLResponse)
def sign_in_post(
    request: Request,
    web: Web,
    token: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    next_url: Annotated[str, Form(alias="next")] = "",
) -> Response:
    csrf.check_form(request, request.cookies.get(csrf.SIGN_IN_COOKIE), csrf_token)
    target = safe_next(next_url)
    given = token.strip()
    try:
        principal = web.coordinator.authenticate(given)
        web.coordinator.user(principal)
    except RunnerError as exc:
        log.info("sign-in refused", reason=exc.message)
        return _sign_in_form(
            web, request, next_url=target, status=exc.http_status, error=redact(str(exc))
        )
    session_id, _ = web.sessions.create(token_id=principal.token_id, user=principal.name)
    log.info("signed in", user=principal.name, token_id=principal.token_id)
    response = redirect(target)
    response.set_cookie(
        COOKIE_NAME,
        session_id,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(csrf.SIGN_IN_COOKIE, path="/sign-in")
    return response


@router.post("/sign-out", response_class=HTMLResponse)
def sign_out(web: Web, viewer: FormPoster) -> Response:
    web.sessions.end(viewer.session_id)
    log.info("signed out", user=viewer.name)
    response = redirect("/sign-in?signed_out=1")
    response.delete_cookie(COOKIE_NAME, path="/")
    return response
