"""Registry credentials: the secret ``DOCKER_AUTH_CONFIG``, read as Docker reads config.json.

A user or an org stores Docker's ``config.json`` (as Sourcegraph's executors
take it) as the secret ``DOCKER_AUTH_CONFIG``; a job resolves it like any
secret (its own namespace's, else the global one), and runner pulls step
images with it before any step starts. It never reaches a step.

Only the ``auths`` map is read: an entry's ``auth`` (base64 of
``user:password``), or its ``username`` and ``password``, or an
``identitytoken``. Credential helpers (``credsStore``, ``credHelpers``) would
run programs of the host's, so they are not followed.

Nothing here reveals a value into a message: a malformed config is refused
by where it is wrong, never by what it holds.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from runner.env import REGISTRY_AUTH_NAME
from runner.errors import SecretValidationError
from runner.records import Frozen
from runner.secrets.names import VALUE_MIN_CHARS
from runner.secrets.value import Secret

# Scope of the secrets batch jobs resolve (as runner.env does for step.env).
_SCOPE = "batches"

DOCKER_HUB: Final = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


class AuthSource(Protocol):
    """The part of the secret store registry credentials come from."""

    def resolve(self, name: str, from_namespace: str, *, scope: str = _SCOPE) -> Any: ...

    def reveal(
        self,
        secret: Any,
        *,
        version: int,
        actor: str,
        run_id: str | None = None,
        step: int | None = None,
    ) -> Secret: ...


def find_registry_auth(store: AuthSource, namespace: str) -> Any:
    """The ``DOCKER_AUTH_CONFIG`` a job in ``namespace`` resolves (metadata only), or None."""
    return store.resolve(REGISTRY_AUTH_NAME, namespace, scope=_SCOPE)


def reveal_registry_auth(
    store: AuthSource, meta: Any, *, actor: str, run_id: str | None
) -> Secret | None:
    """Its value, through the store's audited path (one ``accessed`` event, no step)."""
    if meta is None:
        return None
    return store.reveal(meta, version=meta.version, actor=actor, run_id=run_id)


@dataclass(init=False, repr=False, eq=False)  # a Frozen record: see runner.records
class Credentials(Frozen):
    """One registry's credentials, as the engine's pull takes them."""

    registry: str
    username: str = ""
    password: Secret = field(default_factory=lambda: Secret(""), repr=False)
    identity_token: Secret = field(default_factory=lambda: Secret(""), repr=False)

    def __init__(
        self,
        *,
        registry: str,
        username: str = "",
        password: Secret | None = None,
        identity_token: Secret | None = None,
    ) -> None:
        self._fill(
            registry,
            username,
            Secret("") if password is None else password,
            Secret("") if identity_token is None else identity_token,
        )

    def engine_auth(self) -> dict[str, str]:
        """The ``auth_config`` of the SDK's pull (sent as a request header, never stored)."""
        auth = {"serveraddress": self.registry}
        if self.identity_token:
            auth["identitytoken"] = self.identity_token.reveal()
        else:
            auth.update(username=self.username, password=self.password.reveal())
        return auth


def registry_of(image: str) -> str:
    """The registry an image reference is pulled from, as Docker decides it.

    The first path component is a registry host when it has a dot or a port
    or is ``localhost``; any other name is on Docker Hub.
    """
    name = image.split("@", 1)[0]
    first, slash, _ = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return _normal_registry(first)
    return DOCKER_HUB


def _normal_registry(key: str) -> str:
    # config.json keys come as "host:port", "https://host/v1/" or "http://host:port/v2/".
    host = key.strip()
    for scheme in ("https://", "http://"):
        if host.lower().startswith(scheme):
            host = host[len(scheme) :]
    host = host.split("/", 1)[0].lower()
    return DOCKER_HUB if host in _HUB_ALIASES else host


def parse_auth_config(value: Secret) -> dict[str, Credentials]:
    """Credentials per registry from a ``DOCKER_AUTH_CONFIG`` value.

    Raises ``SecretValidationError`` saying what is wrong where, never what.
    """
    try:
        data = json.loads(value.reveal())
    except json.JSONDecodeError as exc:
        # The decoder's message names a position only, never the text.
        raise _malformed(f"it is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise _malformed("it is not a JSON object")
    auths = data.get("auths", {})
    if not isinstance(auths, dict):
        raise _malformed('its "auths" is not an object')
    found: dict[str, Credentials] = {}
    for key, entry in auths.items():
        registry = _normal_registry(str(key))
        if not isinstance(entry, dict):
            raise _malformed(f'its entry for "{registry}" is not an object')
        found[registry] = _credentials(registry, entry)
    return found


def _credentials(registry: str, entry: Mapping[str, Any]) -> Credentials:
    token = entry.get("identitytoken") or entry.get("registrytoken")
    if isinstance(token, str) and token:
        return Credentials(registry=registry, identity_token=Secret(token))
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and username and password:
        return Credentials(registry=registry, username=username, password=Secret(password))
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user_pass = base64.b64decode(auth.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _malformed(f'the "auth" of "{registry}" is not base64 of USER:PASSWORD') from None
        user, colon, password = user_pass.partition(":")
        if not colon or not user:
            raise _malformed(f'the "auth" of "{registry}" is not base64 of USER:PASSWORD')
        return Credentials(registry=registry, username=user, password=Secret(password))
    raise _malformed(
        f'its entry for "{registry}" has no "auth", "username" and "password", or "identitytoken"'
    )


def _malformed(what: str) -> SecretValidationError:
    return SecretValidationError(
        f"the secret {REGISTRY_AUTH_NAME} is not Docker's config.json format: {what}",
        hint=f"store it as "
        '{"auths": {"REGISTRY": {"auth": "BASE64 OF USER:PASSWORD"}}} with '
        f"`runner secret set {REGISTRY_AUTH_NAME} --user NAME < config.json`",
    )


def credentials_for(auth: Secret | None, image: str) -> Credentials | None:
    """The credentials ``auth`` holds for ``image``'s registry, if any."""
    if auth is None:
        return None
    return parse_auth_config(auth).get(registry_of(image))


def secret_parts(auth: Secret) -> list[Secret]:
    """Every secret piece of a config, to redact as the whole value is.

    A password, ``USER:PASSWORD`` and its base64, a token: each could show up
    alone (in an engine's message, say). Pieces too short to redact safely are
    left to the whole value's forms. A malformed config has none of its own.
    """
    try:
        found = parse_auth_config(auth)
    except SecretValidationError:
        return []
    parts: list[str] = []
    for creds in found.values():
        if creds.identity_token:
            parts.append(creds.identity_token.reveal())
            continue
        user_pass = f"{creds.username}:{creds.password.reveal()}"
        parts += [creds.password.reveal(), user_pass, base64.b64encode(user_pass.encode()).decode()]
    return [Secret(p) for p in dict.fromkeys(parts) if len(p) >= VALUE_MIN_CHARS]
