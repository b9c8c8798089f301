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

Every refusal raises ``PermissionDeniedError`` and writes a ``denied`` audit
event. The local CLI holds the key and acts with full rights; it does not
consult this module.
"""

from __future__ import annotations

from datetime import UTC, datetime

from runner.errors import PermissionDeniedError
from runner.namespaces import Namespace, parse_namespace, visible_namespaces
from runner.secrets.models import AuditEvent, SecretMeta
from runner.secrets.store import SecretStore


class AccessPolicy:
    def __init__(self, store: SecretStore) -> None:
        self._store = store

    def _member(self, user: str, org: str) -> bool:
        return org in self._store.orgs_of(user)

    def can_manage(self, actor: str, namespace: str | Namespace) -> bool:
        ns = parse_namespace(namespace)
        if self._store.is_admin(actor):
            return True
        if ns.kind == "user":
            return ns.name == actor and self._store.get_user(actor) is not None
        if ns.kind == "org":
            return self._member(actor, ns.name)
        return False

    def can_view(self, actor: str, namespace: str | Namespace) -> bool:
        ns = parse_namespace(namespace)
        return ns.is_global or self.can_manage(actor, ns)

    def can_run_in(self, actor: str, namespace: str | Namespace) -> bool:
        ns = parse_namespace(namespace)
        if ns.kind == "user":
            return ns.name == actor and self._store.get_user(actor) is not None
        if ns.kind == "org":
            return self._member(actor, ns.name)
        return False

    @staticmethod
    def can_use(job_namespace: str | Namespace, secret: SecretMeta) -> bool:
        owners = {str(ns) for ns in visible_namespaces(job_namespace)}
        return secret.namespace in owners

    def _deny(
        self,
        *,
        actor: str,
        message: str,
        hint: str,
        namespace: str | None,
        name: str | None = None,
        scope: str | None = None,
        secret: SecretMeta | None = None,
        job: str | None = None,
        step: int | None = None,
    ) -> PermissionDeniedError:
        self._store.record(
            AuditEvent(
                event="denied",
                at=datetime.now(UTC),
                actor=actor,
                secret_id=secret.id if secret else None,
                name=secret.name if secret else name,
                namespace=secret.namespace if secret else namespace,
                scope=secret.scope if secret else scope,
                version=secret.version if secret else None,
                job=job,
                step=step,
                detail=message,
            )
        )
        return PermissionDeniedError(message, hint=hint)

    def check_manage(
        self,
        actor: str,
        namespace: str | Namespace,
        *,
        name: str | None = None,
        scope: str | None = None,
    ) -> None:
        ns = parse_namespace(namespace)
        if not self.can_manage(actor, ns):
            who = "an admin" if ns.is_global else f"{ns.name} or an admin"
            if ns.kind == "org":
                who = f"a member of {ns.name} or an admin"
            raise self._deny(
                actor=actor,
                message=f"{actor} may not change secrets in {ns}",
                hint=f"ask {who} to do it",
                namespace=str(ns),
                name=name,
                scope=scope,
            )

    def check_view(self, actor: str, namespace: str | Namespace) -> None:
        ns = parse_namespace(namespace)
        if not self.can_view(actor, ns):
            raise self._deny(
                actor=actor,
                message=f"{actor} may not list secrets in {ns}",
                hint="list your own namespace, an org you belong to, or --global",
                namespace=str(ns),
            )

    def check_run_in(self, actor: str, namespace: str | Namespace) -> None:
        ns = parse_namespace(namespace)
        if not self.can_run_in(actor, ns):
            hint = (
                "jobs run in a user or org namespace, never in global"
                if ns.is_global
                else f"run it in user:{actor} or in an org you belong to"
            )
            raise self._deny(
                actor=actor,
                message=f"{actor} may not run jobs in {ns}",
                hint=hint,
                namespace=str(ns),
            )

    def check_use(
        self,
        job_namespace: str | Namespace,
        secret: SecretMeta,
        *,
        actor: str,
        job: str | None = None,
        step: int | None = None,
    ) -> None:
        ns = parse_namespace(job_namespace)
        if not self.can_use(ns, secret):
            raise self._deny(
                actor=actor,
                message=f"a job in {ns} may not use secret {secret.describe()}",
                hint=f"set the secret in {ns} or globally",
                namespace=str(ns),
                secret=secret,
                job=job,
                step=step,
            )
