"""Brokered secrets on runner's side: placeholders per job, the proxy's bindings, trust.

A secret stored with ``--broker-host`` never enters a step. For each job,
``JobBroker.of`` makes every brokered secret a placeholder
(``placeholders.py``); the step's variable holds the placeholder, the
redactor knows both (the placeholder shows as ``[REDACTED:NAME]`` too), and
the job's proxy gets the bindings (value, placeholder, hosts, and the forms
of the value to scrub from responses) over a pipe, in ``BrokerSession``.

The proxy intercepts TLS only for bound hosts, with a certificate authority
made for the job (its key on a tmpfs, gone with the proxy). Steps trust it
through ``ca_bundle`` mounted at ``CA_BUNDLE_PATH`` and the variables of
``trust_env``.

Each request the proxy authenticates comes back as a ``used`` event; the
job counts them in ``JobBroker.uses`` (per secret and host, in memory) and
``run_job`` hands the totals to its front door once, at the job's end, for
the audit log (``SecretStore.record_brokered``: locally, or on the
coordinator from the executor's report).
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.egress.broker_rules import Binding, BrokerRules
from runner.egress.placeholders import make_placeholder
from runner.execute.runtime import ContainerRuntime
from runner.redact.encodings import forms_of
from runner.secrets.delivery import Broker, BrokeredUse
from runner.secrets.value import Secret

# Where a step finds the job CA followed by the usual roots, and the variables that say so.
CA_BUNDLE_PATH = "/etc/runner/ca-bundle.pem"
TRUST_VARIABLES = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "CURL_CA_BUNDLE",
)
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Where images keep their roots: Debian and Alpine, Red Hat, then a link-free fallback.
IMAGE_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)
ROOTS_LIMIT = 4 << 20

OnBrokerEvent = Callable[[str, str, str], None]
"""(kind: ``mismatch`` or ``used``, secret name, host) — never a value."""


@dataclass(frozen=True)
class BrokeredSecret:
    """One brokered secret of a job: the value stays here and in the proxy."""

    id: str
    name: str
    value: Secret
    placeholder: Secret
    broker: Broker
    version: int = 0  # the stored version the job revealed (what the audit names)


def _delivery_broker(var: Any) -> Broker | None:
    """A planned variable's broker binding (``PlannedVar.delivery``, else its secret's)."""
    for holder in (var, getattr(var, "secret", None)):
        delivery = getattr(holder, "delivery", None)
        broker = getattr(delivery, "broker", None)
        if isinstance(broker, Broker):
            return broker
    return None


class BrokerUses:
    """Requests the job's proxies authenticated, per secret name and host; thread-safe.

    Every workspace's proxy reports into the job's one counter; it holds names
    and hosts only, and costs a dictionary update per request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}

    def add(self, name: str, host: str) -> None:
        with self._lock:
            hosts = self._counts.setdefault(name, {})
            hosts[host] = hosts.get(host, 0) + 1

    def counts(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: dict(hosts) for name, hosts in self._counts.items()}


@dataclass(frozen=True)
class JobBroker:
    """A job's brokered secrets with their placeholders, made once per job."""

    secrets: tuple[BrokeredSecret, ...] = ()
    uses: BrokerUses = field(default_factory=BrokerUses, compare=False, repr=False)

    @classmethod
    def of(cls, steps: Mapping[int, Iterable[Any]], revealed: Mapping[str, Secret]) -> JobBroker:
        """From an env plan's steps (``EnvPlan.steps``) and the job's revealed values."""
        made: dict[str, BrokeredSecret] = {}
        taken: list[str] = []
        for number in sorted(steps):
            for var in steps[number]:
                secret = getattr(var, "secret", None)
                broker = _delivery_broker(var)
                if secret is None or broker is None or secret.id in made:
                    continue
                if secret.id not in revealed:
                    continue
                value = revealed[secret.id]
                placeholder = make_placeholder(value.reveal(), taken=taken)
                taken.append(placeholder)
                made[secret.id] = BrokeredSecret(
                    secret.id,
                    secret.name,
                    value,
                    Secret(placeholder),
                    broker,
                    version=int(getattr(secret, "version", 0) or 0),
                )
        return cls(tuple(made.values()))

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def placeholder_for(self, value: Secret) -> Secret | None:
        """The placeholder a step gets instead of ``value``, if ``value`` is brokered."""
        for secret in self.secrets:
            if secret.value == value:
                return secret.placeholder
        return None

    def used(self) -> tuple[BrokeredUse, ...]:
        """What the job's proxies authenticated so far, per secret: for the audit log."""
        counts = self.uses.counts()
        return tuple(
            BrokeredUse(secret_id=s.id, name=s.name, version=s.version, hosts=counts[s.name])
            for s in self.secrets
            if counts.get(s.name)
        )

    def redaction_pairs(self) -> list[tuple[str, Secret]]:
        """Each placeholder under its secret's name: a placeholder is redacted like a value."""
        return [(s.name, s.placeholder) for s in self.secrets]

    def rules(self) -> BrokerRules:
        """What the proxy holds. It carries the values: it goes over the proxy's pipe only."""
        return BrokerRules(
            tuple(
                Binding(
                    name=s.name,
                    placeholder=s.placeholder.reveal(),
                    value=s.value.reveal(),
                    hosts=s.broker.hosts,
                    as_=s.broker.as_,
                    forms=response_forms(s.value.reveal(), s.placeholder.reveal()),
                )
                for s in self.secrets
            )
        )


@dataclass(frozen=True)
class BrokerSession:
    """What the job's proxy needs for brokering: the bindings and where its events go."""

    rules: BrokerRules = field(repr=False)
    on_event: OnBrokerEvent


# How the common encodings spell a value, so a response echoing one spells the placeholder
# the same way; any other registered form becomes the bare placeholder.
_SAME_SHAPE: tuple[Callable[[str], str], ...] = (
    lambda s: s,
    lambda s: urllib.parse.quote(s, safe=""),
    lambda s: json.dumps(s)[1:-1],
    lambda s: base64.b64encode(s.encode()).decode(),
    lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
    lambda s: s.encode().hex(),
)


def response_forms(value: str, placeholder: str) -> tuple[tuple[bytes, bytes], ...]:
    """Every registered form of ``value`` with what replaces it in a response."""
    pairs = {f(value).encode(): f(placeholder).encode() for f in _SAME_SHAPE}
    for form in forms_of(value):
        pairs.setdefault(form, placeholder.encode())
    return tuple(pairs.items())


def image_roots(runtime: ContainerRuntime, image: str, labels: Mapping[str, str]) -> bytes | None:
    """The image's own CA bundle, so a step trusts what its image trusts (None: it has none)."""
    return runtime.image_file(image, IMAGE_CA_BUNDLES, labels=labels, limit=ROOTS_LIMIT)


def ca_bundle(job_ca: str, roots: bytes | None) -> bytes:
    """The file steps trust: the job CA, then the image's roots (else this host's)."""
    if roots is None:
        try:
            roots = HOST_CA_BUNDLE.read_bytes()
        except OSError:
            roots = b""
    head = job_ca.encode().rstrip(b"\n") + b"\n"
    return head + roots


def trust_env(path: str = CA_BUNDLE_PATH) -> dict[str, str]:
    """The variables that point TLS clients (OpenSSL, Python, Node, git, curl) at the bundle."""
    return dict.fromkeys(TRUST_VARIABLES, path)
