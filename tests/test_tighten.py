"""The rule that combines an executor's sandbox policy with a namespace's requirement."""

from __future__ import annotations

from typing import Any

import pytest

from runner.errors import UsageError
from runner.sandbox import Hardening, HostPort, SandboxPolicy
from runner.sandbox.tighten import NamespacePolicy, describe, format_size, tighten


def hosts(*texts: str) -> tuple[HostPort, ...]:
    return tuple(HostPort.parse(t) for t in texts)


def own(**kw: Any) -> SandboxPolicy:
    if "allow_hosts" in kw:
        kw["allow_hosts"] = hosts(*kw["allow_hosts"])
    return SandboxPolicy(**kw)


def req(**kw: Any) -> NamespacePolicy:
    if "allow_hosts" in kw:
        kw["allow_hosts"] = hosts(*kw["allow_hosts"])
    return NamespacePolicy(**kw)


# (executor's own policy, namespace requirement, expected (network, allow_hosts))
NETWORK_CASES = [
    # Nothing required: the executor's policy stands.
    (own(), req(), ("open", ())),
    (own(network="allow", allow_hosts=["a.com:443"]), req(), ("allow", ("a.com:443",))),
    # The stricter network wins, whichever side asks for it.
    (own(), req(network="none"), ("none", ())),
    (own(network="none"), req(network="open"), ("none", ())),
    (own(network="allow", allow_hosts=["a.com"]), req(network="none"), ("none", ())),
    (own(), req(network="allow", allow_hosts=["a.com:443"]), ("allow", ("a.com:443",))),
    (
        own(network="allow", allow_hosts=["a.com:443"]),
        req(network="open"),
        ("allow", ("a.com:443",)),
    ),
    # Two allow-lists intersect, ports narrowing.
    (
        own(network="allow", allow_hosts=["a.com", "b.com:443", "c.com:80"]),
        req(network="allow", allow_hosts=["a.com:443", "b.com", "c.com:8080", "d.com"]),
        ("allow", ("b.com:443", "a.com:443")),
    ),
    (
        own(network="allow", allow_hosts=["a.com"]),
        req(network="allow", allow_hosts=["b.com"]),
        ("allow", ()),
    ),
    # Under `open` a listed private address is an exception the other side must share.
    (
        own(network="open", allow_hosts=["10.0.0.5:22"]),
        req(network="allow", allow_hosts=["a.com:443", "10.0.0.5", "192.168.1.1"]),
        ("allow", ("a.com:443", "10.0.0.5:22")),
    ),
    (
        own(network="open"),
        req(network="allow", allow_hosts=["a.com:443", "169.254.169.254", "localhost:80"]),
        ("allow", ("a.com:443",)),
    ),
    (
        own(network="open", allow_hosts=["10.0.0.5", "172.16.0.1"]),
        req(network="open", allow_hosts=["10.0.0.5:443"]),
        ("open", ("10.0.0.5:443",)),
    ),
    (own(network="open", allow_hosts=["10.0.0.5"]), req(network="open"), ("open", ())),
    # A public host under `open` is reachable anyway: kept with the wider port.
    (
        own(network="allow", allow_hosts=["a.com"]),
        req(network="open", allow_hosts=["a.com:443"]),
        ("allow", ("a.com",)),
    ),
]


@pytest.mark.parametrize(("mine", "required", "expected"), NETWORK_CASES)
def test_the_network_only_narrows(
    mine: SandboxPolicy, required: NamespacePolicy, expected: tuple[str, tuple[str, ...]]
) -> None:
    result = tighten(mine, required)
    network, listed = expected
    assert result.network == network
    assert sorted(str(h) for h in result.allow_hosts) == sorted(listed)


