"""Helpers for the web pages' tests: a coordinator with the pages, signed-in clients,
jobs with logs, a live server in a thread and Debian's Chromium (no tests here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from runner.namespaces import parse_namespace
from runner.queue.bundle import Bundle
from runner.queue.service import ClaimedJob, Coordinator
from runner.queue.tokens import Principal
from runner.secrets.models import SecretMeta
from runner.secrets.value import Secret
from tests.test_queue_support import (
    SPEC_PLAIN,
    ManualClock,
    make_repos,
    write_spec,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

GLOBAL_VALUE = "glob-site-4711-0815-value"
ALICE_VALUE = "alice-own-1234-5678-value"
ORG_VALUE = "org-acme-2468-1357-value"
NEW_VALUE = "rotated-9999-8888-value"

SPEC_USING_TOKEN = SPEC_PLAIN.replace(
    "    container: runner-test/busybox:latest\n",
    "    container: runner-test/busybox:latest\n    env:\n      - TOKEN\n",
)

_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF_RE.search(html)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)


class WebWorld:
    """A coordinator over SQL stores with the API and the pages mounted.

    Users: carol (site admin), alice (member of org acme), bob (no org), dave
    (member of acme); one executor token. Repositories github.com/acme/one and two.
    """

    def __init__(self, db_url: str, root: Path, *, poll_interval_s: float = 0.2) -> None:
        from runner.db import connect
        from runner.queue.server import create_app
        from runner.queue.service import CoordinatorSettings
        from runner.queue.store import SqlJobStore
        from runner.queue.tokens import SqlTokenStore
        from runner.secrets.crypto import Keyring, new_master_key
        from runner.secrets.store import SqlSecretStore
        from runner.users.sql import SqlUserDirectory

        self.root = root
        self.repos_root = make_repos(root / "repos")
        self.clock = ManualClock()
        self.db = connect(db_url)
        self.secrets = SqlSecretStore(self.db, Keyring([new_master_key()]))
        self.jobs = SqlJobStore(self.db)
        self.tokens = SqlTokenStore(self.db)
        self.users = SqlUserDirectory(self.db)
        self.users.add_user("carol", admin=True)
        self.users.add_user("alice")
        self.users.add_user("bob")
        self.users.add_user("dave")
        self.users.add_member("acme", "alice")
        self.users.add_member("acme", "dave")
        self.token = {
            who: self.tokens.create("user", who)[1] for who in ("carol", "alice", "bob", "dave")
        }
        self.token["exec"] = self.tokens.create("executor", "ex1")[1]
        self.changes: list[tuple[SecretMeta | None, str]] = []
        self.coordinator = Coordinator(
            jobs=self.jobs,
            tokens=self.tokens,
            secrets=self.secrets,
            users=self.users,
            settings=CoordinatorSettings(repos_root=self.repos_root),
            cache=None,
            on_secret_change=lambda before, actor: self.changes.append((before, actor)),
        )
        self.app = create_app(self.coordinator, poll_interval_s=poll_interval_s)
        self._clients: list[TestClient] = []

    def principal(self, who: str) -> Principal:
        return self.coordinator.authenticate(self.token[who])

    def client(self) -> TestClient:
        """A fresh, signed-out browser-like client (its own cookie jar)."""
        http = TestClient(self.app, base_url="http://testserver", follow_redirects=False)
        self._clients.append(http)
        return http

    def signed_in(self, who: str) -> TestClient:
        http = self.client()
        page = http.get("/sign-in")
        answer = http.post(
            "/sign-in", data={"token": self.token[who], "csrf_token": csrf_of(page.text)}
        )
        assert answer.status_code == 303, answer.text
        return http

    def set_secret(self, who: str, name: str, namespace: str, value: str) -> SecretMeta:
        meta, _ = self.coordinator.set_secret(
            self.principal(who),
            name=name,
            namespace=parse_namespace(namespace),
            value=Secret(value),
            scope=None,
        )
        return meta

    # Jobs -------------------------------------------------------------------------------

    def submit(self, who: str, namespace: str, spec: str = SPEC_PLAIN) -> str:
        folder = self.root / f"spec-{time.monotonic_ns()}"
        bundle = Bundle.from_spec_file(write_spec(folder, spec))
        _, records = self.coordinator.submit(
            self.principal(who), bundle=bundle.to_json(), namespace=parse_namespace(namespace)
        )
        return records[0].id

    def claim(self) -> ClaimedJob:
        claimed = self.coordinator.claim(self.principal("exec"), executor="ex1")
        assert claimed is not None
        return claimed

    def append(self, claimed: ClaimedJob, seq: int, lines: Sequence[dict[str, Any]]) -> None:
        text = "".join(json.dumps(line) + "\n" for line in lines)
        self.coordinator.append_logs(
            self.principal("exec"),
            claimed.lease.job.id,
            lease=claimed.lease.token,
            chunks=[(seq, text)],
        )

    def complete(self, claimed: ClaimedJob, result: dict[str, Any]) -> None:
        self.coordinator.complete(
            self.principal("exec"), claimed.lease.job.id, lease=claimed.lease.token, result=result
        )

    def close(self) -> None:
        for http in self._clients:
            http.close()
        self.db.close()


def output(step: int, line: str, stream: str = "stdout") -> dict[str, Any]:
    return {
        "event": "step.output",
        "time": "2030-01-01T00:00:00Z",
        "step": step,
        "stream": stream,
        "line": line,
    }


def event(name: str, **fields: Any) -> dict[str, Any]:
    return {"event": name, "time": "2030-01-01T00:00:00Z", **fields}


def changeset_result(repository: str = "github.com/acme/one") -> dict[str, Any]:
    diff = "diff --git a/file.txt b/file.txt\nnew file mode 100644\n--- /dev/null\n+++ b/file.txt\n@@ -0,0 +1 @@\n+hi\n"
    return {
        "status": "changed",
        "repository": repository,
        "changesets": [
            {
                "baseRepository": repository,
                "baseRef": "refs/heads/main",
                "headRepository": repository,
                "headRef": "refs/heads/plain",
                "title": "Plain",
                "body": "Says hi",
                "published": False,
                "commits": [{"message": "plain", "diff": diff}],
            }
        ],
    }


# A live server and a browser -----------------------------------------------------------


class RecordingApp:
    """An ASGI wrapper that keeps every response (status line, headers, body) it sends."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.responses: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parts: list[bytes] = []

        async def recording_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                parts.append(str(message["status"]).encode())
                parts.extend(k + b": " + v for k, v in message.get("headers", []))
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            with self._lock:
                self.responses.append((scope["path"], b"\n".join(parts)))


