"""step.env → a resolved environment with provenance.

Two phases, so nothing is decrypted before it must be:

``plan_env`` is a pure function of the spec, the namespace, the secret store's
*metadata* and the host variables the user allowed. It decides where every
variable comes from, refuses reserved names, and reports every missing name
at once. ``runner env explain``, the cache key and the coordinator's submit
check all stop here.

``StepEnv.materialize`` runs per step at execution time: literals are
rendered as templates with the step's context, secrets come from a
``reveal`` callback (the store decrypts and audits), host values are passed
in. Secret values are never rendered as templates and travel as ``Secret``.

Each planned and each materialized variable carries its secret's
``Delivery`` (env, file, brokered; ``DEFAULT_DELIVERY`` for everything else),
which the step loop applies. One-off local secrets (``--secret-file``,
``--secret``) plan as source ``local``: they win over a stored secret of the
same name (the plan keeps a notice saying so) and reach the step loop through
the same ``secret`` ref and ``reveal`` path as stored ones.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from runner.errors import (
    MissingSecret,
    MissingSecretsError,
    Problem,
    SecretValidationError,
    SpecError,
)
from runner.namespaces import parse_namespace, visible_namespaces
from runner.records import Frozen
from runner.secrets.delivery import DEFAULT_DELIVERY, Delivery
from runner.secrets.local import LocalSecrets
from runner.secrets.names import RESERVED_NAMES, RESERVED_PREFIX, VALUE_MIN_CHARS
from runner.secrets.value import Secret
from runner.spec import template as tmpl
from runner.spec.models import BatchSpec, EnvEntry, Step
from runner.spec.validate import STEP_ROOTS, uses_runtime_values

Source = Literal["literal", "template", "secret", "host", "local"]
MIN_VALUE_CHARS = VALUE_MIN_CHARS
# Registry credentials for pulling step images (Sourcegraph's executor secret name):
# stored like any secret, used by runner before the steps, never given to one.
REGISTRY_AUTH_NAME = "DOCKER_AUTH_CONFIG"


class SecretRef(Protocol):
    """What env resolution needs to know of a secret: never its value."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def overrides_global(self) -> bool: ...


class SecretResolver(Protocol):
    def resolve(
        self, name: str, from_namespace: str, *, scope: str = "batches"
    ) -> SecretRef | None: ...


# Frozen records (runner.records): a full cache hit loads them without generating code.
@dataclass(init=False, repr=False, eq=False)
class Provenance(Frozen):
    """Where a variable's value comes from; a secret's namespace, id and version, no value."""

    source: Source
    namespace: str | None = None
    secret_id: str | None = None
    version: int | None = None
    overrides_global: bool = False
    origin: str | None = None  # a local secret's file name, or "prompt"/"stdin"

    def __init__(
        self,
        source: Source,
        namespace: str | None = None,
        secret_id: str | None = None,
        version: int | None = None,
        overrides_global: bool = False,
        origin: str | None = None,
    ) -> None:
        self._fill(source, namespace, secret_id, version, overrides_global, origin)

    def describe(self) -> str:
        if self.source == "secret":
            text = f"secret from {self.namespace} v{self.version}"
            return text + (" (overrides global)" if self.overrides_global else "")
        if self.source == "local":
            return f"local secret ({self.origin})"
        return self.source

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"source": self.source}
        if self.source == "secret":
            data.update(
                namespace=self.namespace,
                secret_id=self.secret_id,
                version=self.version,
                overrides_global=self.overrides_global,
            )
        elif self.source == "local":
            data["origin"] = self.origin
        return data


@dataclass(init=False, repr=False, eq=False)
class PlannedVar(Frozen):
    """Where one variable of one step comes from. Holds no secret value."""

    step: int
    name: str
    provenance: Provenance
    text: str | None = None  # the literal or template as written
    # Set exactly when provenance.source is "secret" or "local": a ``SecretRef``, and where
    # the plan was made against a store, that store's metadata (the coordinator checks its
    # scope); a ``LocalRef`` for a local secret (the caller's ``reveal`` answers it).
    secret: Any = None
    # How the value reaches the step; only a stored secret's can differ from env.
    delivery: Delivery = DEFAULT_DELIVERY

    def __init__(
        self,
        step: int,
        name: str,
        provenance: Provenance,
        text: str | None = None,
        secret: Any = None,
        delivery: Delivery = DEFAULT_DELIVERY,
    ) -> None:
        self._fill(step, name, provenance, text, secret, delivery)

    @property
    def runtime_template(self) -> bool:
        return self.provenance.source == "template" and uses_runtime_values(
            self.text or "", STEP_ROOTS
        )


