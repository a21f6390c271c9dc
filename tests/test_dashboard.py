"""The operator's console (GET /) and the docs page in a real browser: Debian's headless
Chromium (the `chromium` package; .ci/run installs it) driven by Playwright, which never
downloads a browser of its own here. Every request the page makes to anywhere but web is
refused, so a page that needed a CDN would fail. The console is found as a person finds it:
by the names of its fields, buttons, links, headings and images.

Without Chromium the tests skip on a developer's machine and fail in CI (CI=true).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from local.processes import wait_for
from receiver.signature import sign_v3
from tests.support.api import submit, wait_status, wait_worker
from tests.support.memory import without_memory_cap
from tests.support.notify_receiver import NEW_SECRET, Receiver
from tests.support.services import AUTH_TOKEN, KEY_A, KEY_B

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
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
SEEN_WITHIN_MS = 15_000  # the page refreshes every 2 s; this is ample under load
# Where the console's screenshots go when they are made again (README.md links them):
# `CONSOLE_SCREENSHOTS=docs python3 manage.py test tests/test_dashboard.py -k screenshots`.
SCREENSHOTS = os.environ.get("CONSOLE_SCREENSHOTS", "")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run does it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    with without_memory_cap():  # Chromium reserves far more address space than it uses
        playwright = sync_playwright().start()
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture
def page(browser, web) -> Iterator[Page]:
    """A fresh page that may reach web (and the webs a test adds to `page.webs`) and nothing
    else, and fails the test on a script error. `page.asked` lists the paths it asked web for."""
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    asked: list[str] = []
    webs = [web.url]
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)

    def only_web(route: Route) -> None:
        url = route.request.url
        if any(url.startswith(allowed + "/") for allowed in webs):
            asked.append(urlsplit(url).path)
            route.continue_()
        else:
            errors.append(f"the page asked for {url}")
            route.abort()

    page.route("**/*", only_web)
    page.asked, page.webs = asked, webs  # type: ignore[attr-defined]
    yield page
    context.close()
    assert errors == []


def sign_in(page: Page, key: str) -> None:
    """As a person at the keyboard: the key field has the focus when the page opens."""
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible(timeout=SEEN_WITHIN_MS)


def callback(web, rid: str, api_id: str) -> None:
    """The upstream's callback, signed as Plivo signs it (the sandbox was told to drop its own)."""
    url = f"{web.url}/callbacks/plivo?rid={rid}"
    body = {"api_id": api_id, "message": "call fired", "request_uuid": str(uuid.uuid4())}
    nonce = uuid.uuid4().hex
    with web.client(key=None) as anon:
        answer = anon.post(
            url,
            content=json.dumps(body),
            headers={
                "Content-Type": "application/json",
                "X-Plivo-Signature-V3-Nonce": nonce,
                "X-Plivo-Signature-V3": sign_v3(AUTH_TOKEN, "POST", url, nonce, body),
            },
        )
    assert answer.json() == {"outcome": "matched"}


def test_without_a_key_the_page_is_a_sign_in_form_and_asks_the_api_nothing(page, web, api):
    submit(api)  # there is something a page could show
    answer = page.goto(web.url + "/")
    assert answer and "default-src 'self'" in answer.headers["content-security-policy"]  # and no CDN, no inline script
    expect(page).to_have_title("Answerback")
    expect(page.get_by_label("API key")).to_be_visible()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    for hidden in (page.get_by_role("searchbox", name="Search"), page.get_by_role("link", name="Charts")):
        expect(hidden).to_have_count(0)  # not merely out of sight: out of the accessibility tree
    assert page.locator("#console").is_hidden() and page.locator(".card").count() == 0
    page.wait_for_load_state("networkidle")  # nothing more is fetched, later either
    assert set(page.asked) <= {"/", "/static/console.css", "/static/console.js", "/favicon.ico"}, page.asked

    page.keyboard.type("not-a-key")  # the key field has the focus; Tab to the button, its focus drawn
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Sign in")).to_be_focused()
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.keyboard.press("Space")
    expect(page.locator("#signin-note")).to_have_text("That API key was refused.")
    expect(page.get_by_role("searchbox", name="Search")).to_have_count(0)
    with web.client(key=None) as anon:
        assert anon.get("/dashboard/counts").status_code == 404  # the public counters are gone


