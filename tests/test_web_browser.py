"""The web pages in a real browser: Debian's Chromium driven by Playwright.

Each test gets its own coordinator (SQLite) served by uvicorn on a free port,
and a fresh browser context per user. Every response the browser receives,
and every page's final HTML, is checked for every form of every secret value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.test_queue_support import leaks
from tests.web_support import (
    ALICE_VALUE,
    GLOBAL_VALUE,
    NEW_VALUE,
    ORG_VALUE,
    SHOTS,
    SPEC_USING_TOKEN,
    LiveServer,
    RecordingApp,
    WebWorld,
    changeset_result,
    chromium,
    event,
    output,
    take_screenshots,
)

pytestmark = pytest.mark.slow

VALUES = (GLOBAL_VALUE, ALICE_VALUE, ORG_VALUE, NEW_VALUE)
TIMEOUT_MS = 10_000

expect.set_options(timeout=TIMEOUT_MS)

# Everything a keyboard user can reach, and how each is named for assistive technology.
FOCUSABLE = (
    'a[href], button, input:not([type="hidden"]), select, textarea, [tabindex]:not([tabindex="-1"])'
)
DESCRIBE_FOCUS = """(selector) => {
  const all = Array.from(document.querySelectorAll(selector))
    .filter((el) => el.offsetParent !== null || getComputedStyle(el).position === "fixed");
  const el = document.activeElement;
  if (!el || el === document.body) { return null; }
  let name = "";
  if (el.labels && el.labels.length) {
    name = Array.from(el.labels).map((l) => l.textContent).join(" ");
  } else {
    name = el.getAttribute("aria-label") || el.textContent || "";
    const by = el.getAttribute("aria-labelledby");
    if (by) { name = by.split(" ").map((id) => document.getElementById(id).textContent).join(" "); }
  }
  return {index: all.indexOf(el), count: all.length, tag: el.tagName.toLowerCase(),
          id: el.id, name: name.replace(/\\s+/g, " ").trim()};
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@dataclass
class Site:
    world: WebWorld
    url: str
    browser: Browser
    recorder: RecordingApp
    contexts: list[BrowserContext] = field(default_factory=list)
    pages: list[Page] = field(default_factory=list)

    def page(self, who: str | None = None, *, javascript: bool = True) -> Page:
        """A new browser context (own cookies), signed in as ``who`` through the form."""
        context = self.browser.new_context(base_url=self.url, java_script_enabled=javascript)
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        self.pages.append(page)
        if who is not None:
            page.goto("/sign-in")
            page.get_by_label("API token").fill(self.world.token[who])
            page.get_by_role("button", name="Sign in").click()
            expect(page).to_have_url(re.compile(r"/secrets$"))
        return page

    def check_no_value_leaked(self) -> None:
        """Every response the server sent, and every open page's final DOM."""
        assert self.recorder.responses
        for path, raw in self.recorder.responses:
            for value in VALUES:
                assert leaks(value, raw) == [], (path, value)
        for page in self.pages:
            if not page.is_closed():
                html = page.content().encode()
                for value in VALUES:
                    assert leaks(value, html) == [], (page.url, value)

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def site(browser: Browser, tmp_path: Path) -> Iterator[Site]:
    world = WebWorld(f"sqlite:///{tmp_path / 'state.db'}", tmp_path, poll_interval_s=0.2)
    recorder = RecordingApp(world.app)
    with LiveServer(recorder) as server:
        made = Site(world=world, url=server.url, browser=browser, recorder=recorder)
        try:
            yield made
            # A secret's value never appears in any page's HTML or any response.
            made.check_no_value_leaked()
        finally:
            made.close()
    world.close()


def notice(page: Page) -> Any:
    return page.locator("p.notice")


def tab_through(page: Page) -> list[dict[str, Any]]:
    """Press Tab from the top of a freshly loaded page until focus leaves or wraps."""
    seen: list[dict[str, Any]] = []
    for _ in range(120):
        page.keyboard.press("Tab")
        info = page.evaluate(DESCRIBE_FOCUS, FOCUSABLE)
        if info is None or (seen and info["index"] == seen[0]["index"]):
            break
        seen.append(info)
    return seen


def assert_keyboard_reachable(page: Page) -> list[dict[str, Any]]:
    """Every control is reached by Tab, and every one has a name."""
    seen = tab_through(page)
    assert seen, f"nothing focusable on {page.url}"
    count = seen[0]["count"]
    assert sorted({s["index"] for s in seen}) == list(range(count)), (page.url, seen)
    for item in seen:
        assert item["name"], f"unlabelled {item['tag']}#{item['id']} on {page.url}"
    return seen


def type_into_focused(page: Page, expected_id: str, text: str) -> None:
    assert page.evaluate("() => document.activeElement.id") == expected_id
    page.keyboard.type(text)


def tab_to(page: Page, element_id: str) -> None:
    for _ in range(80):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} is not reachable with Tab on {page.url}")


