"""Executor secrets: the namespaces one manages, one namespace's secrets, update,
remove, and a secret's access log.

Every page acts through ``Coordinator`` with the viewer's ``Principal``, so the
pages obey exactly the API's and the CLI's permission rules; the ``Managed``
dependency checks the right up front (to show nothing of a namespace one may
not manage) and the service checks it again when acting. Validation errors
are shown next to their field in the CLI's words (``message — hint``).

A secret's value arrives in one form post, goes into a ``Secret`` at once and
on to the service; no page, notice, error or log line ever holds it, and value
fields are password fields that are never filled in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from runner.errors import SecretNotFoundError, SecretValidationError
from runner.namespaces import Namespace
from runner.secrets.delivery import SECRET_TYPES, Delivery
from runner.secrets.models import SecretMeta
from runner.secrets.names import DEFAULT_SCOPE, SCOPES, check_name, check_scope, check_value
from runner.secrets.value import Secret
from runner.web.context import Viewer, WebContext
from runner.web.deps import FormPoster, Managed, PageRoute, SignedIn, Web, redirect
from runner.web.render import namespace_url, redact

router = APIRouter(route_class=PageRoute, include_in_schema=False)

T = TypeVar("T")


def _scope_text(scope: str) -> str:
    return "" if scope == DEFAULT_SCOPE else f" (scope {scope})"


def _checked(check: Callable[[], T], errors: dict[str, str], field: str) -> T | None:
    """``check()``, or None with its error in ``errors[field]`` as the CLI words it."""
    try:
        return check()
    except SecretValidationError as exc:
        errors[field] = redact(str(exc))
        return None


def _secrets(
    web: WebContext, viewer: Viewer, ns: Namespace
) -> tuple[list[SecretMeta], list[SecretMeta]]:
    """This namespace's secrets, and the global ones its jobs inherit (not overridden)."""
    metas = web.coordinator.list_secrets(viewer.principal, namespace=ns, scope=None)
    own = [m for m in metas if m.namespace == str(ns)]
    inherited = [m for m in metas if m.namespace != str(ns)]
    return own, inherited


def secret_ref(name: str, scope: Annotated[str, Query()] = DEFAULT_SCOPE) -> tuple[str, str]:
    """The path's secret name and the ``scope`` query, checked: (name, scope)."""
    return check_name(name), check_scope(scope)


Ref = Annotated[tuple[str, str], Depends(secret_ref)]


def delivery_form(
    type_: Annotated[str, Form(alias="type")] = "env",
    broker_hosts: Annotated[str, Form()] = "",
    broker_as: Annotated[str, Form()] = "",
) -> dict[str, str]:
    """The form's delivery fields as typed (shown again with an error)."""
    return {"type": type_[:20], "broker_hosts": broker_hosts[:1000], "broker_as": broker_as[:200]}


DeliveryForm = Annotated[dict[str, str], Depends(delivery_form)]


def _delivery(typed: dict[str, str], errors: dict[str, str]) -> Delivery | None:
    """The delivery the fields say, or None with the CLI's words in ``errors["delivery"]``."""
    hosts = typed["broker_hosts"].replace(",", " ").split()
    return _checked(
        lambda: Delivery.of(typed["type"], hosts, typed["broker_as"].strip() or None),
        errors,
        "delivery",
    )


def _typed(meta: SecretMeta) -> dict[str, str]:
    """A secret's delivery as the form's fields, to start the update form from."""
    broker = meta.delivery.broker
    return {
        "type": meta.delivery.type,
        "broker_hosts": " ".join(broker.hosts) if broker else "",
        "broker_as": broker.as_ if broker else "",
    }


def found_secret(web: Web, viewer: SignedIn, ns: Managed, ref: Ref) -> SecretMeta:
    """The secret the path names, in a namespace the viewer manages."""
    own, _ = _secrets(web, viewer, ns)
    for meta in own:
        if (meta.name, meta.scope) == ref:
            return meta
    name, scope = ref
    raise SecretNotFoundError(
        f"no secret {name} in {ns}{_scope_text(scope)}",
        hint="it may have been removed; see the namespace's secrets page",
    )


Found = Annotated[SecretMeta, Depends(found_secret)]


