"""Where the job's proxy puts a brokered value, and where it refuses to: pure rules.

Standard library only, like ``rules.py``: the proxy's addon loads this file by
path in the proxy's own environment, and runner's tests drive the same
functions with plain headers.

A request may carry a secret's placeholder. The proxy swaps in the real value
only when the request goes over HTTPS (which it intercepted) to a host the
secret is bound to, and only in the places a credential travels:

* the ``Authorization`` header, wherever the placeholder stands in it
  (``Bearer P``, ``token P``), or as the password of basic auth (where curl
  and git put the password of ``https://user:P@host/``; git sends it after the
  server's 401);
* the header a secret bound ``as header:NAME`` names.

Anywhere else the placeholder stays. A placeholder seen going elsewhere (plain
HTTP, or HTTPS to a host it is not bound to, in a header, the URL or the body)
leaves as the useless placeholder and is reported as a mismatch: the secret's
name and the host, never a value.

Responses pass back through ``scrub``: every registered form of each value
(runner computes them) becomes the placeholder's, so a server that echoes a
credential never shows a step the real value.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

AUTHORIZATION = "authorization"
BODY_SCAN_LIMIT = 1 << 20  # bytes of a request body searched for placeholders


def _host(text: str) -> str:
    return text.strip().lower().rstrip(".")


@dataclass(frozen=True)
class Binding:
    """One brokered secret in the proxy: its name, placeholder, value and hosts.

    ``forms`` pairs each registered form of the value with what replaces it
    in responses (the matching form of the placeholder where one exists).
    """

    name: str
    placeholder: str
    value: str = field(repr=False)
    hosts: tuple[str, ...]
    as_: str = "bearer"
    forms: tuple[tuple[bytes, bytes], ...] = field(default=(), repr=False)

    def bound_to(self, host: str) -> bool:
        return _host(host) in self.hosts

    @property
    def header(self) -> str | None:
        """The extra header this secret is substituted in (``as header:NAME``), lower case."""
        return self.as_.partition(":")[2].lower() if self.as_.startswith("header:") else None

    @property
    def basic_user(self) -> str | None:
        return self.as_.partition(":")[2] if self.as_.startswith("basic:") else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "placeholder": self.placeholder,
            "value": self.value,
            "hosts": list(self.hosts),
            "as": self.as_,
            "forms": [
                [base64.b64encode(a).decode(), base64.b64encode(b).decode()] for a, b in self.forms
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Binding:
        return cls(
            name=str(data["name"]),
            placeholder=str(data["placeholder"]),
            value=str(data["value"]),
            hosts=tuple(_host(h) for h in data["hosts"]),
            as_=str(data.get("as", "bearer")),
            forms=tuple((base64.b64decode(a), base64.b64decode(b)) for a, b in data["forms"]),
        )


@dataclass(frozen=True)
class Rewrite:
    """A request's headers after brokering, which secrets went in, which were refused."""

    headers: list[tuple[str, str]]
    used: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()


def _basic(credentials: str) -> tuple[str, str] | None:
    """``user, password`` of a basic credential, or None if it is not one."""
    try:
        text = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


def _authorization(value: str, binding: Binding) -> str:
    """``value`` of an Authorization header with ``binding``'s placeholder made real."""
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() == "basic":
        pair = _basic(credentials)
        if pair is not None and binding.placeholder in pair[1]:
            user = pair[0] or (binding.basic_user or "")
            password = pair[1].replace(binding.placeholder, binding.value)
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            return f"{scheme} {token}"
    return value.replace(binding.placeholder, binding.value)


def _visible(name: str, value: str) -> str:
    """What a header says, with a basic credential decoded (it hides a placeholder)."""
    if name.lower() == AUTHORIZATION:
        scheme, _, credentials = value.partition(" ")
        if scheme.lower() == "basic" and (pair := _basic(credentials)) is not None:
            return f"{value} {pair[0]}:{pair[1]}"
    return value


@dataclass(frozen=True)
class BrokerRules:
    """A job's brokered secrets, as the proxy holds them."""

    bindings: tuple[Binding, ...] = ()
    _pattern: re.Pattern[bytes] | None = field(default=None, init=False, repr=False, compare=False)
    _replacements: dict[bytes, bytes] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        pairs: dict[bytes, bytes] = {}
        for binding in self.bindings:
            raw = binding.value.encode()
            pairs.setdefault(raw, binding.placeholder.encode())
            for form, replacement in binding.forms:
                pairs.setdefault(form, replacement)
        if pairs:
            # Longest first, so a form wins over a shorter form inside it.
            ordered = sorted(pairs, key=len, reverse=True)
            pattern = re.compile(b"|".join(re.escape(form) for form in ordered))
            object.__setattr__(self, "_pattern", pattern)
            object.__setattr__(self, "_replacements", pairs)

    @property
    def hosts(self) -> frozenset[str]:
        """Every host some secret is bound to: the only ones whose TLS is intercepted."""
        return frozenset(h for b in self.bindings for h in b.hosts)

    def intercepts(self, host: str) -> bool:
        return _host(host) in self.hosts

    def rewrite(
        self,
        *,
        host: str,
        secure: bool,
        headers: Sequence[tuple[str, str]],
        target: str = "",
        body: bytes = b"",
    ) -> Rewrite:
        """Brokered values into a request to ``host`` (``secure``: HTTPS the proxy intercepted)."""
        out = list(headers)
        used: list[str] = []
        mismatched: list[str] = []
        seen_target = target + " " + urllib.parse.unquote(target)
        scanned = body[:BODY_SCAN_LIMIT]
        for binding in self.bindings:
            placeholder = binding.placeholder
            in_headers = [
                i for i, (name, value) in enumerate(out) if placeholder in _visible(name, value)
            ]
            elsewhere = placeholder in seen_target or placeholder.encode() in scanned
            if not in_headers and not elsewhere:
                continue
            if not (secure and binding.bound_to(host)):
                mismatched.append(binding.name)
                continue
            substituted = False
            for i in in_headers:
                name, value = out[i]
                if name.lower() == AUTHORIZATION:
                    out[i] = (name, _authorization(value, binding))
                elif name.lower() == binding.header:
                    out[i] = (name, value.replace(placeholder, binding.value))
                else:
                    continue
                substituted = True
            if substituted:
                used.append(binding.name)
        return Rewrite(out, tuple(used), tuple(mismatched))

    def scrub(self, data: bytes) -> bytes:
        """``data`` with every registered form of every value replaced (responses)."""
        if self._pattern is None or not data:
            return data
        return self._pattern.sub(lambda m: self._replacements[m.group(0)], data)

    def scrub_text(self, text: str) -> str:
        return self.scrub(text.encode("utf-8", "surrogateescape")).decode(
            "utf-8", "surrogateescape"
        )

    def to_json(self) -> list[dict[str, Any]]:
        return [b.to_json() for b in self.bindings]

    @classmethod
    def from_json(cls, data: Iterable[dict[str, Any]]) -> BrokerRules:
        return cls(tuple(Binding.from_json(item) for item in data))