def test_a_signed_in_page_lists_the_keys_requests_as_links_and_opens_one(page, web, worker, sandbox):
    sandbox.faults(drop_callback={"rate": 1.0})  # the request stays pending until the test calls back
    with web.client(KEY_A) as api, web.client(KEY_B) as api_b:
        mine = submit(api)["request_id"]
        theirs = submit(api_b)["request_id"]
        pending = wait_status(api, mine, "pending")
    page.goto(web.url + "/")
    sign_in(page, KEY_A)
    link = page.get_by_role("link", name=mine)
    row = page.locator(f'#rows tr[data-request-id="{mine}"]')
    expect(link).to_be_visible()
    expect(row.locator(".status")).to_have_text("pending")
    expect(row).to_contain_text(pending["api_id"])
    expect(page.locator("#note")).to_have_text("1 in all")
    expect(page.get_by_role("link", name=theirs)).to_have_count(0)

    callback(web, mine, pending["api_id"])
    expect(row.locator(".status")).to_have_text("completed", timeout=SEEN_WITHIN_MS)  # it follows, no reload

    link.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=f"Request {mine}")).to_be_focused()
    expect(page.locator("#fields")).to_contain_text(pending["api_id"])
    expect(page.get_by_role("heading", name="Timeline")).to_be_visible()
    expect(page.get_by_role("button", name="Retry")).to_be_hidden()  # completed: nothing to retry

    page.goto(f"{web.url}/#/requests/{theirs}")  # another tenant's, by its address
    expect(page.locator("#fields")).to_contain_text("no request with that id", timeout=SEEN_WITHIN_MS)


def test_find_a_request_by_api_id_read_its_timeline_retry_a_failed_one_and_see_it_complete(
    page, web, worker, api, sandbox
):
    """The issue's walk, at the keyboard where a person would use it; then another tenant's key
    finds nothing of it."""
    wait_worker(api)
    sandbox.faults(status_4xx={"rate": 1.0, "error": "to is invalid"})
    failed, other = (submit(api)["request_id"] for _ in range(2))
    wait_status(api, failed, "failed")
    wait_status(api, other, "failed")
    sandbox.reset()
    done = wait_status(api, submit(api)["request_id"], "completed")
    page.goto(web.url + "/")
    sign_in(page, KEY_A)

    search = page.get_by_role("searchbox", name="Search")
    search.fill(done["api_id"])
    search.press("Enter")
    expect(page.locator("#note")).to_have_text("1 in all")
    expect(page.get_by_role("link", name=failed)).to_have_count(0)
    page.get_by_role("link", name=done["request_id"]).press("Enter")
    timeline = page.get_by_role("list", name="Timeline")
    for event in ("submitted", "sent", "api_id", "callback", "completed"):
        item = timeline.locator(f'li[data-event="{event}"]')
        expect(item.first).to_contain_text(event)
        expect(item.first.locator("time")).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))

    page.get_by_role("link", name="Requests", exact=True).first.click()
    search.fill(failed)
    search.press("Enter")
    page.get_by_role("link", name=failed).click()
    expect(timeline.locator('li[data-event="failed"]')).to_have_count(1)
    page.get_by_role("button", name="Retry").press("Space")
    retried = page.locator("#action-note a")
    expect(retried).to_be_focused()
    new_id = retried.inner_text()
    assert new_id != failed
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=f"Request {new_id}")).to_be_visible()
    expect(page.locator("#fields .status")).to_have_text("completed", timeout=SEEN_WITHIN_MS)
    expect(page.locator("#fields")).to_contain_text(failed)  # retry_of, a link back
    expect(page.get_by_role("button", name="Retry")).to_be_hidden()

    # Every failed one, from the list's filter: a preview, a confirmation, the progress.
    page.get_by_role("link", name="Requests", exact=True).first.click()
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#note")).to_have_text("2 in all")
    page.get_by_role("button", name="Preview bulk retry").click()
    expect(page.locator("#bulk-note")).to_have_text("2 failed or expired requests match. Retry them?")
    expect(page.get_by_role("button", name="Retry 2 requests")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#bulk-said")).to_have_text("1 retried, 1 skipped of 2: done", timeout=SEEN_WITHIN_MS)
    expect(page.get_by_role("progressbar", name="Bulk retry progress")).to_have_attribute("value", "2")
    wait_status(api, api.get(f"/v1/requests/{other}").json()["retried_as"], "completed")

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, KEY_B)
    page.goto(f"{web.url}/#/requests/{new_id}")
    expect(page.locator("#fields")).to_contain_text("no request with that id")
    page.get_by_role("link", name="Requests", exact=True).first.click()
    for what in (done["api_id"], failed, new_id, other):
        search.fill(what)
        search.press("Enter")
        expect(page.locator("#note")).to_have_text("Nothing found")
        expect(page.locator("#rows")).to_be_hidden()


