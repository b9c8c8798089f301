"""The pages: sign-in, secrets per namespace, a secret's access log, jobs and their logs.

Every page acts through ``Coordinator`` with the signed-in user's ``Principal``,
so the pages obey exactly the API's and the CLI's permission rules; where a page
checks a right up front (to show nothing of a namespace one may not manage), the
service checks it again when acting. Errors become HTML pages with the status
the API would give; validation errors are shown next to their field in the
CLI's words (``message — hint``).

A secret's value arrives in one form post, goes into a ``Secret`` at once and
on to the service; no page, notice, error or log line ever holds it, and value
fields are password fields that are never filled in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Concatenate, Final, ParamSpec
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from runner.errors import RunnerError, SecretNotFoundError, SecretValidationError
from runner.log import get_logger
from runner.namespaces import parse_namespace
from runner.queue.api import error_body, status_for
from runner.queue.models import TERMINAL_STATES
from runner.queue.service import Coordinator
from runner.queue.tokens import NotAuthenticatedError, Principal
from runner.secrets.models import SecretMeta
from runner.secrets.names import DEFAULT_SCOPE, SCOPES, check_scope, check_value, normalize_name
from runner.secrets.value import Secret
from runner.web import csrf
from runner.web.render import (
    changesets_of,
    job_url,
    make_templates,
    namespace_url,
    redact,
    render_chunks,
)
from runner.web.session import COOKIE_NAME, Session, SessionStore

log = get_logger("runner.web")

P = ParamSpec("P")

# Pages of a job's log read at most this many chunks at once (the poller fetches the rest).
LOG_PAGE: Final = 1000
LOG_PAGES_MAX: Final = 20

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class _SignInNeeded(Exception):
    pass


class _Redirect(Exception):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


@dataclass(frozen=True, kw_only=True)
class NamespaceLink:
    namespace: str
    title: str
    description: str


@dataclass(kw_only=True)
class Viewer:
    """The signed-in user of one request."""

    session_id: str
    session: Session
    principal: Principal
    name: str
    admin: bool
    orgs: list[str]
    other_orgs: list[str] = field(default_factory=list)

    @property
    def csrf(self) -> str:
        return self.session.csrf

    def namespaces(self) -> list[NamespaceLink]:
        """The secret pages this user manages: global (admins), their orgs, their own."""
        links = []
        if self.admin:
            links.append(
                NamespaceLink(
                    namespace="global",
                    title="Site admin › Executor secrets",
                    description="Global secrets, used by every namespace's jobs.",
                )
            )
        links.extend(
            NamespaceLink(
                namespace=f"org:{org}",
                title=f"{org} › Executor secrets",
                description=f"Secrets of the organization {org}, used by its jobs.",
            )
            for org in self.orgs
        )
        links.extend(
            NamespaceLink(
                namespace=f"org:{org}",
                title=f"{org} › Executor secrets",
                description=f"Secrets of the organization {org} (you manage them as site admin).",
            )
            for org in self.other_orgs
        )
        links.append(
            NamespaceLink(
                namespace=f"user:{self.name}",
                title="Your settings › Executor secrets",
                description="Your own secrets, used by the jobs you run as yourself.",
            )
        )
        return links


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


def _cookie_secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _harden(response: Response) -> Response:
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


def _field_error(exc: RunnerError) -> str:
    """A validation error as the CLI prints it, without the ``error:`` prefix."""
    return redact(str(exc))


class WebPages:
    def __init__(
        self,
        coordinator: Coordinator,
        *,
        sessions: SessionStore,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.coordinator = coordinator
        self.sessions = sessions
        self.poll_interval_s = poll_interval_s
        self.templates = make_templates()

    # Requests and responses ----------------------------------------------------------------

    def viewer(self, request: Request) -> Viewer | None:
        session_id = request.cookies.get(COOKIE_NAME)
        session = self.sessions.get(session_id)
        if session is None or session_id is None:
            return None
        try:
            principal = self.coordinator.authenticate(session.token)
        except NotAuthenticatedError:
            # The token was revoked: the session ends with it.
            self.sessions.end(session_id)
            return None
        who = self.coordinator.whoami(principal)
        admin = bool(who["admin"])
        orgs = list(who["orgs"])
        others = (
            [o.name for o in self.coordinator.secrets.orgs() if o.name not in orgs] if admin else []
        )
        return Viewer(
            session_id=session_id,
            session=session,
            principal=principal,
            name=principal.name,
            admin=admin,
            orgs=orgs,
            other_orgs=others,
        )

    def require(self, request: Request) -> Viewer:
        viewer = self.viewer(request)
        if viewer is None:
            raise _SignInNeeded
        return viewer

    def render(
        self,
        request: Request,
        template: str,
        viewer: Viewer | None,
        *,
        status: int = 200,
        **context: Any,
    ) -> Response:
        notices = self.sessions.take_notices(viewer.session) if viewer else []
        response = self.templates.TemplateResponse(
            request,
            template,
            {"viewer": viewer, "notices": notices, "path": request.url.path, **context},
            status_code=status,
        )
        return _harden(response)

    def error_page(self, request: Request, exc: RunnerError) -> Response:
        status = status_for(exc)
        if isinstance(exc, csrf.CsrfError):
            log.warning("form refused", path=request.url.path, reason=exc.message)
        elif status >= 500:
            log.error("page failed", path=request.url.path, error=str(exc))
        viewer = None
        try:
            viewer = self.viewer(request)
        except RunnerError:
            viewer = None
        return self.render(
            request,
            "error.html",
            viewer,
            status=status,
            error_type=type(exc).__name__,
            message=redact(exc.message),
            hint=redact(exc.hint),
            status_code=status,
        )

    def notify(self, viewer: Viewer, text: str) -> None:
        self.sessions.notify(viewer.session, redact(text))

    def check_csrf(self, request: Request, viewer: Viewer, given: str | None) -> None:
        csrf.check_form(request, viewer.csrf, given)

    def page(self, func: Callable[Concatenate[Request, P], Response]) -> Callable[..., Response]:
        """Turn sign-in needs, redirects and runner errors into HTML answers."""

        @functools.wraps(func)
        def wrapper(request: Request, *args: P.args, **kwargs: P.kwargs) -> Response:
            try:
                return func(request, *args, **kwargs)
            except _SignInNeeded:
                target = request.url.path
                if request.method == "GET" and request.url.query:
                    target += "?" + request.url.query
                query = urlencode({"next": target}) if target != "/" else ""
                return _harden(
                    RedirectResponse("/sign-in" + (f"?{query}" if query else ""), status_code=303)
                )
            except _Redirect as go:
                return _harden(RedirectResponse(go.url, status_code=303))
            except RunnerError as exc:
                return self.error_page(request, exc)

        return wrapper

    # Secrets helpers ----------------------------------------------------------------------

    def managed(self, viewer: Viewer, namespace: str) -> str:
        """The canonical namespace if this user manages it; else a refusal (audited)."""
        ns = parse_namespace(namespace)
        self.coordinator.policy.check_manage(viewer.name, ns)
        return str(ns)

    def own_secrets(self, viewer: Viewer, namespace: str) -> tuple[list[SecretMeta], list[Any]]:
        """This namespace's secrets, and the global ones its jobs inherit (not overridden)."""
        metas = self.coordinator.list_secrets(viewer.principal, namespace=namespace, scope=None)
        own = [m for m in metas if m.namespace == namespace]
        inherited = [m for m in metas if m.namespace != namespace]
        return own, inherited

    def find_secret(self, viewer: Viewer, namespace: str, name: str, scope: str) -> SecretMeta:
        wanted = normalize_name(name)
        chosen = check_scope(scope)
        own, _ = self.own_secrets(viewer, namespace)
        for meta in own:
            if meta.name == wanted and meta.scope == chosen:
                return meta
        scope_text = "" if chosen == DEFAULT_SCOPE else f" (scope {chosen})"
        raise SecretNotFoundError(
            f"no secret {wanted} in {namespace}{scope_text}",
            hint="it may have been removed; see the namespace's secrets page",
        )

    def namespace_page(
        self,
        request: Request,
        viewer: Viewer,
        namespace: str,
        *,
        status: int = 200,
        form: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
    ) -> Response:
        own, inherited = self.own_secrets(viewer, namespace)
        return self.render(
            request,
            "secrets_namespace.html",
            viewer,
            status=status,
            namespace=namespace,
            secrets=own,
            inherited=inherited,
            scopes=SCOPES,
            form=form or {"name": "", "scope": DEFAULT_SCOPE},
            errors=errors or {},
        )

    # The router -----------------------------------------------------------------------------

    def router(self) -> APIRouter:
        router = APIRouter(include_in_schema=False)
        c = self.coordinator
        page = self.page

        @router.get("/", response_class=HTMLResponse)
        @page
        def home(request: Request) -> Response:
            viewer = self.viewer(request)
            raise _Redirect("/secrets" if viewer else "/sign-in")

        # Signing in and out --------------------------------------------------------------

        def sign_in_form(
            request: Request,
            *,
            next_url: str,
            status: int = 200,
            error: str | None = None,
            notice: str | None = None,
        ) -> Response:
            token = csrf.new_token()
            response = self.render(
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
                secure=_cookie_secure(request),
            )
            return response

        @router.get("/sign-in", response_class=HTMLResponse)
        @page
        def sign_in(
            request: Request,
            next_url: Annotated[str | None, Query(alias="next")] = None,
            signed_out: Annotated[int, Query()] = 0,
        ) -> Response:
            if self.viewer(request) is not None:
                raise _Redirect(safe_next(next_url))
            notice = "You are signed out." if signed_out else None
            return sign_in_form(request, next_url=safe_next(next_url), notice=notice)

        @router.post("/sign-in", response_class=HTMLResponse)
        @page
        def sign_in_post(
            request: Request,
            token: Annotated[str, Form()] = "",
            csrf_token: Annotated[str, Form()] = "",
            next_url: Annotated[str, Form(alias="next")] = "",
        ) -> Response:
            csrf.check_form(request, request.cookies.get(csrf.SIGN_IN_COOKIE), csrf_token)
            target = safe_next(next_url)
            try:
                principal = c.authenticate(token.strip())
                c.user(principal)
            except RunnerError as exc:
                log.info("sign-in refused", reason=exc.message)
                return sign_in_form(
                    request, next_url=target, status=status_for(exc), error=_field_error(exc)
                )
            session_id, _ = self.sessions.create(token=token.strip(), user=principal.name)
            log.info("signed in", user=principal.name, token_id=principal.token_id)
            response = _harden(RedirectResponse(target, status_code=303))
            response.set_cookie(
                COOKIE_NAME,
                session_id,
                path="/",
                httponly=True,
                samesite="strict",
                secure=_cookie_secure(request),
            )
            response.delete_cookie(csrf.SIGN_IN_COOKIE, path="/sign-in")
            return response

        @router.post("/sign-out", response_class=HTMLResponse)
        @page
        def sign_out(request: Request, csrf_token: Annotated[str, Form()] = "") -> Response:
            viewer = self.require(request)
            self.check_csrf(request, viewer, csrf_token)
            self.sessions.end(viewer.session_id)
            log.info("signed out", user=viewer.name)
            response = _harden(RedirectResponse("/sign-in?signed_out=1", status_code=303))
            response.delete_cookie(COOKIE_NAME, path="/")
            return response

        # Secrets -------------------------------------------------------------------------

        @router.get("/secrets", response_class=HTMLResponse)
        @page
        def secrets_index(request: Request) -> Response:
            viewer = self.require(request)
            return self.render(request, "secrets_index.html", viewer)

        @router.get("/secrets/{namespace}", response_class=HTMLResponse)
        @page
        def secrets_namespace(request: Request, namespace: str) -> Response:
            viewer = self.require(request)
            ns = self.managed(viewer, namespace)
            if ns != namespace:
                raise _Redirect(namespace_url(ns))
            return self.namespace_page(request, viewer, ns)

        @router.post("/secrets/{namespace}", response_class=HTMLResponse)
        @page
        def secret_add(
            request: Request,
            namespace: str,
            csrf_token: Annotated[str, Form()] = "",
            name: Annotated[str, Form()] = "",
            value: Annotated[str, Form()] = "",
            scope: Annotated[str, Form()] = DEFAULT_SCOPE,
        ) -> Response:
            viewer = self.require(request)
            self.check_csrf(request, viewer, csrf_token)
            secret = Secret(value)
            del value
            ns = self.managed(viewer, namespace)
            errors: dict[str, str] = {}
            canonical = name
            try:
                canonical = normalize_name(name)
            except SecretValidationError as exc:
                errors["name"] = _field_error(exc)
            try:
                check_value(secret)
            except SecretValidationError as exc:
                errors["value"] = _field_error(exc)
            try:
                chosen = check_scope(scope)
            except SecretValidationError as exc:
                errors["scope"] = _field_error(exc)
                chosen = DEFAULT_SCOPE
            if "name" not in errors:
                own, _ = self.own_secrets(viewer, ns)
                if any(m.name == canonical and m.scope == chosen for m in own):
                    errors["name"] = (
                        f"secret {canonical} already exists in {ns}"
                        f"{'' if chosen == DEFAULT_SCOPE else f' (scope {chosen})'}"
                        " — use Update to give it a new value"
                    )
            if errors:
                return self.namespace_page(
                    request,
                    viewer,
                    ns,
                    status=422,
                    form={"name": name[:200], "scope": chosen},
                    errors=errors,
                )
            meta, created = c.set_secret(
                viewer.principal, name=canonical, namespace=ns, value=secret, scope=chosen
            )
            verb = "Created" if created else "Updated"
            self.notify(viewer, f"{verb} {meta.describe()}, version {meta.version}.")
            raise _Redirect(namespace_url(ns))

        @router.get("/secrets/{namespace}/{name}/update", response_class=HTMLResponse)
        @page
        def secret_update(
            request: Request,
            namespace: str,
            name: str,
            scope: Annotated[str, Query()] = DEFAULT_SCOPE,
        ) -> Response:
            viewer = self.require(request)
            ns = self.managed(viewer, namespace)
            meta = self.find_secret(viewer, ns, name, scope)
            return self.render(request, "secret_update.html", viewer, secret=meta, errors={})

        @router.post("/secrets/{namespace}/{name}/update", response_class=HTMLResponse)
        @page
        def secret_update_post(
            request: Request,
            namespace: str,
            name: str,
            scope: Annotated[str, Query()] = DEFAULT_SCOPE,
            csrf_token: Annotated[str, Form()] = "",
            value: Annotated[str, Form()] = "",
        ) -> Response:
            viewer = self.require(request)
            self.check_csrf(request, viewer, csrf_token)
            secret = Secret(value)
            del value
            ns = self.managed(viewer, namespace)
            meta = self.find_secret(viewer, ns, name, scope)
            try:
                check_value(secret)
            except SecretValidationError as exc:
                return self.render(
                    request,
                    "secret_update.html",
                    viewer,
                    status=422,
                    secret=meta,
                    errors={"value": _field_error(exc)},
                )
            updated, _ = c.set_secret(
                viewer.principal, name=meta.name, namespace=ns, value=secret, scope=meta.scope
            )
            self.notify(
                viewer,
                f"Updated {updated.describe()} to version {updated.version}. Cached "
                "executions that used the old value are invalidated.",
            )
            raise _Redirect(namespace_url(ns))

        @router.get("/secrets/{namespace}/{name}/remove", response_class=HTMLResponse)
        @page
        def secret_remove(
            request: Request,
            namespace: str,
            name: str,
            scope: Annotated[str, Query()] = DEFAULT_SCOPE,
        ) -> Response:
            viewer = self.require(request)
            ns = self.managed(viewer, namespace)
            meta = self.find_secret(viewer, ns, name, scope)
            return self.render(request, "secret_remove.html", viewer, secret=meta)

        @router.post("/secrets/{namespace}/{name}/remove", response_class=HTMLResponse)
        @page
        def secret_remove_post(
            request: Request,
            namespace: str,
            name: str,
            scope: Annotated[str, Query()] = DEFAULT_SCOPE,
            csrf_token: Annotated[str, Form()] = "",
        ) -> Response:
            viewer = self.require(request)
            self.check_csrf(request, viewer, csrf_token)
            ns = self.managed(viewer, namespace)
            removed = c.remove_secret(viewer.principal, name=name, namespace=ns, scope=scope)
            self.notify(viewer, f"Removed {removed.describe()}.")
            raise _Redirect(namespace_url(ns))

        @router.get("/secrets/{namespace}/{name}/log", response_class=HTMLResponse)
        @page
        def secret_log(
            request: Request,
            namespace: str,
            name: str,
            scope: Annotated[str, Query()] = DEFAULT_SCOPE,
        ) -> Response:
            viewer = self.require(request)
            ns = self.managed(viewer, namespace)
            canonical = normalize_name(name)
            chosen = check_scope(scope)
            events = [
                e
                for e in c.secret_log(viewer.principal, name=canonical, namespace=ns)
                if e.scope in (None, chosen)
            ]
            events.reverse()
            visible_jobs = {j.id for j in c.list_jobs(viewer.principal)}
            own, _ = self.own_secrets(viewer, ns)
            current = next((m for m in own if (m.name, m.scope) == (canonical, chosen)), None)
            return self.render(
                request,
                "secret_log.html",
                viewer,
                namespace=ns,
                name=canonical,
                scope=chosen,
                current=current,
                events=events,
                visible_jobs=visible_jobs,
            )

        # Jobs ----------------------------------------------------------------------------

        @router.get("/jobs", response_class=HTMLResponse)
        @page
        def jobs(request: Request) -> Response:
            viewer = self.require(request)
            records = list(reversed(c.list_jobs(viewer.principal)))
            return self.render(request, "jobs.html", viewer, jobs=records)

        @router.get("/jobs/{job_id}", response_class=HTMLResponse)
        @page
        def job(request: Request, job_id: str) -> Response:
            viewer = self.require(request)
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
            return self.render(
                request,
                "job.html",
                viewer,
                job=shown,
                terminal=shown["state"] in TERMINAL_STATES,
                lines=render_chunks(texts),
                cursor=cursor,
                changesets=changesets_of(shown.get("result")),
                poll_ms=int(self.poll_interval_s * 1000),
                error=redact(shown.get("error")),
            )

        @router.get("/jobs/{job_id}/log.json")
        def job_log_json(
            request: Request, job_id: str, after: Annotated[int, Query(ge=0)] = 0
        ) -> Response:
            viewer = self.viewer(request)
            if viewer is None:
                body = error_body(
                    "NotAuthenticatedError", "not signed in", "sign in again at /sign-in"
                )
                return _harden(JSONResponse(body, status_code=401))
            try:
                record, chunks = c.job_logs(viewer.principal, job_id, after=after, limit=LOG_PAGE)
            except RunnerError as exc:
                body = error_body(type(exc).__name__, exc.message, exc.hint)
                return _harden(JSONResponse(body, status_code=status_for(exc)))
            more = len(chunks) == LOG_PAGE
            return _harden(
                JSONResponse(
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
            )

        @router.post("/jobs/{job_id}/cancel", response_class=HTMLResponse)
        @page
        def job_cancel(
            request: Request, job_id: str, csrf_token: Annotated[str, Form()] = ""
        ) -> Response:
            viewer = self.require(request)
            self.check_csrf(request, viewer, csrf_token)
            record = c.cancel_job(viewer.principal, job_id)
            if record.state == "canceled":
                self.notify(viewer, f"Job {job_id} canceled.")
            elif record.state == "processing":
                self.notify(viewer, f"Cancel requested for job {job_id}; its executor stops it.")
            else:
                self.notify(viewer, f"Job {job_id} is already {record.state}.")
            raise _Redirect(job_url(job_id))

        return router
