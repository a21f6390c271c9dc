"""The dashboard and the docs page in a real browser: Debian's headless Chromium (the
`chromium` package; .ci/run installs it) driven by Playwright, which never downloads a
browser of its own here. Every request the page makes to anywhere but web is refused, so a
page that needed a CDN would fail.

Without Chromium the tests skip on a developer's machine and fail in CI (CI=true).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from receiver.signature import sign_v3
from tests.support.api import submit, wait_status
from tests.support.memory import without_memory_cap
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
    """A fresh page that may reach web and nothing else, and fails the test on a script error."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def only_web(route: Route) -> None:
        if route.request.url.startswith(web.url + "/"):
            route.continue_()
        else:
            errors.append(f"the page asked for {route.request.url}")
            route.abort()

    page.route("**/*", only_web)
    yield page
    context.close()
    assert errors == []


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


def test_dashboard_shows_counts_lists_the_callers_requests_and_follows_them(page, web, worker, sandbox):
    sandbox.faults(drop_callback={"rate": 1.0})  # the request stays pending until the test calls back
    page.goto(web.url + "/")
    expect(page).to_have_title("Answerback")
    expect(page.locator("#count-submitted")).to_have_text("0")
    expect(page.locator("#count-completed")).to_have_text("0")

    with web.client(KEY_A) as api, web.client(KEY_B) as api_b:
        mine = submit(api)["request_id"]
        theirs = submit(api_b)["request_id"]
        pending = wait_status(api, mine, "pending")
    # The cards follow without a reload.
    expect(page.locator("#count-submitted")).to_have_text("2", timeout=SEEN_WITHIN_MS)
    expect(page.locator("#count-awaiting_callback")).to_have_text("2", timeout=SEEN_WITHIN_MS)

    page.fill("#key", KEY_A)
    page.click("#lookup button")
    row = page.locator(f'#rows tr[data-request-id="{mine}"]')
    expect(row).to_be_visible()
    expect(row.locator(".status")).to_have_text("pending")
    expect(row).to_contain_text(pending["api_id"])
    expect(page.locator("#note")).to_have_text("1 in all")
    expect(page.locator(f'#rows tr[data-request-id="{theirs}"]')).to_have_count(0)

    callback(web, mine, pending["api_id"])
    expect(row.locator(".status")).to_have_text("completed", timeout=SEEN_WITHIN_MS)
    expect(page.locator("#count-completed")).to_have_text("1", timeout=SEEN_WITHIN_MS)


def test_a_wrong_key_is_told_so_on_the_page(page, web):
    page.goto(web.url + "/")
    page.fill("#key", "not-a-key")
    page.click("#lookup button")
    expect(page.locator("#note")).to_contain_text("API key")
    expect(page.locator("#rows")).to_be_hidden()


def test_a_signed_in_page_shows_a_banner_per_problem(page, web, redis):
    """From /v1/status: here a Redis that is not durable (the session's, put back after)."""
    page.goto(web.url + "/")
    page.fill("#key", KEY_A)
    page.click("#lookup button")
    banner = page.locator('#problems .problem[data-code="redis_not_durable"]')
    expect(page.locator("#note")).to_have_text("0 in all")
    expect(banner).to_have_count(0)
    redis.config_set("appendonly", "no")
    try:
        expect(banner).to_contain_text("appendonly=no", timeout=SEEN_WITHIN_MS)
    finally:
        redis.config_set("appendonly", "yes")
    expect(banner).to_have_count(0, timeout=SEEN_WITHIN_MS)


def test_quarantined_callbacks_can_be_rechecked_from_the_page_with_an_admin_key(page, web):
    """A refused callback shows in the problems; Re-check is refused to a tenant's key and
    runs with an admin key (here also a tenant's: KEY_B), saying what it did."""
    with web.client(key=None) as anon:
        forged = anon.post(
            f"/callbacks/plivo?rid={uuid.uuid4()}",
            json={"api_id": str(uuid.uuid4()), "status": "forged"},
            headers={"X-Plivo-Signature-V3": "bm90IGEgc2lnbmF0dXJl", "X-Plivo-Signature-V3-Nonce": "12345"},
        )
    assert forged.status_code == 403
    page.goto(web.url + "/")
    for key, said in ((KEY_A, "admin key"), (KEY_B, "checked 1, applied 0, 1 left")):
        page.fill("#key", key)
        page.click("#lookup button")
        page.get_by_role("button", name="Re-check quarantined callbacks").click()
        expect(page.locator('#problems .problem[data-code="quarantined"]')).to_contain_text(
            said, timeout=SEEN_WITHIN_MS
        )


def test_the_docs_page_renders_the_api_from_this_server_alone(page, web):
    page.goto(web.url + "/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Answerback", timeout=SEEN_WITHIN_MS)
    expect(page.get_by_text("/v1/requests/{request_id}/deliveries")).to_be_visible()