class LiveServer:
    """The app served by uvicorn in a thread, on a port the kernel picked."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_config=None, lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the live server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


def require_chromium() -> str:
    if os.path.exists(CHROMIUM) or shutil.which("chromium"):
        return CHROMIUM if os.path.exists(CHROMIUM) else str(shutil.which("chromium"))
    message = (
        "Debian's chromium is not installed; `make test` installs it (scripts/ensure-browser.sh)"
    )
    if os.environ.get("RUNNER_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")


@contextmanager
def chromium() -> Iterator[Any]:
    """Chromium through Playwright; each launch gets a fresh temporary profile."""
    from playwright.sync_api import sync_playwright

    executable = require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


# Screenshots for docs/ -------------------------------------------------------------------

SPEC_DEMO = """\
name: bump-lodash
description: Update lodash everywhere
on:
  - repository: github.com/acme/one
  - repository: github.com/acme/two
steps:
  - run: npm install lodash@4.17.21 && git add -A
    container: runner-test/busybox:latest
    env:
      - GITHUB_TOKEN
changesetTemplate:
  title: Update lodash to 4.17.21
  body: Fixes CVE-2021-23337.
  branch: bump-lodash
  commit:
    message: Update lodash to 4.17.21
"""

SHOTS = (
    "sign-in",
    "secrets-index",
    "secrets-global",
    "secrets-user-override",
    "secrets-org",
    "secret-add-errors",
    "secret-update",
    "secret-remove",
    "secret-access-log",
    "jobs",
    "job-live-log",
    "job-changesets",
    "org-refused",
)


def demo_world(root: Path) -> tuple[WebWorld, dict[str, str]]:
    """Secrets in every namespace, jobs in every state, accesses on record."""
    world = WebWorld(f"sqlite:///{root / 'demo.db'}", root, poll_interval_s=0.5)
    world.set_secret("carol", "GITHUB_TOKEN", "global", GLOBAL_VALUE)
    world.set_secret("carol", "NPM_TOKEN", "global", GLOBAL_VALUE + "-npm")
    world.set_secret("carol", "SRC_ACCESS_TOKEN", "global", GLOBAL_VALUE + "-src")
    world.set_secret("alice", "GITHUB_TOKEN", "user:alice", ALICE_VALUE)
    world.set_secret("alice", "GITHUB_TOKEN", "user:alice", NEW_VALUE)
    world.set_secret("alice", "SENTRY_DSN", "user:alice", ALICE_VALUE + "-sentry")
    world.set_secret("alice", "DEPLOY_KEY", "org:acme", ORG_VALUE)
    world.set_secret("dave", "SLACK_WEBHOOK", "org:acme", ORG_VALUE + "-slack")
    done_id = world.submit("alice", "user:alice", SPEC_DEMO)
    done = world.claim()
    world.append(
        done,
        0,
        [
            event("step.started", step=1),
            output(1, "added 1 package, changed 1 package in 2s"),
            event("step.finished", step=1, exit_code=0),
        ],
    )
    result = changeset_result("github.com/acme/one")
    result["changesets"][0].update(
        title="Update lodash to 4.17.21",
        body="Fixes CVE-2021-23337.",
        headRef="refs/heads/bump-lodash",
        commits=[
            {
                "message": "Update lodash to 4.17.21",
                "diff": (
                    "diff --git a/package.json b/package.json\n--- a/package.json\n"
                    '+++ b/package.json\n@@ -3,1 +3,1 @@\n-    "lodash": "4.17.15"\n'
                    '+    "lodash": "4.17.21"\n'
                ),
            }
        ],
    )
    world.complete(done, result)
    live = world.claim()
    world.append(
        live,
        0,
        [
            event("step.started", step=1),
            output(1, "npm config set //registry.npmjs.org/:_authToken [REDACTED:GITHUB_TOKEN]"),
            output(1, "npm WARN deprecated request@2.88.2", "stderr"),
            output(1, "fetching https://[REDACTED:GITHUB_TOKEN]@github.com/acme/two"),
        ],
    )
    world.submit("dave", "org:acme")
    return world, {"done": done_id, "live": live.lease.job.id}


def take_screenshots(out: Path, browser: Any = None) -> list[Path]:
    """Every page, as a PNG under ``out``; values never appear in any of them."""
    import tempfile

    if browser is None:
        with chromium() as launched:
            return take_screenshots(out, launched)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="runner-shots-") as tmp:
        world, jobs = demo_world(Path(tmp))
        try:
            with LiveServer(world.app) as server:
                context = browser.new_context(
                    base_url=server.url, viewport={"width": 1360, "height": 760}
                )
                page = context.new_page()

                def shot(name: str, *, full: bool = True) -> None:
                    assert name in SHOTS
                    path = out / f"{name}.png"
                    page.screenshot(path=str(path), full_page=full)
                    written.append(path)

                def sign_in(who: str) -> None:
                    page.goto("/sign-in")
                    page.get_by_label("API token").fill(world.token[who])
                    page.get_by_role("button", name="Sign in").click()
                    page.wait_for_url("**/secrets")

                page.goto("/sign-in")
                shot("sign-in")
                sign_in("carol")
                shot("secrets-index")
                page.goto("/secrets/global")
                shot("secrets-global")
                page.get_by_role("button", name="Sign out").click()
                sign_in("alice")
                page.goto("/secrets/user:alice")
                shot("secrets-user-override")
                page.goto("/secrets/org:acme")
                shot("secrets-org")
                page.goto("/secrets/user:alice")
                page.get_by_label("Name").fill("2FA-CODE")
                page.get_by_label("Value").fill("short")
                page.get_by_role("button", name="Add secret").click()
                page.locator("#add-heading").scroll_into_view_if_needed()
                shot("secret-add-errors")
                page.goto("/secrets/user:alice/GITHUB_TOKEN/update")
                shot("secret-update")
                page.goto("/secrets/user:alice/GITHUB_TOKEN/remove")
                shot("secret-remove")
                page.goto("/secrets/user:alice/GITHUB_TOKEN/log")
                shot("secret-access-log")
                page.goto("/jobs")
                shot("jobs")
                page.goto(f"/jobs/{jobs['live']}")
                page.wait_for_selector("#follow-status:has-text('Following the log live.')")
                shot("job-live-log")
                page.goto(f"/jobs/{jobs['done']}")
                page.get_by_text("Commit: Update lodash to 4.17.21").click()
                shot("job-changesets")
                page.get_by_role("button", name="Sign out").click()
                sign_in("bob")
                page.goto("/secrets/org:acme")
                shot("org-refused")
                context.close()
        finally:
            world.close()
    return written