def test_charts_by_window_and_scope_and_the_screenshots(page, web, worker, api, sandbox, tmp_path):
    """One chart per group of figures, each an image named for what it plots and its window;
    an admin key switches to all tenants. The walk makes the README's screenshots too."""
    wait_worker(api)
    sandbox.faults(status_4xx={"rate": 1.0, "error": "to is invalid"})
    wait_status(api, submit(api, path="Message/")["request_id"], "failed")
    sandbox.reset()
    rids = [submit(api, path=path)["request_id"] for path in ("Call/", "Message/", "Call/", "Call/")]
    for rid in rids:
        wait_status(api, rid, "completed")
    shots = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    page.goto(web.url + "/")
    sign_in(page, KEY_B)
    expect(page.get_by_role("link", name=rids[0])).to_have_count(0)  # KEY_B's own list: empty
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, KEY_A)
    expect(page.locator("#rows tbody tr")).to_have_count(len(rids) + 1)
    page.screenshot(path=shots / "console-list.png", full_page=True)
    # The filters, kept in the address: a path, then a time range that holds nothing.
    page.get_by_label("Path").fill("Message/")
    page.get_by_label("Path").press("Enter")
    expect(page.locator("#note")).to_have_text("2 in all")
    assert "path=Message%2F" in page.url
    page.get_by_label("Since").fill("2099-01-01T00:00")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#note")).to_have_text("Nothing found")
    page.go_back()
    expect(page.locator("#note")).to_have_text("2 in all")
    expect(page.get_by_label("Since")).to_have_value("")
    page.get_by_role("link", name=rids[1]).click()  # the Message/ one that completed
    expect(page.get_by_role("list", name="Timeline").locator('li[data-event="completed"]')).to_have_count(1)
    page.screenshot(path=shots / "console-timeline.png", full_page=True)

    page.get_by_role("link", name="Charts").click()
    for window in ("hour", "day", "week"):
        page.get_by_role("button", name=f"Last {window}").press("Enter")
        charts = page.get_by_role("img", name=re.compile(f"over the last {window}, your requests$"))
        expect(charts).to_have_count(4)
        expect(page.get_by_role("img", name=re.compile("^Requests: requests submitted, completed"))).to_contain_text(
            f"submitted {len(rids) + 1} in all"
        )
    page.get_by_role("button", name="Last hour").click()
    expect(page.get_by_role("img", name=re.compile("over the last hour"))).to_have_count(4)
    page.screenshot(path=shots / "console-charts.png", full_page=True)
    for name in ("console-list.png", "console-timeline.png", "console-charts.png"):
        assert (shots / name).stat().st_size > 10_000

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, KEY_B)  # an admin key: all tenants' figures on request
    page.get_by_role("link", name="Charts").click()
    expect(page.get_by_role("img", name=re.compile("your requests$"))).to_have_count(4)
    page.get_by_label("All tenants").press("Space")
    expect(page.get_by_role("img", name=re.compile("all tenants$"))).to_have_count(4)
    expect(page.get_by_role("img", name=re.compile("^Requests: "))).to_contain_text(f"submitted {len(rids) + 1} in all")