def _namespace_page(
    web: WebContext,
    request: Request,
    viewer: Viewer,
    ns: Namespace,
    *,
    status: int = 200,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    own, inherited = _secrets(web, viewer, ns)
    return web.render(
        request,
        "secrets_namespace.html",
        viewer,
        status=status,
        namespace=str(ns),
        secrets=own,
        inherited=inherited,
        scopes=SCOPES,
        secret_types=SECRET_TYPES,
        form=form or {"name": "", "scope": DEFAULT_SCOPE, **delivery_form()},
        errors=errors or {},
    )


@router.get("/secrets", response_class=HTMLResponse)
def secrets_index(request: Request, web: Web, viewer: SignedIn) -> Response:
    return web.render(request, "secrets_index.html", viewer)


@router.get("/secrets/{namespace}", response_class=HTMLResponse)
def secrets_namespace(
    request: Request, web: Web, viewer: SignedIn, ns: Managed, namespace: str
) -> Response:
    if str(ns) != namespace:
        return redirect(namespace_url(ns))
    return _namespace_page(web, request, viewer, ns)


@router.post("/secrets/{namespace}", response_class=HTMLResponse)
def secret_add(
    request: Request,
    web: Web,
    viewer: FormPoster,
    ns: Managed,
    typed: DeliveryForm,
    name: Annotated[str, Form()] = "",
    value: Annotated[str, Form()] = "",
    scope: Annotated[str, Form()] = DEFAULT_SCOPE,
) -> Response:
    secret = Secret(value)
    del value
    errors: dict[str, str] = {}
    canonical = _checked(lambda: check_name(name), errors, "name")
    _checked(lambda: check_value(secret), errors, "value")
    chosen = _checked(lambda: check_scope(scope), errors, "scope") or DEFAULT_SCOPE
    delivery = _delivery(typed, errors)
    if canonical is not None:
        own, _ = _secrets(web, viewer, ns)
        if any((m.name, m.scope) == (canonical, chosen) for m in own):
            errors["name"] = (
                f"secret {canonical} already exists in {ns}{_scope_text(chosen)}"
                " — use Update to give it a new value"
            )
    if errors or canonical is None or delivery is None:
        form = {"name": name[:200], "scope": chosen, **typed}
        return _namespace_page(web, request, viewer, ns, status=422, form=form, errors=errors)
    meta, created = web.coordinator.set_secret(
        viewer.principal,
        name=canonical,
        namespace=ns,
        value=secret,
        scope=chosen,
        delivery=delivery,
    )
    verb = "Created" if created else "Updated"
    web.notify(viewer, f"{verb} {meta.describe()}, version {meta.version}.")
    return redirect(namespace_url(ns))


@router.get("/secrets/{namespace}/{name}/update", response_class=HTMLResponse)
def secret_update(request: Request, web: Web, viewer: SignedIn, meta: Found) -> Response:
    return web.render(
        request,
        "secret_update.html",
        viewer,
        secret=meta,
        secret_types=SECRET_TYPES,
        form=_typed(meta),
        errors={},
    )


@router.post("/secrets/{namespace}/{name}/update", response_class=HTMLResponse)
def secret_update_post(
    request: Request,
    web: Web,
    viewer: FormPoster,
    ns: Managed,
    meta: Found,
    typed: DeliveryForm,
    value: Annotated[str, Form()] = "",
) -> Response:
    secret = Secret(value)
    del value
    errors: dict[str, str] = {}
    _checked(lambda: check_value(secret), errors, "value")
    delivery = _delivery(typed, errors)
    if errors or delivery is None:
        return web.render(
            request,
            "secret_update.html",
            viewer,
            status=422,
            secret=meta,
            secret_types=SECRET_TYPES,
            form=typed,
            errors=errors,
        )
    updated, _ = web.coordinator.set_secret(
        viewer.principal,
        name=meta.name,
        namespace=ns,
        value=secret,
        scope=meta.scope,
        delivery=delivery,
    )
    web.notify(
        viewer,
        f"Updated {updated.describe()} to version {updated.version}. Cached "
        "executions that used the old value are invalidated.",
    )
    return redirect(namespace_url(ns))


@router.get("/secrets/{namespace}/{name}/remove", response_class=HTMLResponse)
def secret_remove(request: Request, web: Web, viewer: SignedIn, meta: Found) -> Response:
    return web.render(request, "secret_remove.html", viewer, secret=meta)


@router.post("/secrets/{namespace}/{name}/remove", response_class=HTMLResponse)
def secret_remove_post(web: Web, viewer: FormPoster, ns: Managed, ref: Ref) -> Response:
    name, scope = ref
    removed = web.coordinator.remove_secret(viewer.principal, name=name, namespace=ns, scope=scope)
    web.notify(viewer, f"Removed {removed.describe()}.")
    return redirect(namespace_url(ns))


@router.get("/secrets/{namespace}/{name}/log", response_class=HTMLResponse)
def secret_log(request: Request, web: Web, viewer: SignedIn, ns: Managed, ref: Ref) -> Response:
    c = web.coordinator
    canonical, chosen = ref
    events = [
        e
        for e in c.secret_log(viewer.principal, name=canonical, namespace=ns)
        if e.scope in (None, chosen)
    ]
    events.reverse()
    visible_jobs = {j.id for j in c.list_jobs(viewer.principal)}
    own, _ = _secrets(web, viewer, ns)
    current = next((m for m in own if (m.name, m.scope) == ref), None)
    return web.render(
        request,
        "secret_log.html",
        viewer,
        namespace=str(ns),
        name=canonical,
        scope=chosen,
        current=current,
        events=events,
        visible_jobs=visible_jobs,
    )
