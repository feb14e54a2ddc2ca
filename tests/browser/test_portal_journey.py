"""The portal journey of issue 19's proof, as one test in a real browser (chromium via
Playwright) on a real gateway + control plane: sign up → verify the email through the
outbox → register an application → request access to the demo API (automatic approval)
→ a key shown once → "Use in console" → the API's reference docs → try-it answers 200
through the gateway with its RateLimit fields → the usage chart counts the call.

Prints the time from loading the sign-up page to the first 200 in the console (test
speed, no threshold); screenshots of each step in var/test-artifacts/screenshots/.
The pieces are tested on their own in test_portal_account.py and test_portal_api.py."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from support.browser import console_errors, screenshot
from support.portal_gateway import demo_api_gateway, items_upstream
from support.portal_pages import register_application, sign_up_and_verify
from support.servers import Gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with (
        items_upstream() as upstream,
        demo_api_gateway(tmp_path_factory.mktemp("journey"), upstream.port) as running,
    ):
        yield running


def test_sign_up_to_a_first_call_and_its_usage(page: Page, gw: Gateway) -> None:
    errors = console_errors(page)
    started = time.monotonic()  # the sign-up page's load counts
    sign_up_and_verify(page, gw.admin_url, "Grace", "grace@example.com", shots="journey")
    screenshot(page, "journey-verified")
    register_application(page, "Grace's shop", "server", api="demo")
    screenshot(page, "journey-application")
    consumer = page.locator("p.muted code").first.inner_text()

    page.get_by_role("button", name="Create sandbox key").click()
    secret = page.get_by_label("API key", exact=True)
    expect(secret).to_be_visible()
    key = secret.input_value()
    screenshot(page, "journey-key-shown-once")

    # "Use in console" keeps the key in this tab (sessionStorage) for the console.
    page.get_by_role("link", name="Use in console").click()
    expect(page.get_by_role("heading", name="Try it")).to_be_visible()
    page.get_by_role("link", name="APIs", exact=True).click()
    page.get_by_role("link", name="Demo API").click()
    page.get_by_role("link", name="Reference of v2").click()
    operation = page.locator("#op-listItems")
    expect(operation).to_contain_text("GET /items")
    screenshot(page, "journey-reference")
    operation.get_by_role("link", name="Try it").click()
    expect(page.get_by_label("Path")).to_have_value("/v2/items")
    expect(page.get_by_label("API key")).to_have_value(key)
    page.get_by_role("button", name="Send").click()
    answer = page.locator("[data-tryit-state]")
    expect(answer).to_have_attribute("data-status", "200")
    to_first_call = time.monotonic() - started
    expect(answer.locator(".rate-limit")).to_contain_text("ratelimit")
    expect(answer).to_contain_text('"name": "pen"')
    screenshot(page, "journey-tryit-200")
    print(f"portal journey: sign-up page to the first 200 in {to_first_call:.1f} s (test speed)")

    page.get_by_role("link", name="Usage").click()
    chart = page.locator(f'[data-usage-chart][data-app="{consumer}"]')
    # The live window is fetched again every 2 s: the call shows once its row is logged.
    expect(chart).to_have_attribute("data-requests", re.compile(r"^[1-9]"))
    expect(chart.locator("canvas")).to_have_count(1)
    screenshot(page, "journey-usage")
    assert errors == []