# Secrets --------------------------------------------------------------------------------------


def test_a_site_admin_adds_updates_and_removes_a_global_secret(site: Site) -> None:
    page = site.page("carol")
    page.get_by_role("link", name="Site admin › Executor secrets").click()
    expect(page).to_have_url(re.compile(r"/secrets/global$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Site admin › Executor secrets")
    expect(page.get_by_text("No secrets yet.")).to_be_visible()

    # Add, with the keyboard only.
    tab_to(page, "secret-name")
    type_into_focused(page, "secret-name", "GITHUB_TOKEN")
    page.keyboard.press("Tab")
    type_into_focused(page, "secret-value", GLOBAL_VALUE)
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "secret-scope"
    # How steps get it: the type, then the broker's hosts and form, all optional.
    for field_id in ("secret-type", "secret-broker-hosts", "secret-broker-as"):
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.id") == field_id
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Add secret"
    page.keyboard.press("Enter")
    expect(notice(page)).to_have_text("Created GITHUB_TOKEN in global, version 1.")
    row = page.locator('tr[data-secret="GITHUB_TOKEN"]')
    expect(row.locator("td").nth(0)).to_have_text("batches")
    expect(row.locator("td").nth(1)).to_have_text("env")
    expect(row.locator("td").nth(2)).to_have_text("v1")
    expect(row.locator("td").nth(4)).to_have_text("carol")
    expect(page.get_by_label("Value")).to_have_value("")

    # Update: a new value, with the cache warning.
    page.get_by_role("link", name="Update GITHUB_TOKEN").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Update GITHUB_TOKEN")
    expect(page.locator("#update-warning")).to_contain_text(
        "Cached executions that used the current value are invalidated"
    )
    value = page.get_by_label("New value")
    expect(value).to_have_attribute("type", "password")
    expect(value).to_have_value("")
    value.fill(NEW_VALUE)
    page.get_by_role("button", name="Update secret").click()
    expect(notice(page)).to_have_text(
        "Updated GITHUB_TOKEN in global to version 2. Cached executions that used the old "
        "value are invalidated."
    )
    expect(row.locator("td").nth(2)).to_have_text("v2")
    assert site.world.changes[-1][0] is not None and site.world.changes[-1][0].version == 1

    # Remove: a confirmation naming the secret; Cancel keeps it.
    page.get_by_role("link", name="Remove GITHUB_TOKEN").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Remove GITHUB_TOKEN?")
    expect(page.locator("#remove-warning")).to_contain_text(
        "This removes the secret GITHUB_TOKEN from global"
    )
    page.get_by_role("link", name="Cancel").click()
    expect(row).to_be_visible()
    page.get_by_role("link", name="Remove GITHUB_TOKEN").click()
    page.get_by_role("button", name="Remove GITHUB_TOKEN").click()
    expect(notice(page)).to_have_text("Removed GITHUB_TOKEN in global.")
    expect(row).to_have_count(0)
    assert site.world.secrets.get("GITHUB_TOKEN", "global") is None

    # Its access log stays, on its own page.
    page.goto("/secrets/global/GITHUB_TOKEN/log")
    expect(page.locator("#audit tbody tr td:nth-child(2)")).to_have_text(
        ["deleted", "updated", "created"]
    )


def test_a_user_adds_an_override_and_sees_the_marker(site: Site) -> None:
    site.world.set_secret("carol", "TOKEN", "global", GLOBAL_VALUE)
    page = site.page("alice")
    page.get_by_role("link", name="Your settings › Executor secrets").click()
    inherited = page.locator('tr.inherited[data-secret="TOKEN"]')
    expect(inherited).to_contain_text("global")
    expect(page.locator(".badge.override")).to_have_count(0)
    # A typo first: the error sits next to the field, the value is not sent back.
    page.get_by_label("Name").fill("TOKEN-1")
    page.get_by_label("Value").fill(ALICE_VALUE)
    page.get_by_role("button", name="Add secret").click()
    name = page.get_by_label("Name")
    expect(name).to_have_attribute("aria-invalid", "true")
    expect(name).to_be_focused()  # the first field in error takes the focus
    expect(page.locator("#secret-name-error")).to_have_text(
        "invalid secret name 'TOKEN-1' — use letters, digits and _, starting with a letter "
        "(like GITHUB_TOKEN)"
    )
    expect(name).to_have_value("TOKEN-1")
    expect(page.get_by_label("Value")).to_have_value("")
    name.fill("TOKEN")
    page.get_by_label("Value").fill(ALICE_VALUE)
    page.get_by_role("button", name="Add secret").click()
    expect(notice(page)).to_have_text("Created TOKEN in user:alice, version 1.")
    own = page.locator('tr:not(.inherited)[data-secret="TOKEN"]')
    expect(own.locator(".badge.override")).to_have_text("overrides global")
    expect(inherited).to_have_count(0)
    # A job in user:alice now resolves alice's TOKEN, as the marker says.
    resolved = site.world.secrets.resolve("TOKEN", "user:alice")
    assert resolved is not None and resolved.namespace == "user:alice"


def test_an_org_member_manages_the_orgs_secrets_and_others_are_refused(site: Site) -> None:
    dave = site.page("dave")
    dave.get_by_role("link", name="acme › Executor secrets").click()
    expect(dave).to_have_url(re.compile(r"/secrets/org:acme$"))
    dave.get_by_label("Name").fill("ORG_TOKEN")
    dave.get_by_label("Value").fill(ORG_VALUE)
    dave.get_by_role("button", name="Add secret").click()
    expect(notice(dave)).to_have_text("Created ORG_TOKEN in org:acme, version 1.")
    dave.get_by_role("link", name="Update ORG_TOKEN").click()
    dave.get_by_label("New value").fill(NEW_VALUE)
    dave.get_by_role("button", name="Update secret").click()
    expect(dave.locator('tr[data-secret="ORG_TOKEN"] td').nth(2)).to_have_text("v2")

    # Another member sees and manages the same secrets.
    alice = site.page("alice")
    alice.goto("/secrets/org:acme")
    expect(alice.locator('tr[data-secret="ORG_TOKEN"] td').nth(4)).to_have_text("dave")

    # A non-member: no link, the page is refused, and so is a tampered form.
    bob = site.page("bob")
    expect(bob.get_by_role("link", name="acme › Executor secrets")).to_have_count(0)
    answer = bob.goto("/secrets/org:acme")
    assert answer is not None and answer.status == 403
    expect(bob.get_by_role("alert")).to_contain_text("bob may not change secrets in org:acme")
    expect(bob.locator("[data-secret]")).to_have_count(0)
    bob.goto("/secrets/user:bob")
    bob.evaluate("() => { document.getElementById('add-secret').action = '/secrets/org:acme'; }")
    bob.get_by_label("Name").fill("ORG_TOKEN")
    bob.get_by_label("Value").fill(GLOBAL_VALUE)
    with bob.expect_navigation() as navigation:
        bob.get_by_role("button", name="Add secret").click()
    assert navigation.value is not None and navigation.value.status == 403
    expect(bob.get_by_role("alert")).to_contain_text("bob may not change secrets in org:acme")
    for path in ("/secrets/org:acme/ORG_TOKEN/update", "/secrets/org:acme/ORG_TOKEN/remove"):
        bob.goto("/secrets/user:bob")
        csrf = bob.locator('#add-secret input[name="csrf_token"]').get_attribute("value")
        posted = bob.request.post(path, form={"csrf_token": csrf or "", "value": GLOBAL_VALUE})
        assert posted.status == 403, path
    meta = site.world.secrets.get("ORG_TOKEN", "org:acme")
    assert meta is not None and meta.version == 2 and meta.updated_by == "dave"

    # Dave removes it.
    dave.get_by_role("link", name="Remove ORG_TOKEN").click()
    dave.get_by_role("button", name="Remove ORG_TOKEN").click()
    expect(notice(dave)).to_have_text("Removed ORG_TOKEN in org:acme.")


# CSRF -----------------------------------------------------------------------------------------


def test_a_forged_form_post_without_the_csrf_token_is_refused(site: Site) -> None:
    page = site.page("alice")
    # 1. From our own page, with the hidden token taken out of the form.
    page.goto("/secrets/user:alice")
    page.evaluate("() => document.querySelector('#add-secret input[name=csrf_token]').remove()")
    page.get_by_label("Name").fill("FORGED")
    page.get_by_label("Value").fill(ALICE_VALUE)
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Add secret").click()
    assert navigation.value is not None and navigation.value.status == 403
    expect(page.get_by_role("alert")).to_contain_text(
        "the form was refused: its security token is missing"
    )

    # 2. From another origin (another port on the same host sends the cookie: same site).
    async def evil_page(request: Request) -> HTMLResponse:
        return HTMLResponse(
            f"""<!doctype html><title>win a prize</title>
            <form method="post" action="{site.url}/secrets/user:alice">
              <input type="hidden" name="name" value="FORGED">
              <input type="hidden" name="value" value="attacker-chosen-value">
              <button type="submit">Claim your prize</button>
            </form>"""
        )

    evil = Starlette(routes=[Route("/", evil_page)])
    with LiveServer(evil) as attacker:
        other = page.context.new_page()
        other.goto(attacker.url)
        with other.expect_navigation() as navigation:
            other.get_by_role("button", name="Claim your prize").click()
        assert navigation.value is not None and navigation.value.status == 403
        expect(other.get_by_role("alert")).to_contain_text("the form was refused")
        other.close()
    assert site.world.secrets.get("FORGED", "user:alice") is None
    # The session survives the attempts.
    page.goto("/secrets/user:alice")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your settings › Executor secrets")


# Jobs -----------------------------------------------------------------------------------------


def test_a_jobs_log_follows_live_with_secrets_redacted(site: Site) -> None:
    world = site.world
    world.set_secret("alice", "TOKEN", "user:alice", ALICE_VALUE)
    job_id = world.submit("alice", "user:alice", SPEC_USING_TOKEN)
    claimed = world.claim()
    world.append(claimed, 0, [event("step.started", step=1), output(1, "cloning")])
    page = site.page("alice")
    page.get_by_role("link", name="Jobs").click()
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row).to_contain_text("processing")
    expect(row).to_contain_text("github.com/acme/one")
    expect(row).to_contain_text("ex1")
    row.get_by_role("link").click()
    expect(page.locator("#job-state")).to_have_text("processing")
    expect(page.locator("#follow-status")).to_have_text("Following the log live.")
    expect(page.locator("#log-refresh")).to_be_hidden()
    page.evaluate("() => { window.sameDocument = true; }")

    world.append(claimed, 1, [output(1, "pushing with [REDACTED:TOKEN]")])
    expect(page.locator("#log .redacted")).to_have_text("[REDACTED:TOKEN]")
    expect(page.locator("#log .line").last).to_have_text(
        "step 1 stdout: pushing with [REDACTED:TOKEN]"
    )
    world.append(claimed, 2, [output(1, "almost done", "stderr")])
    expect(page.locator("#log .line.stderr")).to_have_text("step 1 stderr: almost done")
    world.complete(claimed, changeset_result())
    expect(page.locator("#job-state")).to_have_text("completed")
    expect(page.locator("#follow-status")).to_contain_text("The job is completed")
    expect(page.locator("#cancel-job")).to_be_hidden()
    assert page.evaluate("() => window.sameDocument") is True  # followed without reloading
    expect(page.locator("#log .line")).to_have_count(4)

    page.reload()
    expect(page.get_by_role("heading", name="Plain")).to_be_visible()
    expect(page.locator("#log .redacted")).to_have_text("[REDACTED:TOKEN]")
    page.get_by_text("Commit: plain").click()
    expect(page.locator("pre.diff")).to_contain_text("+hi")


