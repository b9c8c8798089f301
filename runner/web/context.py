"""What every page shares: the signed-in viewer, the settings, rendering, error pages.

``WebContext`` lives in ``app.state.web``; the pages reach it, and the viewer,
through the dependencies in ``runner.web.deps``. Every text from an error
passes through the process's redactor before it is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from fastapi import Request
from fastapi.responses import Response
from starlette.templating import Jinja2Templates

from runner.errors import CsrfError, NotAuthenticatedError, RunnerError
from runner.log import get_logger
from runner.namespaces import GLOBAL, Namespace
from runner.queue.service import Coordinator
from runner.queue.tokens import Principal
from runner.web.render import make_templates, redact
from runner.web.session import COOKIE_NAME, Session, Sessions

log = get_logger("runner.web")

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


def harden(response: Response) -> Response:
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


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
                    namespace=str(GLOBAL),
                    title="Site admin › Executor secrets",
                    description="Global secrets, used by every namespace's jobs.",
                )
            )
        links.extend(self._org_link(name, ", used by its jobs") for name in self.orgs)
        links.extend(
            self._org_link(name, " (you manage them as site admin)") for name in self.other_orgs
        )
        links.append(
            NamespaceLink(
                namespace=str(Namespace("user", self.name)),
                title="Your settings › Executor secrets",
                description="Your own secrets, used by the jobs you run as yourself.",
            )
        )
        return links

    @staticmethod
    def _org_link(name: str, suffix: str) -> NamespaceLink:
        return NamespaceLink(
            namespace=str(Namespace("org", name)),
            title=f"{name} › Executor secrets",
            description=f"Secrets of the organization {name}{suffix}.",
        )


@dataclass(kw_only=True)
class WebContext:
    """The pages' settings and services; ``mount_web`` keeps one per app."""

    coordinator: Coordinator
    sessions: Sessions
    poll_interval_s: float = 1.0
    templates: Jinja2Templates = field(default_factory=make_templates)

    def viewer(self, request: Request) -> Viewer | None:
        """The signed-in user, or None; a session whose token was revoked ends here."""
        session_id = request.cookies.get(COOKIE_NAME)
        session = self.sessions.get(session_id)
        if session is None or session_id is None:
            return None
        c = self.coordinator
        try:
            principal = c.authenticate_id(session.token_id)
        except NotAuthenticatedError:
            self.sessions.end(session_id)
            return None
        who = c.whoami(principal)
        admin = bool(who["admin"])
        orgs = list(who["orgs"])
        others = [o.name for o in c.users.orgs() if o.name not in orgs] if admin else []
        return Viewer(
            session_id=session_id,
            session=session,
            principal=principal,
            name=principal.name,
            admin=admin,
            orgs=orgs,
            other_orgs=others,
        )

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
        return self.templates.TemplateResponse(
            request,
            template,
            {"viewer": viewer, "notices": notices, "path": request.url.path, **context},
            status_code=status,
        )

    def notify(self, viewer: Viewer, text: str) -> None:
        """A one-line notice for the next page this viewer sees."""
        self.sessions.notify(viewer.session, redact(text))

    def error_page(self, request: Request, exc: RunnerError) -> Response:
        """The error as an HTML page, with the status the API would answer."""
        status = exc.http_status
        if isinstance(exc, CsrfError):
            log.warning("form refused", path=request.url.path, reason=exc.message)
        elif status >= 500:
            log.error("page failed", path=request.url.path, error=str(exc))
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