@pytest.mark.parametrize(
    ("mine", "required", "isolation"),
    [
        ("runc", None, "runc"),
        ("runc", "runc", "runc"),
        ("gvisor", None, "gvisor"),
        ("gvisor", "runc", "gvisor"),
        ("runc", "gvisor", "gvisor"),
    ],
)
def test_gvisor_wins(mine: Any, required: Any, isolation: str) -> None:
    assert tighten(SandboxPolicy(isolation=mine), req(isolation=required)).isolation == isolation


@pytest.mark.parametrize(
    ("mine", "required", "expected"),
    [
        (None, None, None),
        (600.0, None, 600.0),
        (None, 60.0, 60.0),
        (600.0, 60.0, 60.0),
        (30.0, 60.0, 30.0),
    ],
)
def test_the_smaller_timeout_and_cap_win(
    mine: float | None, required: float | None, expected: float | None
) -> None:
    result = tighten(
        SandboxPolicy(job_timeout_s=mine, disk_cap_bytes=None if mine is None else int(mine) << 20),
        req(
            job_timeout_s=required,
            disk_cap_bytes=None if required is None else int(required) << 20,
        ),
    )
    assert result.job_timeout_s == expected
    assert result.disk_cap_bytes == (None if expected is None else int(expected) << 20)


def test_operator_settings_pass_through() -> None:
    hardening = Hardening(pids_limit=4096, user="1000")
    mine = SandboxPolicy(hardening=hardening, add_hosts=(("git.internal", "10.1.2.3"),))
    result = tighten(mine, req(isolation="gvisor", network="none", job_timeout_s=5))
    assert result.hardening == hardening
    assert result.add_hosts == (("git.internal", "10.1.2.3"),)


def test_tightening_is_idempotent_and_never_loosens() -> None:
    for mine, required, _ in NETWORK_CASES:
        once = tighten(mine, required)
        assert tighten(once, required) == once
        order = {"none": 0, "allow": 1, "open": 2}
        assert order[once.network] <= order[mine.network]
        if required.network is not None:
            assert order[once.network] <= order[required.network]


@pytest.mark.parametrize(
    "policy",
    [
        req(),
        req(isolation="gvisor"),
        req(network="allow", allow_hosts=["a.com:443", "[::1]:8080"], job_timeout_s=90.5),
        req(network="none", disk_cap_bytes=1 << 30),
    ],
)
def test_namespace_policy_json_round_trip(policy: NamespacePolicy) -> None:
    assert NamespacePolicy.from_json(policy.to_json()) == policy


def test_namespace_policy_refuses_nonsense() -> None:
    with pytest.raises(UsageError, match="isolation"):
        NamespacePolicy(isolation="kata")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="network policy"):
        NamespacePolicy(network="closed")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--allow-host needs --network"):
        req(allow_hosts=["a.com"])
    with pytest.raises(UsageError, match="--allow-host needs --network"):
        req(network="none", allow_hosts=["a.com"])
    with pytest.raises(UsageError, match="job timeout"):
        NamespacePolicy(job_timeout_s=0)
    with pytest.raises(UsageError, match="disk cap"):
        NamespacePolicy(disk_cap_bytes=-5)
    with pytest.raises(UsageError, match="malformed"):
        NamespacePolicy.from_json({"job_timeout_s": "soon"})
    with pytest.raises(UsageError, match="HOST"):
        NamespacePolicy.from_json({"network": "allow", "allow_hosts": ["a b"]})


def test_describe_names_what_is_set() -> None:
    assert describe(req().to_json()) == "no requirements"
    text = describe(
        req(
            isolation="gvisor",
            network="allow",
            allow_hosts=["a.com:443"],
            job_timeout_s=600,
            disk_cap_bytes=2 << 30,
        ).to_json()
    )
    assert text == "isolation gvisor, network allow (a.com:443), job timeout 600 s, disk cap 2 GiB"
    assert [format_size(n) for n in (100, 1536, 5 << 20, 3 << 30)] == [
        "100 B",
        "1.5 KiB",
        "5 MiB",
        "3 GiB",
    ]
