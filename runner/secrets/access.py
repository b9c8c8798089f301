"""Who may see, change and use which secrets, and run jobs where.

The rules, in one place so the coordinator and the CLI agree:

* **manage** (set, remove): an admin anywhere; a user their own ``user:``
  namespace; a member of an org its ``org:`` namespace. Only admins manage
  ``global``.
* **view** metadata (names, versions, never values): like manage, and anyone
  may view the globals, since their jobs use them.
* **run** a job in a namespace: a user in their own, a member in an org's.
  Never in ``global``, and admins get no exception: running in ``user:bob``
  would hand bob's personal secrets to someone else.
* **use** a secret in a job: only a secret owned by the job's namespace or
  ``global`` (``visible_namespaces``): a user's secrets never reach an org's job.

Users, orgs and membership come from the ``UserDirectory``. Every refusal
raises ``PermissionDeniedError`` and writes a ``denied`` audit event. The
local CLI holds the key and acts with full rights; it does not consult this
module.

Namespaces arrive parsed (``Namespace``) from the front doors; the checks
made on stored records (a job's namespace, a secret's) also take the
canonical text stored with them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from runner.clock import SYSTEM_CLOCK, Clock
from runner.errors import PermissionDeniedError
from runner.namespaces import Namespace, parse_namespace, visible_namespaces
from runner.secrets.models import AuditEvent, SecretMeta
from runner.secrets.store import secret_event
from runner.users.directory import UserDirectory


class AuditLog(Protocol):
    """Where refusals go on record: the secret store's audit log."""

    def record(self, event: AuditEvent) -> None: ...


class AccessPolicy:
    def __init__(
        self,
        users: UserDirectory,
        audit: AuditLog,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._users = users
        self._audit = audit
        self._clock = clock

    def can_run_in(self, actor: str, namespace: Namespace | str) -> bool:
        ns = parse_namespace(namespace)
        if ns.kind == "user":
            return ns.name == actor and self._users.get_user(actor) is not None
        if ns.kind == "org":
            return ns.name in self._users.orgs_of(actor)
        return False

    def can_manage(self, actor: str, namespace: Namespace | str) -> bool:
        # Where one may run jobs, one manages their secrets; admins manage everywhere.
        return self._users.is_admin(actor) or self.can_run_in(actor, namespace)

    def can_view(self, actor: str, namespace: Namespace | str) -> bool:
        ns = parse_namespace(namespace)
        return ns.is_global or self.can_manage(actor, ns)

    @staticmethod
    def can_use(job_namespace: Namespace | str, secret: SecretMeta) -> bool:
        owners = {str(ns) for ns in visible_namespaces(job_namespace)}
        return secret.namespace in owners

    def _deny(self, event: AuditEvent, *, hint: str) -> PermissionDeniedError:
        """Put the refusal on record; its ``detail`` is the error's message."""
        self._audit.record(event)
        return PermissionDeniedError(event.detail or "permission denied", hint=hint)

    def _refusal(self, actor: str, ns: Namespace, message: str) -> AuditEvent:
        at = self._clock.now()
        return AuditEvent(event="denied", at=at, actor=actor, namespace=str(ns), detail=message)

    def check_manage(
        self, actor: str, ns: Namespace, *, name: str | None = None, scope: str | None = None
    ) -> None:
        if self.can_manage(actor, ns):
            return
        who = {"global": "an admin", "org": f"a member of {ns.name} or an admin"}.get(
            ns.kind, f"{ns.name} or an admin"
        )
        event = self._refusal(actor, ns, f"{actor} may not change secrets in {ns}")
        raise self._deny(replace(event, name=name, scope=scope), hint=f"ask {who} to do it")

    def check_view(self, actor: str, ns: Namespace) -> None:
        if self.can_view(actor, ns):
            return
        event = self._refusal(actor, ns, f"{actor} may not list secrets in {ns}")
        raise self._deny(event, hint="list your own namespace, an org you belong to, or --global")

    def check_run_in(self, actor: str, namespace: Namespace | str) -> None:
        ns = parse_namespace(namespace)
        if self.can_run_in(actor, ns):
            return
        hint = (
            "jobs run in a user or org namespace, never in global"
            if ns.is_global
            else f"run it in user:{actor} or in an org you belong to"
        )
        raise self._deny(self._refusal(actor, ns, f"{actor} may not run jobs in {ns}"), hint=hint)

    def check_use(
        self,
        job_namespace: Namespace | str,
        secret: SecretMeta,
        *,
        actor: str,
        job: str | None = None,
        step: int | None = None,
    ) -> None:
        ns = parse_namespace(job_namespace)
        if self.can_use(ns, secret):
            return
        message = f"a job in {ns} may not use secret {secret.describe()}"
        event = secret_event(
            "denied", secret, actor=actor, at=self._clock.now(), job=job, step=step
        )
        raise self._deny(replace(event, detail=message), hint=f"set the secret in {ns} or globally")
