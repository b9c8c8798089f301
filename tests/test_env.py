"""step.env resolution: every rule of the env issue, on the in-package fake store."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from runner.env import HostEnv, materialize, plan_env
from runner.errors import MissingSecretsError, SecretValidationError, SpecError
from runner.secrets.value import Secret
from runner.spec import load_spec
from runner.spec.models import BatchSpec
from runner.testing import FakeSecretStore

TAIL = "changesetTemplate:\n  title: t\n  branch: b\n  commit:\n    message: m\n"


def spec_with(tmp_path: Path, steps: str) -> BatchSpec:
    path = tmp_path / "spec.yaml"
    path.write_text("name: env-test\nsteps:\n" + textwrap.dedent(steps) + TAIL)
    return load_spec(path)


@pytest.fixture
def store() -> FakeSecretStore:
    s = FakeSecretStore()
    s.set("GH_TOKEN", "global", Secret("global-token-value"), actor="admin")
    s.set("GH_TOKEN", "user:alice", Secret("alice-token-value"), actor="alice")
    s.set("ORG_ONLY", "org:acme", Secret("acme-secret-value"), actor="bob")
    s.set("ALICE_ONLY", "user:alice", Secret("alice-private-value"), actor="alice")
    return s


def test_object_form_literals_and_templates(tmp_path: Path, store: FakeSecretStore) -> None:
    spec = spec_with(
        tmp_path,
        """\
        - run: x
          container: c
          env:
            PLAIN: hello
            FILES: ${{ join previous_step.modified_files " " }}
        """,
    )
    plan = plan_env(spec, "user:alice", store)
    sources = [(v.name, v.provenance.source) for v in plan.steps[1]]
    assert sources == [("PLAIN", "literal"), ("FILES", "template")]
    resolved = materialize(
        plan.steps[1],
        context={"previous_step": {"modified_files": ["a.go", "b.go"]}},
        secrets={},
        host=HostEnv(),
    )
    assert [(r.name, r.value) for r in resolved] == [("PLAIN", "hello"), ("FILES", "a.go b.go")]
    assert not any(r.is_secret for r in resolved)


def test_list_and_mixed_forms(tmp_path: Path, store: FakeSecretStore) -> None:
    spec = spec_with(
        tmp_path,
        """\
        - run: x
          container: c
          env:
            - GH_TOKEN
            - LITERAL: value
        """,
    )
    plan = plan_env(spec, "user:alice", store)
    assert [(v.name, v.provenance.source) for v in plan.steps[1]] == [
        ("GH_TOKEN", "secret"),
        ("LITERAL", "literal"),
    ]


def test_namespaced_secret_overrides_global(tmp_path: Path, store: FakeSecretStore) -> None:
    spec = spec_with(tmp_path, "- run: x\n  container: c\n  env: [GH_TOKEN]\n")
    alice = plan_env(spec, "user:alice", store).steps[1][0]
    assert alice.provenance.namespace == "user:alice"
    assert alice.provenance.overrides_global is True
    bob = plan_env(spec, "user:bob", store).steps[1][0]
    assert bob.provenance.namespace == "global"
    assert bob.provenance.overrides_global is False
    values = materialize(
        [alice],
        context={},
        secrets={alice.secret.id: store.reveal(alice.secret, version=1, actor="t")},
        host=HostEnv(),
    )
    assert isinstance(values[0].value, Secret)
    assert values[0].value.reveal() == "alice-token-value"


def test_org_secret_is_not_visible_to_a_users_job(tmp_path: Path, store: FakeSecretStore) -> None:
    spec = spec_with(tmp_path, "- run: x\n  container: c\n  env: [ORG_ONLY]\n")
    assert plan_env(spec, "org:acme", store).steps[1][0].provenance.namespace == "org:acme"
    with pytest.raises(MissingSecretsError):
        plan_env(spec, "user:alice", store)


def test_users_secret_is_not_visible_to_an_orgs_job(tmp_path: Path, store: FakeSecretStore) -> None:
    spec = spec_with(tmp_path, "- run: x\n  container: c\n  env: [ALICE_ONLY]\n")
    plan_env(spec, "user:alice", store)
    with pytest.raises(MissingSecretsError):
        plan_env(spec, "org:acme", store)


def test_all_missing_names_are_reported_together(tmp_path: Path, store: FakeSecretStore) -> None:
    spec = spec_with(
        tmp_path,
        """\
        - run: x
          container: c
          env: [NOPE_ONE, GH_TOKEN]
        - run: y
          container: c
          env:
            - NOPE_TWO
        """,
    )
    with pytest.raises(MissingSecretsError) as info:
        plan_env(spec, "user:alice", store)
    text = str(info.value)
    assert "NOPE_ONE" in text and "NOPE_TWO" in text
    assert "step 1" in text and "step 2" in text
    assert "user:alice, global" in text
    assert "runner secret set NOPE_ONE --user alice" in text
    missing = info.value.missing
    assert [(m.step, m.name) for m in missing] == [(1, "NOPE_ONE"), (2, "NOPE_TWO")]


def test_org_missing_suggests_the_org_flag(tmp_path: Path, store: FakeSecretStore) -> None:
    spec = spec_with(tmp_path, "- run: x\n  container: c\n  env: [NOPE]\n")
    with pytest.raises(MissingSecretsError, match="runner secret set NOPE --org acme"):
        plan_env(spec, "org:acme", store)


def test_host_pass_through_only_when_allowed(tmp_path: Path, store: FakeSecretStore) -> None:
    spec = spec_with(tmp_path, "- run: x\n  container: c\n  env: [MY_HOST_VAR]\n")
    environ = {"MY_HOST_VAR": "host-value-123", "OTHER": "x"}
    with pytest.raises(MissingSecretsError):
        plan_env(spec, "user:alice", store, HostEnv.from_environ([], environ))
    host = HostEnv.from_environ(["MY_*"], environ)
    assert dict(host.values) == {"MY_HOST_VAR": "host-value-123"}
    plan = plan_env(spec, "user:alice", store, host)
    assert plan.steps[1][0].provenance.source == "host"
    resolved = materialize(plan.steps[1], context={}, secrets={}, host=host)
    assert isinstance(resolved[0].value, Secret)  # treated as a secret for redaction


def test_short_host_values_are_refused(tmp_path: Path, store: FakeSecretStore) -> None:
    spec = spec_with(tmp_path, "- run: x\n  container: c\n  env: [SHORT]\n")
    host = HostEnv.from_environ(["SHORT"], {"SHORT": "abc"})
    with pytest.raises(SecretValidationError, match="shorter than 8"):
        plan_env(spec, "user:alice", store, host)


def test_a_secret_wins_over_an_allowed_host_variable(
    tmp_path: Path, store: FakeSecretStore
) -> None:
    spec = spec_with(tmp_path, "- run: x\n  container: c\n  env: [GH_TOKEN]\n")
    host = HostEnv.from_environ(["GH_TOKEN"], {"GH_TOKEN": "from-the-host-123"})
    assert plan_env(spec, "user:alice", store, host).steps[1][0].provenance.source == "secret"


@pytest.mark.parametrize("name", ["RUNNER_TOKEN", "LD_PRELOAD", "PATH", "NODE_OPTIONS"])
def test_reserved_bare_names_are_refused_with_step_and_line(
    tmp_path: Path, store: FakeSecretStore, name: str
) -> None:
    spec = spec_with(tmp_path, f"- run: x\n  container: c\n  env:\n    - {name}\n")
    with pytest.raises(SpecError) as info:
        plan_env(spec, "user:alice", store)
    problem = info.value.problems[0]
    assert problem.line == 6
    assert "steps[1].env" in problem.message and name in problem.message


def test_literals_may_set_loader_names_but_not_runner_names(
    tmp_path: Path, store: FakeSecretStore
) -> None:
    ok = spec_with(
        tmp_path, "- run: x\n  container: c\n  env:\n    NODE_OPTIONS: --max-old-space-size=4096\n"
    )
    assert plan_env(ok, "user:alice", store).steps[1][0].text == "--max-old-space-size=4096"
    bad = spec_with(tmp_path, "- run: x\n  container: c\n  env:\n    RUNNER_X: y\n")
    with pytest.raises(SpecError, match="RUNNER_"):
        plan_env(bad, "user:alice", store)


def test_secret_values_are_never_rendered_as_templates(
    tmp_path: Path, store: FakeSecretStore
) -> None:
    store.set("TEMPLATED", "user:alice", Secret("${{ repository.name }}-value"), actor="alice")
    spec = spec_with(tmp_path, "- run: x\n  container: c\n  env: [TEMPLATED]\n")
    plan = plan_env(spec, "user:alice", store)
    var = plan.steps[1][0]
    value = store.reveal(var.secret, version=var.secret.version, actor="t")
    resolved = materialize(
        plan.steps[1],
        context={"repository": {"name": "x"}},
        secrets={var.secret.id: value},
        host=HostEnv(),
    )
    assert isinstance(resolved[0].value, Secret)
    assert resolved[0].value.reveal() == "${{ repository.name }}-value"


def test_planning_decrypts_nothing_and_writes_no_access_event(
    tmp_path: Path, store: FakeSecretStore
) -> None:
    before = [e.event for e in store.log()]
    spec = spec_with(tmp_path, "- run: x\n  container: c\n  env: [GH_TOKEN]\n")
    plan_env(spec, "user:alice", store)
    assert [e.event for e in store.log()] == before
    assert "accessed" not in before
