"""Brokered secrets without an engine or a proxy: placeholders, the substitution rules, the job.

The rules are the very functions the proxy's addon runs (``broker_rules.py``
is standard library only); the job side runs ``run_job`` on the fake runtime
with the real ``JobNetworks`` and a proxy that only records.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import string
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from runner.egress.broker import CA_BUNDLE_PATH, TRUST_VARIABLES, response_forms
from runner.egress.broker_rules import Binding, BrokerRules
from runner.egress.placeholders import make_placeholder, type_prefix
from runner.errors import RunnerError
from runner.execute.job import run_job
from runner.queue.bundle import Bundle
from runner.redact.active import ActiveRedactor
from runner.sandbox import SandboxPolicy
from runner.secrets.delivery import BrokeredUse, Delivery
from runner.secrets.value import Secret
from runner.testing import FakeRuntime, FakeStepRun
from tests.test_egress_unit import FakeProxy, _networks
from tests.test_job import IMAGE, IMAGE_ID, NAMESPACE, TOKEN, Recorder, _job, _services, step
from tests.test_queue_support import (
    ORG_VALUE,
    SPEC_PLAIN,
    SPEC_WITH_SECRET,
    TOKEN_VALUE,
    World,
    sqlite_world,
    write_spec,
)

GH = "ghp_" + "Zq8RrT2kLm0pXw4vNc7bHy1sDf6gJa3eUo5i"
PH = "ghp_" + "Pq1aBc2dEf3gHi4jKl5mNo6pQr7sTu8vWx9y"


# Placeholders ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "prefix"),
    [
        (GH, "ghp_"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGH", "github_pat_"),
        ("glpat-" + "x" * 20, "glpat-"),
        ("xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp", "xoxb-"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.SflKxwRJSMeKKF2QT4f", ""),
        ("plain-but-short1", ""),  # keeping "plain-" would leave too little to randomize
        ("0123456789abcdef0123", ""),
    ],
)
def test_a_placeholder_looks_like_its_value_and_is_not_it(value: str, prefix: str) -> None:
    assert type_prefix(value) == prefix
    made = {make_placeholder(value) for _ in range(20)}
    assert len(made) == 20  # fresh each time: per job, unguessable
    for placeholder in made:
        assert placeholder != value and value not in placeholder
        assert len(placeholder) == len(value) and placeholder.startswith(prefix)
        for mine, theirs in zip(placeholder[len(prefix) :], value[len(prefix) :], strict=True):
            for alphabet in (string.ascii_lowercase, string.ascii_uppercase, string.digits):
                assert (mine in alphabet) == (theirs in alphabet)
            if not theirs.isalnum():
                assert mine == theirs  # punctuation stays: a JWT keeps its dots


def test_a_placeholder_avoids_the_ones_taken_and_needs_something_to_randomize() -> None:
    value = "ab" + "1" * 7
    taken = {make_placeholder(value) for _ in range(50)}
    assert make_placeholder(value, taken=taken) not in taken
    with pytest.raises(ValueError, match="letters or digits"):
        make_placeholder("--------__________")


# The substitution rules ------------------------------------------------------------------------


def binding(as_: str = "bearer", hosts: tuple[str, ...] = ("api.github.com",)) -> Binding:
    return Binding(
        name="GITHUB_TOKEN",
        placeholder=PH,
        value=GH,
        hosts=hosts,
        as_=as_,
        forms=response_forms(GH, PH),
    )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_bearer_and_token_become_real_only_over_https_to_a_bound_host() -> None:
    rules = BrokerRules((binding(),))
    for scheme in ("Bearer", "token"):
        sent = [("Authorization", f"{scheme} {PH}"), ("Accept", "*/*")]
        done = rules.rewrite(host="API.github.com.", secure=True, headers=sent)
        assert done.headers == [("Authorization", f"{scheme} {GH}"), ("Accept", "*/*")]
        assert done.used == ("GITHUB_TOKEN",) and done.mismatched == ()
    # Plain HTTP to the bound host, HTTPS to another: the placeholder leaves as it came.
    for host, secure in (("api.github.com", False), ("evil.example", True)):
        sent = [("Authorization", f"Bearer {PH}")]
        done = rules.rewrite(host=host, secure=secure, headers=sent)
        assert done.headers == sent
        assert done.used == () and done.mismatched == ("GITHUB_TOKEN",)


def test_basic_auth_carries_it_as_the_password_as_git_and_curl_send_it() -> None:
    rules = BrokerRules((binding(),))
    done = rules.rewrite(
        host="api.github.com", secure=True, headers=[("authorization", basic("x-token", PH))]
    )
    assert done.headers == [("authorization", basic("x-token", GH))]
    # Bound as basic:USER: a client that sent no user name gets that one.
    named = BrokerRules((binding("basic:octocat"),))
    done = named.rewrite(
        host="api.github.com", secure=True, headers=[("Authorization", basic("", PH))]
    )
    assert done.headers == [("Authorization", basic("octocat", GH))]
    # Hidden in base64, a placeholder going astray is still seen.
    astray = rules.rewrite(
        host="plain.example", secure=False, headers=[("Authorization", basic("u", PH))]
    )
    assert astray.mismatched == ("GITHUB_TOKEN",)


def test_a_named_header_and_nowhere_else() -> None:
    rules = BrokerRules((binding("header:PRIVATE-TOKEN", ("gitlab.example.com",)),))
    sent = [("Private-Token", PH), ("X-Other", PH)]
    done = rules.rewrite(host="gitlab.example.com", secure=True, headers=sent, target=f"/?t={PH}")
    assert done.headers == [("Private-Token", GH), ("X-Other", PH)]
    assert done.used == ("GITHUB_TOKEN",) and done.mismatched == ()
    # In a URL's query or a body to another host: not substituted, reported.
    for target, body in ((f"/x?token={urllib.parse.quote(PH)}", b""), ("/", PH.encode())):
        astray = rules.rewrite(
            host="other.example", secure=True, headers=[], target=target, body=body
        )
        assert astray.mismatched == ("GITHUB_TOKEN",)
    quiet = rules.rewrite(host="other.example", secure=True, headers=[("Accept", "*/*")])
    assert quiet.mismatched == () and quiet.used == ()


def test_responses_show_the_placeholder_wherever_the_value_was_echoed() -> None:
    rules = BrokerRules((binding(),))
    echoed = (
        f"raw {GH} url {urllib.parse.quote(GH, safe='')} "
        f"b64 {base64.b64encode(GH.encode()).decode()} json {json.dumps(GH)}"
    ).encode()
    clean = rules.scrub(echoed)
    assert GH.encode() not in clean
    assert base64.b64encode(GH.encode()) not in clean
    assert clean.count(PH.encode()) == 3 and base64.b64encode(PH.encode()) in clean
    assert rules.scrub_text(f"Bearer {GH}") == f"Bearer {PH}"
    assert rules.scrub(b"nothing here") == b"nothing here"
    assert "value" not in repr(binding()) and GH not in repr(binding())


def test_the_proxy_configuration_round_trips_through_json() -> None:
    rules = BrokerRules((binding("basic:octocat"),))
    again = BrokerRules.from_json(json.loads(json.dumps(rules.to_json())))
    assert again.bindings == rules.bindings and again.hosts == {"api.github.com"}


# The job ---------------------------------------------------------------------------------------


def test_a_step_gets_the_placeholder_the_proxy_the_value_and_a_mismatch_is_an_event(
    tmp_path: Path,
) -> None:
    job, store = _job(
        tmp_path,
        step("print", "env: [TOKEN, OTHER]") + step("again", "env: [TOKEN]"),
        ["github.com/acme/app"],
    )
    # TOKEN becomes brokered: the plan is made again against the store's new metadata.
    store.set(
        "TOKEN",
        NAMESPACE,
        Secret(TOKEN),
        actor="alice",
        delivery=Delivery.of("env", ["api.github.com"]),
    )
    job, _ = _job_with(tmp_path, job, store)
    proxy = FakeProxy()
    seen: list[str] = []
    bundles: list[str] = []

    def print_env(run: FakeStepRun) -> int:
        token = run.getenv("TOKEN") or ""
        seen.append(token)
        bundles.extend(
            Path(m.source).read_text() for m in run.step.mounts if m.target == CA_BUNDLE_PATH
        )
        run.stdout(f"token={token}\n")
        assert proxy.broker is not None
        if run.step.script.startswith("print"):
            proxy.broker.on_event("mismatch", "TOKEN", "plain.example")
        proxy.broker.on_event("used", "TOKEN", "api.github.com")
        return 0

    roots = {(IMAGE_ID, "/etc/pki/tls/certs/ca-bundle.crt"): b"THE IMAGE'S OWN ROOTS\n"}
    runtime = FakeRuntime(handler=print_env, images={IMAGE: IMAGE_ID}, image_files=roots)
    rec = Recorder(ActiveRedactor())
    services = _services(tmp_path, runtime, rec, networks=_networks(runtime, proxy))
    reported: list[Sequence[BrokeredUse]] = []
    (outcome,) = run_job(
        job,
        lambda ref, n: store.reveal(ref.id, version=ref.version, actor="alice", step=n),
        replace(services, on_brokered=reported.append),
    )
    assert outcome.status == "unchanged"
    # Both steps got one placeholder, the job's; never the value.
    assert len(set(seen)) == 1 and seen[0] != TOKEN and len(seen[0]) == len(TOKEN)
    assert all(TOKEN not in repr(s.env) and TOKEN not in repr(s.secret_env) for s in runtime.steps)
    # The proxy (open policy: every name) holds the value; the steps use it and trust its CA.
    (_, _, rules) = proxy.started[0]
    assert rules.any_host
    assert proxy.broker is not None
    (bound,) = proxy.broker.rules.bindings
    assert (bound.value, bound.placeholder, bound.hosts) == (TOKEN, seen[0], ("api.github.com",))
    for s in runtime.steps:
        assert s.env["HTTPS_PROXY"].startswith("http://")
        assert {s.env[v] for v in TRUST_VARIABLES} == {CA_BUNDLE_PATH}
    # The job CA first, then the image's own roots.
    assert bundles == ["-----BEGIN CERTIFICATE-----\nfake job CA\nTHE IMAGE'S OWN ROOTS\n"] * 2
    # The placeholder is redacted as the secret's name.
    shown = [e["_shown"] for e in rec.events if e["event"] == "step.output"]
    assert len(shown) == 2 and all("token=[REDACTED:TOKEN]" in line for line in shown)
    assert seen[0] not in repr(rec.events)
    (mismatch,) = [e for e in rec.events if e["event"] == "secret.broker_mismatch"]
    assert (mismatch["step"], mismatch["secret"], mismatch["host"]) == (1, "TOKEN", "plain.example")
    assert outcome.result.broker_mismatch == 1
    # The audit log says the job used it brokered.
    (access,) = [e for e in store.log("TOKEN") if e.event == "accessed"]
    assert access.detail == "brokered for api.github.com" and access.step == 1
    # Each step's request counted, and handed over once, at the job's end.
    meta = store.get("TOKEN", NAMESPACE)
    assert meta is not None
    (uses,) = reported
    assert [u.to_json() for u in uses] == [
        {"secret_id": meta.id, "name": "TOKEN", "version": 2, "hosts": {"api.github.com": 2}}
    ]


def _job_with(tmp_path: Path, job, store):  # type: ignore[no-untyped-def]
    from runner.env import plan_env

    return replace(job, env_plan=plan_env(job.spec, NAMESPACE, store)), store


def test_without_a_brokered_secret_open_has_no_proxy_and_none_never_has_one(
    tmp_path: Path,
) -> None:
    job, store = _job(tmp_path, step("print", "env: [TOKEN]"), ["github.com/acme/app"])
    runtime = FakeRuntime(images={IMAGE: IMAGE_ID})
    proxy = FakeProxy()
    reveal = lambda ref, n: store.reveal(ref.id, version=ref.version, actor="alice", step=n)  # noqa: E731
    services = _services(
        tmp_path, runtime, Recorder(ActiveRedactor()), networks=_networks(runtime, proxy)
    )
    run_job(job, reveal, services)
    assert proxy.started == [] and "SSL_CERT_FILE" not in runtime.steps[0].env
    # Brokered, under none: no proxy, and the step holds the useless placeholder.
    store.set(
        "TOKEN", NAMESPACE, Secret(TOKEN), actor="alice", delivery=Delivery.of("env", ["h.example"])
    )
    job, _ = _job_with(tmp_path, job, store)
    runtime = FakeRuntime(images={IMAGE: IMAGE_ID})
    services = _services(
        tmp_path,
        runtime,
        Recorder(ActiveRedactor()),
        networks=_networks(runtime, proxy),
        sandbox=SandboxPolicy(network="none"),
    )
    run_job(job, reveal, services)
    assert proxy.started == []
    assert runtime.steps[0].secret_env["TOKEN"].reveal() != TOKEN


def test_a_killed_runs_proxy_folder_is_swept_a_live_ones_is_not(tmp_path: Path) -> None:
    from runner.egress import proxy

    dead = proxy.TMPFS / f"{proxy.CONFDIR_PREFIX}999999999-test"  # no such process
    live = proxy.TMPFS / f"{proxy.CONFDIR_PREFIX}{os.getpid()}-test"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "mitmproxy-ca.pem").write_text("key")
    try:
        assert proxy.sweep_confdirs() >= 1
        assert not dead.exists() and live.exists()
    finally:
        shutil.rmtree(live, ignore_errors=True)
        shutil.rmtree(dead, ignore_errors=True)


# The audit of brokered uses --------------------------------------------------------------------


def _use(meta_id: str, name: str, version: int, **hosts: int) -> dict[str, object]:
    hosts_named = {host.replace("_", "."): n for host, n in hosts.items()}
    return {"secret_id": meta_id, "name": name, "version": version, "hosts": hosts_named}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with sqlite_world(tmp_path) as w:
        yield w


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_the_coordinator_audits_an_executors_brokered_uses_once_per_job(
    world: World, tmp_path: Path
) -> None:
    alice, executor = world.client("alice"), world.client("exec")
    bound = Delivery.of("env", ["api.github.com", "github.com"])
    meta, _ = alice.secret_set("TOKEN", "user:alice", Secret(TOKEN_VALUE), delivery=bound)
    bobs, _ = world.client("bob").secret_set("TOKEN", "user:bob", Secret(ORG_VALUE))
    spec = Bundle.from_spec_file(write_spec(tmp_path / "spec", SPEC_WITH_SECRET))
    alice.submit(spec, "user:alice")
    done, failed = executor.claim("ex-a"), executor.claim("ex-b")
    assert done is not None and failed is not None
    used = _use(meta.id, "TOKEN", 1, api_github_com=3, github_com=1)
    # An executor may only report the job's own namespace's secrets: bob's is dropped.
    astray = _use(bobs.id, "TOKEN", 1, api_github_com=1)
    result = {"status": "unchanged", "changesets": []}
    executor.complete(done.job_id, done.lease, result, brokered=[used, astray])
    # The same report again (its answer was lost) is accepted and counts nothing twice.
    executor.complete(done.job_id, done.lease, result, brokered=[used, astray])
    executor.fail(failed.job_id, failed.lease, state="failed", error="boom", brokered=[used])
    events = [e for e in world.secrets.log() if e.event == "brokered"]
    assert sorted((e.job, e.actor) for e in events) == sorted(
        [(done.job_id, "executor:ex-a"), (failed.job_id, "executor:ex-b")]
    )
    for event in events:
        assert (event.name, event.namespace, event.version, event.count) == (
            "TOKEN",
            "user:alice",
            1,
            4,
        )
        assert event.detail == "used for api.github.com (3), github.com (1)"
    # A report that is not one is refused whole, before the job's end is written.
    (other,) = alice.submit(
        Bundle.from_spec_file(write_spec(tmp_path / "two", SPEC_PLAIN)), "user:alice"
    )["jobs"]
    claimed = executor.claim("ex-a")
    assert claimed is not None and claimed.job_id == other["id"]
    with pytest.raises(RunnerError):
        executor.complete(claimed.job_id, claimed.lease, result, brokered=[{**used, "hosts": {}}])
    assert alice.job_show(claimed.job_id)["state"] == "processing"
