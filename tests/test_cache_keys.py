"""Cache keys: what enters them, and what never does."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from runner.cache import StepKeyInput, WorkspaceKeyInput, host_mac, step_keys
from runner.env import PlannedVar, Provenance
from runner.secrets.crypto import Keyring, new_master_key

WS = WorkspaceKeyInput("user:alice", "github.com/a/b", "tree1", "", False, "name", "desc")
VALUE = "super-secret-host-value"


class Ref:
    def __init__(self, version: int) -> None:
        self.id = "sid-1"
        self.name = "GH_TOKEN"
        self.namespace = "user:alice"
        self.version = version
        self.overrides_global = False


def _step(
    definition: object, env: list[PlannedVar], macs: dict[str, str] | None = None
) -> StepKeyInput:
    return StepKeyInput(definition, "sha256:img", {}, {}, env, macs or {})


def _secret(version: int) -> PlannedVar:
    prov = Provenance("secret", "user:alice", "sid-1", version, False)
    return PlannedVar(1, "GH_TOKEN", prov, secret=Ref(version))


def test_a_new_secret_version_changes_that_step_and_every_later_one() -> None:
    plain = _step({"run": "a"}, [])
    v1 = step_keys(WS, [plain, _step({"run": "b"}, [_secret(1)]), _step({"run": "c"}, [])])
    v2 = step_keys(WS, [plain, _step({"run": "b"}, [_secret(2)]), _step({"run": "c"}, [])])
    assert v1[0] == v2[0]
    assert v1[1] != v2[1]
    assert v1[2] != v2[2]


def test_namespace_and_image_enter_the_key() -> None:
    step = _step({"run": "a"}, [])
    base = step_keys(WS, [step])
    assert step_keys(replace(WS, namespace="org:acme"), [step]) != base
    other_image = StepKeyInput({"run": "a"}, "sha256:other", {}, {}, [], {})
    assert step_keys(WS, [other_image]) != base


def test_host_values_enter_only_as_an_hmac_under_a_derived_key() -> None:
    keyring = Keyring([new_master_key()])
    key = keyring.derive("cache-host-hmac")
    mac = host_mac(key, "HOSTVAR", VALUE)
    var = PlannedVar(1, "HOSTVAR", Provenance("host"))
    canonical = json.dumps(_step({"run": "a"}, [var], {"HOSTVAR": mac}).canonical())
    assert VALUE not in canonical
    assert hashlib.sha256(VALUE.encode()).hexdigest() not in canonical
    assert mac in canonical
    assert host_mac(Keyring([new_master_key()]).derive("cache-host-hmac"), "HOSTVAR", VALUE) != mac
    assert host_mac(key, "HOSTVAR", VALUE + "x") != mac