def test_without_javascript_the_log_offers_a_refresh_link(site: Site) -> None:
    world = site.world
    job_id = world.submit("alice", "user:alice")
    claimed = world.claim()
    world.append(claimed, 0, [output(1, "first")])
    page = site.page("alice", javascript=False)
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("#follow-status")).to_have_text("This job is still running.")
    refresh = page.get_by_role("link", name="Refresh to see new output")
    expect(refresh).to_be_visible()
    world.append(claimed, 1, [output(1, "second")])
    refresh.click()
    expect(page.locator("#log .line")).to_have_text(
        ["step 1 stdout: first", "step 1 stdout: second"]
    )


def test_cancel_a_running_job(site: Site) -> None:
    world = site.world
    job_id = world.submit("alice", "user:alice")
    world.claim()
    page = site.page("alice")
    page.goto(f"/jobs/{job_id}")
    page.get_by_role("button", name="Cancel job").click()
    expect(notice(page)).to_have_text(f"Cancel requested for job {job_id}; its executor stops it.")
    expect(page.locator("#cancel-badge")).to_have_text("cancel requested")
    job = world.jobs.get(job_id)
    assert job is not None and job.cancel_requested


# Keyboard and labels --------------------------------------------------------------------------


def test_every_form_is_labelled_and_reachable_by_keyboard(site: Site) -> None:
    world = site.world
    world.set_secret("carol", "TOKEN", "global", GLOBAL_VALUE)
    world.set_secret("alice", "TOKEN", "user:alice", ALICE_VALUE)
    job_id = world.submit("alice", "user:alice")
    claimed = world.claim()
    world.append(claimed, 0, [output(1, "hello")])

    page = site.page()
    page.goto("/sign-in")
    seen = assert_keyboard_reachable(page)
    assert [s["name"] for s in seen] == ["Skip to content", "runner", "API token", "Sign in"]
    # Sign in with the keyboard alone.
    page.reload()
    tab_to(page, "token")
    page.keyboard.type(world.token["alice"])
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/secrets$"))

    for path, must_have in (
        ("/secrets", ["Your settings › Executor secrets", "Sign out"]),
        (
            "/secrets/user:alice",
            [
                "Update TOKEN",
                "Remove TOKEN",
                "Access log of TOKEN",
                "Name",
                "Value",
                "Scope",
                "Add secret",
            ],
        ),
        ("/secrets/user:alice/TOKEN/update", ["New value", "Update secret", "Cancel"]),
        ("/secrets/user:alice/TOKEN/remove", ["Remove TOKEN", "Cancel"]),
        ("/secrets/user:alice/TOKEN/log", ["Sign out"]),
        ("/jobs", [job_id]),
        (f"/jobs/{job_id}", ["Cancel job", "Log", "Sign out"]),
    ):
        page.goto(path)
        names = [s["name"] for s in assert_keyboard_reachable(page)]
        for name in must_have:
            assert name in names, (path, name, names)
    # The skip link moves focus to the content.
    page.goto("/secrets/user:alice")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"


# Screenshots ----------------------------------------------------------------------------------


def test_screenshots_of_every_page(browser: Browser, tmp_path: Path) -> None:
    """scripts/screenshots.py keeps working (it writes docs/screenshots the same way)."""
    written = take_screenshots(tmp_path / "shots", browser)
    assert [p.stem for p in written] == list(SHOTS)
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 10_000
    docs = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
    assert sorted(p.stem for p in docs.glob("*.png")) == sorted(SHOTS)
