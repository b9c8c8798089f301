"""The web pages over HTTP: sessions, CSRF, permissions, validation, no value in any answer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from runner.errors import SecretValidationError
from runner.secrets.names import check_name, check_scope, check_value, normalize_name
from runner.secrets.value import Secret
from runner.web.account import safe_next
from runner.web.session import COOKIE_NAME, SessionStore
from tests.test_queue_support import fresh_postgres_database, leaks
from tests.web_support import (
    ALICE_VALUE,
    GLOBAL_VALUE,
    NEW_VALUE,
    ORG_VALUE,
    SPEC_USING_TOKEN,
    WebWorld,
    changeset_result,
    csrf_of,
    event,
    output,
)

VALUES = (GLOBAL_VALUE, ALICE_VALUE, ORG_VALUE, NEW_VALUE)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WebWorld]:
    if request.param == "sqlite":
        w = WebWorld(f"sqlite:///{tmp_path / 'state.db'}", tmp_path)
        yield w
        w.close()
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        w = WebWorld(url, tmp_path)
        yield w
        w.close()


@pytest.fixture
def sqlite_world(tmp_path: Path) -> Iterator[WebWorld]:
    w = WebWorld(f"sqlite:///{tmp_path / 'state.db'}", tmp_path)
    yield w
    w.close()


def assert_no_leak(response: httpx.Response) -> None:
    raw = response.content + repr(dict(response.headers)).encode()
    for value in VALUES:
        assert leaks(value, raw) == [], (response.request.url, value)


def field_error(html: str, field: str) -> str:
    found = re.search(rf'<p id="{field}-error" class="field-error">(.*?)</p>', html, re.S)
    assert found is not None, f"no error shown next to {field}"
    import html as html_module

    return html_module.unescape(found.group(1))


def cli_words(check: object, *args: object) -> str:
    """What the CLI prints after ``error:`` for the same validation."""
    try:
        check(*args)  # type: ignore[operator]
    except SecretValidationError as exc:
        return str(exc)
    raise AssertionError("expected a validation error")


# Sessions ---------------------------------------------------------------------------------


def test_sign_in_keeps_the_token_on_the_server(sqlite_world: WebWorld) -> None:
    http = sqlite_world.client()
    page = http.get("/sign-in")
    assert page.status_code == 200
    assert 'type="password"' in page.text and 'for="token"' in page.text
    answer = http.post(
        "/sign-in",
        data={"token": sqlite_world.token["alice"], "csrf_token": csrf_of(page.text)},
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/secrets"
    (cookie,) = [c for c in answer.headers.get_list("set-cookie") if c.startswith(COOKIE_NAME)]
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes
    assert sqlite_world.token["alice"] not in cookie
    session_id = cookie.split(";")[0].split("=", 1)[1]
    assert len(session_id) >= 40
    home = http.get("/secrets")
    assert home.status_code == 200 and "Signed in as <strong>alice</strong>" in home.text
    for response in (page, answer, home):
        assert sqlite_world.token["alice"] not in response.text
        assert sqlite_world.token["alice"] not in repr(dict(response.headers))


def test_sign_in_refuses_bad_and_executor_tokens(sqlite_world: WebWorld) -> None:
    http = sqlite_world.client()
    for token, status, words in (
        ("rnr_not-a-token", 401, "the API token is unknown or revoked"),
        ("", 401, "no API token given"),
        (sqlite_world.token["exec"], 403, "executor tokens cannot use the user API"),
    ):
        page = http.get("/sign-in")
        answer = http.post("/sign-in", data={"token": token, "csrf_token": csrf_of(page.text)})
        assert answer.status_code == status
        assert words in field_error(answer.text, "token")
        assert COOKIE_NAME not in answer.headers.get("set-cookie", "")
    assert http.get("/secrets").status_code == 303


def test_pages_send_you_to_sign_in_and_back(sqlite_world: WebWorld) -> None:
    http = sqlite_world.client()
    answer = http.get("/secrets/user:alice")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/sign-in?next=%2Fsecrets%2Fuser%3Aalice"
    page = http.get(answer.headers["location"])
    assert 'name="next" value="/secrets/user:alice"' in page.text
    signed = http.post(
        "/sign-in",
        data={
            "token": sqlite_world.token["alice"],
            "csrf_token": csrf_of(page.text),
            "next": "/secrets/user:alice",
        },
    )
    assert signed.headers["location"] == "/secrets/user:alice"
    assert http.get("/jobs/job_x/log.json").status_code == 404
    for target in ("//evil.example/x", "https://evil.example", "/\\evil", "", None, "/ok\r\nx"):
        assert safe_next(target) == "/secrets"
    assert safe_next("/jobs/job_1") == "/jobs/job_1"


def test_sign_out_ends_the_session_even_for_a_replayed_cookie(sqlite_world: WebWorld) -> None:
    http = sqlite_world.signed_in("alice")
    session_id = http.cookies[COOKIE_NAME]
    page = http.get("/secrets")
    out = http.post("/sign-out", data={"csrf_token": csrf_of(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/sign-in?signed_out=1"
    assert "You are signed out." in http.get("/sign-in?signed_out=1").text
    replay = sqlite_world.client()
    replay.cookies.set(COOKIE_NAME, session_id)
    assert replay.get("/secrets").status_code == 303
    assert replay.get("/jobs/job_x/log.json").status_code == 401


def test_a_revoked_token_ends_its_sessions(sqlite_world: WebWorld) -> None:
    http = sqlite_world.signed_in("alice")
    assert http.get("/secrets").status_code == 200
    (record,) = [t for t in sqlite_world.tokens.list() if t.owner == "alice"]
    sqlite_world.tokens.revoke(record.id)
    assert http.get("/secrets").status_code == 303


def test_sessions_expire_and_get_new_ids() -> None:
    now = [1000.0]
    store = SessionStore(idle_s=60, max_age_s=300, clock=lambda: now[0])
    first, _ = store.create(token_id="tok_a", user="alice")
    second, _ = store.create(token_id="tok_a", user="alice")
    assert first != second and len(store) == 2
    now[0] += 59
    assert store.get(first) is not None
    now[0] += 41
    assert store.get(second) is None  # idle for 100 s
    assert store.get(first) is not None  # idle for 41 s
    for _ in range(4):
        now[0] += 50
        assert store.get(first) is not None
    now[0] += 50
    assert store.get(first) is None  # older than max_age_s, however busy
    assert store.get(None) is None and store.get("unknown") is None
    session = store.create(token_id="tok_a", user="alice")[1]
    assert session.csrf not in repr(session) and session.key not in repr(session)


# CSRF -------------------------------------------------------------------------------------


def test_form_posts_without_the_csrf_token_are_refused(sqlite_world: WebWorld) -> None:
    world = sqlite_world
    world.set_secret("alice", "TOKEN", "user:alice", ALICE_VALUE)
    job_id = world.submit("alice", "user:alice")
    alice = world.signed_in("alice")
    other = world.signed_in("alice")  # another session of the same user
    good = csrf_of(alice.get("/secrets").text)
    foreign = csrf_of(other.get("/secrets").text)
    posts = [
        ("/secrets/user:alice", {"name": "FORGED", "value": NEW_VALUE}),
        ("/secrets/user:alice/TOKEN/update", {"value": NEW_VALUE}),
        ("/secrets/user:alice/TOKEN/remove", {}),
        (f"/jobs/{job_id}/cancel", {}),
        ("/sign-out", {}),
    ]
    for path, data in posts:
        for token in (None, "", "x" * 43, foreign):
            body = dict(data) if token is None else {**data, "csrf_token": token}
            answer = alice.post(path, data=body)
            assert answer.status_code == 403, (path, token)
            assert "the form was refused" in answer.text
        # The right token, but sent from another origin (another port is another origin).
        for headers in (
            {"Origin": "http://127.0.0.1:9"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "same-site"},
            {"Sec-Fetch-Site": "cross-site"},
        ):
            answer = alice.post(path, data={**data, "csrf_token": good}, headers=headers)
            assert answer.status_code == 403, (path, headers)
    assert world.secrets.get("FORGED", "user:alice") is None
    meta = world.secrets.get("TOKEN", "user:alice")
    assert meta is not None and meta.version == 1
    assert world.jobs.get(job_id).state == "queued"  # type: ignore[union-attr]
    assert alice.get("/secrets").status_code == 200  # still signed in
    # With the token and from our own origin, the same post works.
    answer = alice.post(
        "/secrets/user:alice",
        data={"name": "FORGED", "value": NEW_VALUE, "csrf_token": good},
        headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
    )
    assert answer.status_code == 303


def test_sign_in_needs_its_own_csrf_cookie(sqlite_world: WebWorld) -> None:
    attacker = sqlite_world.client()
    token = csrf_of(attacker.get("/sign-in").text)
    victim = sqlite_world.client()
    answer = victim.post("/sign-in", data={"token": sqlite_world.token["bob"], "csrf_token": token})
    assert answer.status_code == 403
    assert COOKIE_NAME not in answer.headers.get("set-cookie", "")


# Permissions ------------------------------------------------------------------------------


def test_permissions_are_the_apis(world: WebWorld) -> None:
    world.set_secret("carol", "TOKEN", "global", GLOBAL_VALUE)
    world.set_secret("alice", "TOKEN", "org:acme", ORG_VALUE)
    world.set_secret("alice", "MINE", "user:alice", ALICE_VALUE)
    pages = {
        "carol": world.signed_in("carol"),
        "alice": world.signed_in("alice"),
        "bob": world.signed_in("bob"),
        "dave": world.signed_in("dave"),
    }
    may = {
        "carol": {"global", "org:acme", "user:alice", "user:bob"},
        "alice": {"org:acme", "user:alice"},
        "dave": {"org:acme", "user:dave"},
        "bob": {"user:bob"},
    }
    listed = {
        "carol": {"global", "org:acme", "user:carol"},
        "alice": {"org:acme", "user:alice"},
        "dave": {"org:acme", "user:dave"},
        "bob": {"user:bob"},
    }
    for who, http in pages.items():
        index = http.get("/secrets").text
        assert set(re.findall(r'href="/secrets/([^"/]+)"', index)) == listed[who]
        for ns in ("global", "org:acme", "user:alice", "user:bob"):
            answer = http.get(f"/secrets/{ns}")
            expected = 200 if ns in may[who] else 403
            assert answer.status_code == expected, (who, ns)
            if expected == 403:
                assert f"{who} may not change secrets in {ns}" in answer.text
                assert ORG_VALUE not in answer.text and "MINE" not in answer.text
    # A non-member's forged-looking but well-formed posts: the server itself refuses.
    bob = pages["bob"]
    token = csrf_of(bob.get("/secrets").text)
    refused = [
        bob.post("/secrets/org:acme", data={"csrf_token": token, "name": "X1", "value": NEW_VALUE}),
        bob.post("/secrets/org:acme", data={"csrf_token": token, "name": "bad-", "value": "x"}),
        bob.post("/secrets/org:acme/TOKEN/update", data={"csrf_token": token, "value": NEW_VALUE}),
        bob.post("/secrets/org:acme/TOKEN/remove", data={"csrf_token": token}),
        bob.post("/secrets/global", data={"csrf_token": token, "name": "X2", "value": NEW_VALUE}),
        bob.get("/secrets/org:acme/TOKEN/log"),
        bob.get("/secrets/org:acme/TOKEN/update"),
        bob.get("/secrets/org:acme/TOKEN/remove"),
    ]
    for answer in refused:
        assert answer.status_code == 403, answer.request.url
        assert "data-secret=" not in answer.text and "v1" not in answer.text
    org_secret = world.secrets.get("TOKEN", "org:acme")
    assert org_secret is not None and org_secret.version == 1
    assert world.secrets.get("X1", "org:acme") is None and world.secrets.get("X2", "global") is None
    denied = [e for e in world.secrets.log() if e.event == "denied" and e.actor == "bob"]
    assert {e.namespace for e in denied} >= {"org:acme", "global"}
    # The JSON API refuses bob the same way.
    api = world.client().get(
        "/api/secrets?namespace=org:acme",
        headers={"Authorization": f"Bearer {world.token['bob']}"},
    )
    assert api.status_code == 403
    # An org member manages the org's secrets.
    dave = pages["dave"]
    token = csrf_of(dave.get("/secrets/org:acme").text)
    answer = dave.post(
        "/secrets/org:acme/TOKEN/update", data={"csrf_token": token, "value": NEW_VALUE}
    )
    assert answer.status_code == 303
    updated = world.secrets.get("TOKEN", "org:acme")
    assert updated is not None and updated.version == 2 and updated.updated_by == "dave"


def test_the_admin_manages_global_secrets(sqlite_world: WebWorld) -> None:
    world = sqlite_world
    carol = world.signed_in("carol")
    token = csrf_of(carol.get("/secrets/global").text)
    added = carol.post(
        "/secrets/global", data={"csrf_token": token, "name": "GITHUB_TOKEN", "value": GLOBAL_VALUE}
    )
    assert added.status_code == 303 and added.headers["location"] == "/secrets/global"
    page = carol.get("/secrets/global")
    assert "Created GITHUB_TOKEN in global, version 1." in page.text
    assert 'data-secret="GITHUB_TOKEN"' in page.text
    assert "Created" not in carol.get("/secrets/global").text  # a notice shows once
    form = carol.get("/secrets/global/GITHUB_TOKEN/update")
    assert "Cached executions that used the current value are invalidated" in form.text
    assert 'type="password"' in form.text and 'value=""' not in form.text.split("secret-value")[1]
    updated = carol.post(
        "/secrets/global/GITHUB_TOKEN/update", data={"csrf_token": token, "value": NEW_VALUE}
    )
    assert updated.status_code == 303
    page = carol.get("/secrets/global")
    assert "Updated GITHUB_TOKEN in global to version 2." in page.text
    assert "invalidated" in page.text
    (before, actor) = world.changes[-1]
    assert before is not None and before.version == 1 and actor == "carol"
    confirm = carol.get("/secrets/global/GITHUB_TOKEN/remove")
    assert "Remove <code>GITHUB_TOKEN</code>?" in confirm.text
    assert ">Remove GITHUB_TOKEN</button>" in confirm.text
    removed = carol.post("/secrets/global/GITHUB_TOKEN/remove", data={"csrf_token": token})
    assert removed.status_code == 303
    assert "Removed GITHUB_TOKEN in global." in carol.get("/secrets/global").text
    assert world.secrets.get("GITHUB_TOKEN", "global") is None
    log_page = carol.get("/secrets/global/GITHUB_TOKEN/log")
    assert log_page.status_code == 200
    assert re.findall(r'<tr class="event-(\w+)">', log_page.text) == [
        "deleted",
        "updated",
        "created",
    ]
    missing = carol.get("/secrets/global/GITHUB_TOKEN/update")
    assert missing.status_code == 404 and "no secret GITHUB_TOKEN in global" in missing.text


def test_validation_errors_use_the_clis_words(sqlite_world: WebWorld) -> None:
    world = sqlite_world
    alice = world.signed_in("alice")
    token = csrf_of(alice.get("/secrets/user:alice").text)
    answer = alice.post(
        "/secrets/user:alice",
        data={"csrf_token": token, "name": "bad-name", "value": "short", "scope": "nope"},
    )
    assert answer.status_code == 422
    assert field_error(answer.text, "secret-name") == cli_words(normalize_name, "bad-name")
    assert field_error(answer.text, "secret-value") == cli_words(check_value, Secret("short"))
    assert field_error(answer.text, "secret-scope") == cli_words(check_scope, "nope")
    assert 'value="bad-name"' in answer.text  # the name is kept, the value never
    assert "short" not in answer.text.replace("shorter", "")
    assert 'aria-invalid="true"' in answer.text
    for name, words in (
        ("RUNNER_X", cli_words(normalize_name, "RUNNER_X")),
        ("LD_PRELOAD", cli_words(normalize_name, "LD_PRELOAD")),
        ("", cli_words(normalize_name, "")),
        ("lower_case", cli_words(check_name, "lower_case")),  # never upper-cased silently
    ):
        answer = alice.post(
            "/secrets/user:alice", data={"csrf_token": token, "name": name, "value": ALICE_VALUE}
        )
        assert answer.status_code == 422
        assert field_error(answer.text, "secret-name") == words
        assert_no_leak(answer)
    big = "v" * (48 * 1024 + 1)
    answer = alice.post(
        "/secrets/user:alice", data={"csrf_token": token, "name": "BIG", "value": big}
    )
    assert field_error(answer.text, "secret-value") == cli_words(check_value, Secret(big))
    world.set_secret("alice", "TOKEN", "user:alice", ALICE_VALUE)
    answer = alice.post(
        "/secrets/user:alice", data={"csrf_token": token, "name": "TOKEN", "value": NEW_VALUE}
    )
    assert answer.status_code == 422
    assert "secret TOKEN already exists in user:alice — use Update" in field_error(
        answer.text, "secret-name"
    )
    answer = alice.post(
        "/secrets/user:alice/TOKEN/update", data={"csrf_token": token, "value": "tiny"}
    )
    assert answer.status_code == 422
    assert field_error(answer.text, "secret-value") == cli_words(check_value, Secret("tiny"))
    meta = world.secrets.get("TOKEN", "user:alice")
    assert meta is not None and meta.version == 1
    assert alice.get("/secrets/user:alice/bad-name/log").status_code == 422
    assert alice.get("/secrets/nonsense").status_code == 400


def test_overrides_are_marked(sqlite_world: WebWorld) -> None:
    world = sqlite_world
    world.set_secret("carol", "TOKEN", "global", GLOBAL_VALUE)
    world.set_secret("carol", "OTHER", "global", GLOBAL_VALUE)
    alice = world.signed_in("alice")
    page = alice.get("/secrets/user:alice").text
    assert "overrides global" not in page
    assert page.count('class="inherited"') == 2
    world.set_secret("alice", "TOKEN", "user:alice", ALICE_VALUE)
    page = alice.get("/secrets/user:alice").text
    row = page.split('data-secret="TOKEN"')[1].split("</tr>")[0]
    assert "overrides global" in row
    assert page.count('class="inherited"') == 1  # OTHER only: TOKEN's global is overridden


# Values never leave ------------------------------------------------------------------------


def test_no_page_or_answer_holds_a_value(sqlite_world: WebWorld) -> None:
    world = sqlite_world
    seen: list[httpx.Response] = []

    def visit(http: TestClient, method: str, path: str, **kwargs: object) -> httpx.Response:
        answer: httpx.Response = http.request(method, path, **kwargs)  # type: ignore[arg-type]
        seen.append(answer)
        return answer

    carol, alice = world.signed_in("carol"), world.signed_in("alice")
    for http, ns, name, value in (
        (carol, "global", "TOKEN", GLOBAL_VALUE),
        (alice, "org:acme", "TOKEN", ORG_VALUE),
        (alice, "user:alice", "TOKEN", ALICE_VALUE),
    ):
        token = csrf_of(visit(http, "GET", f"/secrets/{ns}").text)
        visit(
            http, "POST", f"/secrets/{ns}", data={"csrf_token": token, "name": name, "value": value}
        )
        visit(
            http, "POST", f"/secrets/{ns}", data={"csrf_token": token, "name": "x-", "value": value}
        )
        visit(
            http, "POST", f"/secrets/{ns}", data={"csrf_token": token, "name": name, "value": value}
        )
        visit(http, "GET", f"/secrets/{ns}")
        visit(http, "GET", f"/secrets/{ns}/{name}/update")
        visit(
            http,
            "POST",
            f"/secrets/{ns}/{name}/update",
            data={"csrf_token": token, "value": NEW_VALUE[:5]},
        )
        visit(http, "GET", f"/secrets/{ns}/{name}/log")
        visit(http, "GET", f"/secrets/{ns}/{name}/remove")
    job_id = world.submit("alice", "user:alice", SPEC_USING_TOKEN)
    claimed = world.claim()
    assert claimed.secrets  # the executor got the value: the pages never do
    world.append(
        claimed, 0, [output(1, "token is [REDACTED:TOKEN]"), event("step.started", step=1)]
    )
    world.complete(claimed, changeset_result())
    for path in (
        "/jobs",
        f"/jobs/{job_id}",
        f"/jobs/{job_id}/log.json",
        "/secrets/user:alice/TOKEN/log",
        "/secrets",
        "/api/secrets",
        "/static/log.js",
    ):
        visit(alice, "GET", path)
    visit(alice, "POST", "/sign-out", data={"csrf_token": csrf_of(seen[-3].text)})
    assert len(seen) > 30
    for answer in seen:
        assert answer.status_code < 500, answer.request.url
        assert_no_leak(answer)
    log_page = alice.get("/secrets/user:alice/TOKEN/log")
    assert log_page.status_code == 303  # signed out


# Jobs ---------------------------------------------------------------------------------------


def test_jobs_pages_show_only_what_one_may_see(world: WebWorld) -> None:
    world.set_secret("alice", "TOKEN", "user:alice", ALICE_VALUE)
    mine = world.submit("alice", "user:alice", SPEC_USING_TOKEN)
    orgs = world.submit("dave", "org:acme")
    alice, bob, dave, carol = (world.signed_in(w) for w in ("alice", "bob", "dave", "carol"))
    listed = {
        who: set(re.findall(r'data-job="([^"]+)"', http.get("/jobs").text))
        for who, http in (("alice", alice), ("bob", bob), ("dave", dave), ("carol", carol))
    }
    assert listed == {
        "alice": {mine, orgs},
        "bob": set(),
        "dave": {orgs},
        "carol": {mine, orgs},
    }
    for path in (f"/jobs/{mine}", f"/jobs/{mine}/log.json"):
        answer = bob.get(path)
        assert answer.status_code == 403
        assert "bob may not see jobs in user:alice" in answer.text
    token = csrf_of(bob.get("/jobs").text)
    assert bob.post(f"/jobs/{mine}/cancel", data={"csrf_token": token}).status_code == 403
    assert world.jobs.get(mine).state == "queued"  # type: ignore[union-attr]
    assert alice.get("/jobs/job_missing").status_code == 404


def test_a_job_page_shows_its_log_steps_changesets_and_cancels(sqlite_world: WebWorld) -> None:
    world = sqlite_world
    world.set_secret("alice", "TOKEN", "user:alice", ALICE_VALUE)
    job_id = world.submit("alice", "user:alice", SPEC_USING_TOKEN)
    claimed = world.claim()
    world.append(
        claimed,
        0,
        [
            event("step.started", step=1),
            output(1, "using [REDACTED:TOKEN] to <push>"),
            output(1, "warning: slow", "stderr"),
        ],
    )
    alice = world.signed_in("alice")
    page = alice.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    assert 'id="job-state" class="state state-processing">processing<' in page.text
    assert '<span class="redacted">[REDACTED:TOKEN]</span> to &lt;push&gt;' in page.text
    assert '<div class="line stderr">step 1 stderr: warning: slow</div>' in page.text
    assert 'data-terminal="false"' in page.text and 'id="log-refresh"' in page.text
    assert '<script src="/static/log.js" defer></script>' in page.text
    cursor = int(re.search(r'data-next="(\d+)"', page.text).group(1))  # type: ignore[union-attr]
    assert cursor > 0
    polled = alice.get(f"/jobs/{job_id}/log.json", params={"after": cursor}).json()
    assert polled["lines"] == [] and polled["state"] == "processing" and not polled["terminal"]
    world.append(
        claimed,
        1,
        [output(1, "more [REDACTED:TOKEN]"), event("step.finished", step=1, exit_code=0)],
    )
    polled = alice.get(f"/jobs/{job_id}/log.json", params={"after": cursor}).json()
    assert [ln["text"] for ln in polled["lines"]] == [
        "step 1 stdout: more [REDACTED:TOKEN]",
        "step.finished step=1 exit_code=0",
    ]
    assert polled["next"] > cursor
    world.coordinator.record_step(
        world.principal("exec"),
        job_id,
        lease=claimed.lease.token,
        step=1,
        status="finished",
        exit_code=0,
    )
    world.complete(claimed, changeset_result())
    page = alice.get(f"/jobs/{job_id}")
    assert "state-completed" in page.text and 'data-terminal="true"' in page.text
    assert 'id="cancel-job"' not in page.text and 'id="log-refresh"' not in page.text
    assert "refs/heads/plain" in page.text and "+hi" in page.text
    assert re.search(r"<td>1</td><td>1</td><td>finished</td><td>0</td>", page.text)
    final = alice.get(f"/jobs/{job_id}/log.json", params={"after": polled["next"]}).json()
    assert final["terminal"] and final["state"] == "completed"
    # The access log names the job that decrypted the secret, with a link to it.
    log_page = alice.get("/secrets/user:alice/TOKEN/log").text
    row = log_page.split('<tr class="event-accessed">')[1].split("</tr>")[0]
    assert "executor:ex1" in row and f'href="/jobs/{job_id}"' in row
    # Cancel: a queued job at once.
    waiting = world.submit("alice", "user:alice")
    token = csrf_of(page.text)
    answer = alice.post(f"/jobs/{waiting}/cancel", data={"csrf_token": token})
    assert answer.status_code == 303 and answer.headers["location"] == f"/jobs/{waiting}"
    page = alice.get(f"/jobs/{waiting}")
    assert f"Job {waiting} canceled." in page.text and "state-canceled" in page.text


def test_pages_carry_security_headers(sqlite_world: WebWorld) -> None:
    alice = sqlite_world.signed_in("alice")
    for path in ("/sign-in", "/secrets", "/jobs", "/secrets/global"):
        answer = alice.get(path)
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-content-type-options"] == "nosniff"
    script = alice.get("/static/log.js")
    assert script.status_code == 200 and "fetch(" in script.text
    assert script.headers["x-content-type-options"] == "nosniff"
    assert alice.get("/static/style.css").status_code == 200
    assert "<script>" not in alice.get("/secrets").text  # no inline scripts: the CSP forbids them


def test_mounting_twice_keeps_one_set_of_routes(sqlite_world: WebWorld) -> None:
    from runner.web import mount_web

    before = len(sqlite_world.app.routes)
    sessions = SessionStore()
    mount_web(sqlite_world.app, sqlite_world.coordinator, sessions=sessions, poll_interval_s=3)
    assert len(sqlite_world.app.routes) == before
    assert sqlite_world.app.state.web.sessions is sessions
    assert sqlite_world.app.state.web.poll_interval_s == 3