@dataclass(init=False, repr=False, eq=False)
class HostEnv(Frozen):
    """Host variables the user allowed by name or ``PREFIX_*`` pattern.

    ``values`` holds only the allowed ones (the CLI filters the process environment).
    """

    patterns: tuple[str, ...] = ()
    values: Mapping[str, str] = field(default_factory=dict)

    def __init__(
        self, patterns: tuple[str, ...] = (), values: Mapping[str, str] | None = None
    ) -> None:
        self._fill(patterns, {} if values is None else values)

    def allows(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    @classmethod
    def from_environ(cls, patterns: Sequence[str], environ: Mapping[str, str]) -> HostEnv:
        """Keep only the allowed variables of ``environ``; nothing else is retained."""
        pats = tuple(patterns)
        chosen = {k: v for k, v in environ.items() if any(fnmatch.fnmatchcase(k, p) for p in pats)}
        return cls(patterns=pats, values=chosen)


@dataclass(init=False, repr=False, eq=False)
class EnvPlan(Frozen):
    """Each step's planned variables (no value), and what the user should hear first."""

    namespace: str
    steps: Mapping[int, tuple[PlannedVar, ...]]
    # What the user should hear before anything runs (a local secret hiding a stored one).
    notices: tuple[str, ...] = ()

    def __init__(
        self,
        namespace: str,
        steps: Mapping[int, tuple[PlannedVar, ...]],
        notices: tuple[str, ...] = (),
    ) -> None:
        self._fill(namespace, steps, notices)

    def secrets(self) -> list[Any]:
        """Each distinct secret the plan uses, once (by id)."""
        seen: dict[str, Any] = {}
        for planned in self.steps.values():
            for var in planned:
                if var.secret is not None:
                    seen.setdefault(var.secret.id, var.secret)
        return list(seen.values())

    def host_names(self) -> list[str]:
        return sorted(
            {v.name for vs in self.steps.values() for v in vs if v.provenance.source == "host"}
        )


def reserved_reason(name: str, *, bare: bool) -> str | None:
    """Why ``name`` may not be set by a step's env, or None."""
    if name.upper().startswith(RESERVED_PREFIX):
        return "names starting with RUNNER_ are reserved for runner"
    if name.upper() == REGISTRY_AUTH_NAME:
        return (
            f"{REGISTRY_AUTH_NAME} holds the registry credentials runner pulls step images "
            "with; it is never given to a step"
        )
    if bare and name in RESERVED_NAMES:
        return (
            f"{name} changes how programs load or run, so it cannot come from a secret "
            "or the host; set it as a literal in the spec if you really need it"
        )
    return None


def _check_names(spec: BatchSpec) -> None:
    problems = []
    for step in spec.steps:
        for entry in step.env:
            reason = reserved_reason(entry.name, bare=entry.is_bare)
            if reason:
                problems.append(
                    Problem(
                        spec.path,
                        entry.pos.line,
                        entry.pos.column,
                        f"steps[{step.number}].env: {entry.name}: {reason}",
                    )
                )
    if problems:
        raise SpecError(problems, hint="rename the variable in the spec")


def plan_env(
    spec: BatchSpec,
    namespace: str,
    store: SecretResolver,
    host: HostEnv | None = None,
    local: LocalSecrets | None = None,
) -> EnvPlan:
    """Decide every variable's source. Decrypts nothing, writes no audit event.

    A bare name is looked up in ``local`` (one-off values of this run), then
    the store, then the allowed host variables. Raises ``SpecError`` for
    reserved names and ``MissingSecretsError`` listing every bare name that
    resolves nowhere.
    """
    ns = str(parse_namespace(namespace))
    host = host or HostEnv()
    local = local or LocalSecrets()
    _check_names(spec)
    steps: dict[int, tuple[PlannedVar, ...]] = {}
    missing: list[MissingSecret] = []
    notices: dict[str, str] = {}
    for step in spec.steps:
        planned: list[PlannedVar] = []
        for entry in step.env:
            var = _plan_local(step, entry, ns, store, local, notices)
            var = var or _plan_entry(step, entry, ns, store, host)
            if var is None:
                # Secret names are upper case; `github_token` finds GITHUB_TOKEN.
                command = f"runner secret set {entry.name.upper()} {_create_flag(ns)}"
                missing.append(MissingSecret(step.number, entry.name, entry.pos.line, command))
            else:
                planned.append(var)
        steps[step.number] = tuple(planned)
    if missing:
        raise missing_error(missing, ns, spec.path)
    return EnvPlan(namespace=ns, steps=steps, notices=tuple(notices.values()))


def _plan_local(
    step: Step,
    entry: EnvEntry,
    ns: str,
    store: SecretResolver,
    local: LocalSecrets,
    notices: dict[str, str],
) -> PlannedVar | None:
    """A bare name given a one-off value for this run, or None."""
    if entry.value is not None:
        return None
    ref = local.ref(entry.name)
    if ref is None:
        return None
    stored = store.resolve(entry.name, ns, scope="batches")
    if stored is not None:
        notices.setdefault(
            ref.name,
            f"local secret {ref.name} overrides the stored one from {stored.namespace}",
        )
    prov = Provenance("local", origin=ref.origin)
    return PlannedVar(step.number, entry.name, prov, secret=ref)


def _plan_entry(
    step: Step, entry: EnvEntry, ns: str, store: SecretResolver, host: HostEnv
) -> PlannedVar | None:
    if entry.value is not None:
        source: Source = "template" if tmpl.has_template(entry.value) else "literal"
        return PlannedVar(step.number, entry.name, Provenance(source), text=entry.value)
    meta = store.resolve(entry.name, ns, scope="batches")
    if meta is not None:
        prov = Provenance(
            "secret",
            namespace=meta.namespace,
            secret_id=meta.id,
            version=meta.version,
            overrides_global=meta.overrides_global,
        )
        delivery = getattr(meta, "delivery", DEFAULT_DELIVERY)
        return PlannedVar(step.number, entry.name, prov, secret=meta, delivery=delivery)
    if host.allows(entry.name) and entry.name in host.values:
        value = host.values[entry.name]
        if len(value) < MIN_VALUE_CHARS:
            raise SecretValidationError(
                f"the host variable {entry.name} (step {step.number}) is shorter than "
                f"{MIN_VALUE_CHARS} characters, so it cannot be redacted safely",
                hint=f"store it as a secret with `runner secret set {entry.name.upper()} "
                f"--namespace {ns}` or use a longer value",
            )
        return PlannedVar(step.number, entry.name, Provenance("host"))
    return None


def missing_error(
    missing: Sequence[MissingSecret], namespace: str, path: str
) -> MissingSecretsError:
    searched = [str(n) for n in visible_namespaces(namespace)]
    lines = [
        f"step {m.step} ({path}:{m.line}): {m.name} — create it with `{m.command}`" for m in missing
    ]
    names = sorted({m.name for m in missing})
    return MissingSecretsError(
        f"{len(names)} secret{'s' if len(names) != 1 else ''} not found in "
        f"{', '.join(searched)}: " + ", ".join(names),
        hint="; ".join(lines),
        missing=missing,
        searched=searched,
    )


def _create_flag(namespace: str) -> str:
    ns = parse_namespace(namespace)
    if ns.kind == "user":
        return f"--user {ns.name}"
    if ns.kind == "org":
        return f"--org {ns.name}"
    return "--global"


@dataclass(init=False, repr=False, eq=False)
class ResolvedVar(Frozen):
    """One variable of one step with its value, as the step loop hands it on."""

    name: str
    value: str | Secret
    provenance: Provenance
    delivery: Delivery = DEFAULT_DELIVERY

    def __init__(
        self,
        name: str,
        value: str | Secret,
        provenance: Provenance,
        delivery: Delivery = DEFAULT_DELIVERY,
    ) -> None:
        self._fill(name, value, provenance, delivery)

    @property
    def is_secret(self) -> bool:
        return isinstance(self.value, Secret)


def materialize(
    planned: Sequence[PlannedVar],
    *,
    context: Mapping[str, Any],
    secrets: Mapping[str, Secret],
    host: HostEnv,
    render: Callable[[str, Mapping[str, Any]], str] = tmpl.render_template,
) -> list[ResolvedVar]:
    """Values for one step. ``secrets`` maps secret id → value, revealed by the caller."""
    out: list[ResolvedVar] = []
    for var in planned:
        source = var.provenance.source
        if source == "literal":
            out.append(ResolvedVar(var.name, var.text or "", var.provenance))
        elif source == "template":
            out.append(ResolvedVar(var.name, render(var.text or "", context), var.provenance))
        elif var.secret is not None:
            value = secrets[var.secret.id]
            out.append(ResolvedVar(var.name, value, var.provenance, var.delivery))
        else:
            out.append(ResolvedVar(var.name, Secret(host.values[var.name]), var.provenance))
    return out


def secret_names(resolved: Collection[ResolvedVar]) -> list[str]:
    return [r.name for r in resolved if r.is_secret]