def test_a_finished_requests_notification_is_sent_again_from_its_page(page, make_stack, sandbox):
    """Resend notification: on a web that may notify (NOTIFY_HOSTS), for a finished request
    with a notify_url; each attempt is in the timeline."""
    receiver = Receiver().start()
    try:
        stack = make_stack(db=3, NOTIFY_HOSTS="127.0.0.1", WEBHOOK_SECRET=NEW_SECRET)
        page.webs.append(stack.web.url)
        with stack.web.client() as api:
            rid = submit(api, notify_url=receiver.url)["request_id"]
            wait_for(lambda: len(receiver.received) == 1, 20, message="the first notification")
        page.goto(f"{stack.web.url}/#/requests/{rid}")
        sign_in(page, KEY_A)
        notifications = page.get_by_role("list", name="Timeline").locator('li[data-event="notification"]')
        expect(notifications).to_have_count(1)
        page.get_by_role("button", name="Resend notification").click()
        expect(page.locator("#action-note")).to_have_text("The notification is sent again.")
        wait_for(lambda: len(receiver.received) == 2, 20, message="the notification sent again")
        expect(notifications).to_have_count(2, timeout=SEEN_WITHIN_MS)
    finally:
        receiver.stop()


def test_a_signed_in_page_shows_a_banner_per_problem(page, web, redis):
    """From /v1/status: here a Redis that is not durable (the session's, put back after)."""
    page.goto(web.url + "/")
    sign_in(page, KEY_A)
    banner = page.locator('#problems .problem[data-code="redis_not_durable"]')
    expect(page.locator("#note")).to_have_text("0 in all")
    expect(banner).to_have_count(0)
    redis.config_set("appendonly", "no")
    try:
        expect(banner).to_contain_text("appendonly=no", timeout=SEEN_WITHIN_MS)
    finally:
        redis.config_set("appendonly", "yes")
    expect(banner).to_have_count(0, timeout=SEEN_WITHIN_MS)


def test_only_an_admin_key_sees_the_quarantine_and_can_recheck_it(page, web):
    """A refused callback is the quarantine's: a tenant's key (KEY_A) is not shown it; an admin
    key (KEY_B, also a tenant's) sees the banner and its Re-check, which says what it did."""
    with web.client(key=None) as anon:
        forged = anon.post(
            f"/callbacks/plivo?rid={uuid.uuid4()}",
            json={"api_id": str(uuid.uuid4()), "status": "forged"},
            headers={"X-Plivo-Signature-V3": "bm90IGEgc2lnbmF0dXJl", "X-Plivo-Signature-V3-Nonce": "12345"},
        )
    assert forged.status_code == 403
    banner = page.locator('#problems .problem[data-code="quarantined"]')
    page.goto(web.url + "/")
    sign_in(page, KEY_A)
    # The page read the problems, the quarantine among them, and left that one out.
    expect(page.locator("#problems")).to_have_attribute("data-drawn", re.compile('"quarantined"'))
    expect(banner).to_have_count(0)
    expect(page.get_by_label("All tenants")).to_be_hidden()

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, KEY_B)
    expect(page.get_by_label("All tenants")).to_be_visible()
    page.get_by_role("button", name="Re-check quarantined callbacks").click()
    expect(banner).to_contain_text("checked 1, applied 0, 1 left", timeout=SEEN_WITHIN_MS)


def test_the_docs_page_renders_the_api_from_this_server_alone(page, web):
    page.goto(web.url + "/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Answerback", timeout=SEEN_WITHIN_MS)
    expect(page.get_by_text("/v1/requests/{request_id}/deliveries")).to_be_visible()
