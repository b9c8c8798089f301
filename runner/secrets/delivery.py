"""How a secret's value reaches a step: metadata stored beside the secret, never a value.

A secret is delivered one of three ways, decided by its metadata (not by the
spec, which stays what Sourcegraph accepts: ``env: [NAME]``):

- ``env`` (the default): the step's variable holds the value.
- ``file``: the value is a file on a tmpfs mounted into that step's container
  alone, and the variable holds the file's path (GitLab's file variables).
- brokered (``broker`` set, only with ``env``): the variable holds a
  placeholder, and the job's proxy puts the real value into HTTPS requests
  to the bound hosts only, so the value never enters the container.

``Delivery`` is part of ``SecretMeta``, of ``runner secret list``, of
``runner env explain`` and of the cache key (a file secret and an env secret
with the same version give different steps).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from runner.errors import SecretValidationError
from runner.records import Frozen

SecretType = Literal["env", "file"]
SECRET_TYPES: Final[tuple[SecretType, ...]] = ("env", "file")

# How the proxy spells a brokered value in a request: ``Authorization: Bearer V``,
# ``Authorization: token V``, basic auth with V as the password of USERNAME, or a
# header of the user's naming holding V alone.
_BROKER_AS = re.compile(r"bearer|token|basic:[^:\s]+|header:[A-Za-z0-9-]+")
_HOST = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)


# Frozen records (runner.records): a full cache hit loads them without generating code.
@dataclass(init=False, repr=False, eq=False)
class Broker(Frozen):
    """The hosts a brokered secret is bound to and how requests carry it."""

    hosts: tuple[str, ...]
    as_: str = "bearer"

    def __init__(self, *, hosts: tuple[str, ...], as_: str = "bearer") -> None:
        self._fill(hosts, as_)
        self.__post_init__()

    def __post_init__(self) -> None:
        if not self.hosts:
            raise SecretValidationError(
                "a brokered secret needs at least one host",
                hint="pass --broker-host HOST (repeatable), such as --broker-host api.github.com",
            )
        for host in self.hosts:
            if not _HOST.fullmatch(host):
                raise SecretValidationError(
                    f"broker host {host!r} is not a host name",
                    hint="give a bare host name such as api.github.com (no scheme, path or port)",
                )
        if not _BROKER_AS.fullmatch(self.as_):
            raise SecretValidationError(
                f"--broker-as {self.as_!r} is not one of bearer, token, basic:USERNAME, "
                "header:NAME",
                hint="pass --broker-as bearer (the default), token, basic:USERNAME or header:NAME",
            )

    def describe(self) -> str:
        hosts = ", ".join(self.hosts)
        shown = "" if self.as_ == "bearer" else f" as {self.as_}"
        return f"brokered for {hosts}{shown}"

    def to_json(self) -> dict[str, Any]:
        return {"hosts": list(self.hosts), "as": self.as_}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Broker:
        return cls(hosts=tuple(str(h).lower() for h in data["hosts"]), as_=str(data["as"]))


@dataclass(init=False, repr=False, eq=False)
class Delivery(Frozen):
    """How a secret reaches a step. The default is a plain environment variable."""

    type: SecretType = "env"
    broker: Broker | None = None

    def __init__(self, *, type: SecretType = "env", broker: Broker | None = None) -> None:
        self._fill(type, broker)
        self.__post_init__()

    def __post_init__(self) -> None:
        if self.type not in SECRET_TYPES:
            raise SecretValidationError(
                f"secret type {self.type!r} is not one of {', '.join(SECRET_TYPES)}",
                hint="pass --type env (the default) or --type file",
            )
        if self.type == "file" and self.broker is not None:
            raise SecretValidationError(
                "a file secret cannot be brokered",
                hint="broker an HTTP credential stored with --type env",
            )

    @classmethod
    def of(
        cls, type_: str = "env", broker_hosts: Sequence[str] = (), broker_as: str | None = None
    ) -> Delivery:
        """From the CLI's, the API's or the web form's fields."""
        if broker_as is not None and not broker_hosts:
            raise SecretValidationError(
                "--broker-as needs --broker-host",
                hint="name the hosts the secret is brokered for with --broker-host HOST",
            )
        broker = (
            Broker(hosts=tuple(h.lower() for h in broker_hosts), as_=broker_as or "bearer")
            if broker_hosts
            else None
        )
        return cls(type=type_, broker=broker)  # type: ignore[arg-type]  # checked above

    def describe(self) -> str:
        """``env``, ``file`` or ``brokered for HOSTS`` as `secret list` and `env explain` say."""
        return self.broker.describe() if self.broker else self.type

    def cache_part(self) -> str:
        """What the cache key takes of it: the type and binding, never a value."""
        if self.broker is None:
            return self.type
        return f"broker:{','.join(sorted(self.broker.hosts))}:{self.broker.as_}"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "broker": self.broker.to_json() if self.broker else None}

    def stored(self) -> str | None:
        """The database column's text: NULL for the default, else the JSON form."""
        if self == DEFAULT_DELIVERY:
            return None
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def change(self, before: Delivery | None) -> str | None:
        """The audit event's detail for a write: what the delivery became, if it changed."""
        was = before or DEFAULT_DELIVERY
        if self == was:
            return None
        return f"delivery {was.describe()} -> {self.describe()}"

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Delivery:
        if not data:
            return cls()
        broker = data.get("broker")
        return cls(
            type=data.get("type", "env"), broker=Broker.from_json(broker) if broker else None
        )


DEFAULT_DELIVERY: Final = Delivery()


# A job's uses as an executor reports them with its end: ``BrokeredUse.to_json`` each.
UsesJson = Sequence[Mapping[str, Any]]

# What one job's report of brokered uses may hold: enough for any real job, bounded
# because an executor sends it (runner.queue.api).
MAX_USE_HOSTS: Final = 64


@dataclass(init=False, repr=False, eq=False)
class BrokeredUse(Frozen):
    """A job's uses of one brokered secret: requests its proxy authenticated, per host.

    Aggregated while the job runs and audited once at its end (a ``brokered``
    event in the secret's audit log); metadata only, never a value.
    """

    secret_id: str
    name: str
    version: int
    hosts: Mapping[str, int]

    def __init__(
        self, *, secret_id: str, name: str, version: int, hosts: Mapping[str, int]
    ) -> None:
        self._fill(secret_id, name, version, hosts)

    @property
    def count(self) -> int:
        return sum(self.hosts.values())

    def describe(self) -> str:
        """The audit event's detail: ``used for api.github.com (3), github.com (1)``."""
        shown = ", ".join(f"{host} ({n})" for host, n in sorted(self.hosts.items()))
        return f"used for {shown}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "hosts": dict(self.hosts)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BrokeredUse:
        """From an executor's report; ``ValueError`` for anything that is not one."""
        hosts = data["hosts"]
        if not isinstance(hosts, Mapping) or not 0 < len(hosts) <= MAX_USE_HOSTS:
            raise ValueError("a brokered use names 1 to 64 hosts")
        counted = {str(h).lower()[:253]: int(n) for h, n in hosts.items()}
        if any(n < 1 for n in counted.values()):
            raise ValueError("a brokered use counts at least one request per host")
        return cls(
            secret_id=str(data["secret_id"]),
            name=str(data["name"]),
            version=int(data["version"]),
            hosts=counted,
        )
