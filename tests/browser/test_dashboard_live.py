"""The dashboard in a real browser (chromium via Playwright) on a real gateway
(`portcullis serve`: data plane :8000-like port and control plane): sign-in, a request
sent through the gateway appearing in the live view, an alert firing appearing without
a reload (issue 19). Delays are printed, never asserted (benchmarks print figures)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, Page, expect

from portcullis.store.engine import create_engine
from support.admin_session import PASSWORD
from support.browser import PHONE, console_errors, screenshot
from support.raw_upstream import keep_alive_handler, response
from support.rollups import failing_minute
from support.servers import Gateway, gateway
from support.threaded_upstream import threaded_upstream
from support.web import create_owner

OWNER = "ops@example.com"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("dashboard")
    with threaded_upstream(keep_alive_handler(lambda _: response(200, b"ok"))) as upstream:
        config = {
            "services": [{"name": "shop", "url": f"http://127.0.0.1:{upstream.port}"}],
            "routes": [{"name": "checkout", "service": "shop", "paths": ["/checkout"]}],
        }
        (tmp / "gateway.yaml").write_text(yaml.safe_dump(config))
        # Alert rules evaluated every second (default 15 s), so a breach fires at once.
        env = {"PORTCULLIS_ALERTS_INTERVAL": "1"}
        with gateway(tmp, tmp / "gateway.yaml", extra_env=env) as running:
            create_owner(running.database_url, OWNER)
            yield running


def sign_in(page: Page, gw: Gateway) -> None:
    page.goto(f"{gw.admin_url}/dashboard/login")
    page.get_by_label("Email").fill(OWNER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def test_sign_in_and_out(page: Page, gw: Gateway) -> None:
    errors = console_errors(page)
    page.goto(f"{gw.admin_url}/dashboard/")
    # The home itself is the sign-in form while nobody is signed in (no redirect).
    expect(page).to_have_url(f"{gw.admin_url}/dashboard/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "dashboard-login")
    # Keyboard: the first Tab reaches the skip link, which moves focus to the main content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main#main")).to_be_focused()
    page.get_by_label("Email").fill(OWNER)
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong email or password")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert errors == []


def test_a_request_through_the_gateway_appears_in_the_live_view(page: Page, gw: Gateway) -> None:
    errors = console_errors(page)
    sign_in(page, gw)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    row = page.locator('#routes-table tr[data-route="checkout"]')
    before = int(row.get_attribute("data-total") or 0) if row.count() else 0
    sent = time.monotonic()
    assert httpx.get(f"{gw.url}/checkout", timeout=10).status_code == 200
    # The signal: the route's count over the last minute went up (no sleep, no deadline
    # but expect()'s).
    page.wait_for_function(
        """(before) => {
            const row = document.querySelector('#routes-table tr[data-route="checkout"]');
            return row !== null && Number(row.dataset.total) > before;
        }""",
        arg=before,
    )
    delay = time.monotonic() - sent
    print(f"\nlive view: request sent through the gateway visible after {delay:.2f} s")
    expect(row.locator("td").nth(1)).to_have_text("shop")  # its service
    expect(page.locator('#services-table tr[data-service="shop"]')).to_be_visible()
    expect(page.locator("#traffic-chart canvas")).to_have_count(1)  # uPlot drew
    screenshot(page, "dashboard-overview")
    assert errors == []


def _breach(database_url: str) -> None:
    async def write() -> None:
        engine = create_engine(database_url)
        try:
            await failing_minute(engine, route="checkout", service="shop")
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, write()).result()


def test_an_alert_firing_appears_without_a_reload(page: Page, gw: Gateway) -> None:
    errors = console_errors(page)
    sign_in(page, gw)
    expect(page.locator("#alerts-none")).to_be_visible()
    page.evaluate("window.portcullisTestMarker = 'same page'")
    with httpx.Client(base_url=gw.admin_url, timeout=10) as admin:
        login = admin.post("/admin/v1/auth/login", json={"email": OWNER, "password": PASSWORD})
        admin.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        rule = {"name": "checkout-errors", "kind": "error_rate", "threshold": 0.5}
        created = admin.post("/admin/v1/alert-rules", json={**rule, "route": "checkout"})
        assert created.status_code == 201, created.text
    started = time.monotonic()
    _breach(gw.database_url)
    firing = page.locator('#alerts-table tr[data-rule="checkout-errors"][data-state="firing"]')
    expect(firing).to_be_visible()
    print(
        f"\nalerts panel: firing alert visible {time.monotonic() - started:.2f} s after the breach"
    )
    assert page.evaluate("window.portcullisTestMarker") == "same page"  # no reload
    expect(page.locator('#events-list li[data-kind="alert.firing"]')).to_be_visible()
    screenshot(page, "dashboard-alert-firing")
    assert errors == []


def test_the_overview_on_a_phone(browser: Browser, gw: Gateway) -> None:
    context = browser.new_context(viewport=PHONE)  # type: ignore[arg-type]
    try:
        page = context.new_page()
        sign_in(page, gw)
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        # Nothing is wider than the screen: tables scroll inside their own boxes.
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], width
        screenshot(page, "dashboard-overview-phone")
    finally:
        context.close()
