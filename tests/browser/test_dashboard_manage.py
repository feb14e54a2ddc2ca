"""The dashboard's management pages in a real browser (chromium via Playwright) on a real
control plane (issue 19, decision 036): two admins edit the same route — each sees the
other present, the second save gets the conflict flow and saves its change on top of
the first; a rollback goes through its confirmation page."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from portcullis.services.rbac import Role
from support.admin_session import PASSWORD
from support.browser import DESKTOP, EXPECT_TIMEOUT_MS, PHONE, console_errors, screenshot
from support.dashboard_admins import admin_api, plane_with_admins
from support.servers import ControlPlane

ANN = "ann@example.com"
BOB = "bob@example.com"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    admins = {ANN: Role.OWNER, BOB: Role.OPERATOR}
    with plane_with_admins(tmp_path_factory.mktemp("manage-browser"), admins) as cp:
        yield cp


@pytest.fixture(scope="module")
def api(plane: ControlPlane) -> Iterator[httpx.Client]:
    with admin_api(plane.url, ANN) as client:
        yield client


def signed_in(browser: Browser, plane: ControlPlane, email: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{plane.url}/dashboard/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    return context, page


def test_two_admins_edit_one_route(
    browser: Browser, plane: ControlPlane, api: httpx.Client
) -> None:
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    ann_context, ann = signed_in(browser, plane, ANN)
    bob_context, bob = signed_in(browser, plane, BOB)
    try:
        errors = console_errors(ann) + console_errors(bob)
        route = f"{plane.url}/dashboard/manage/routes/orders"
        ann.goto(route)
        bob.goto(route)
        # Each sees the other on the route (presence over the dashboard's WebSocket).
        expect(ann.locator("#presence .presence-members")).to_contain_text(BOB)
        expect(bob.locator("#presence .presence-members")).to_contain_text(ANN)
        screenshot(ann, "dashboard-manage-route-presence")

        ann.get_by_label("Priority", exact=True).fill("5")
        ann.get_by_role("button", name="Save").click()
        expect(ann.get_by_role("status")).to_contain_text("Saved")
        # Bob is told before he saves.
        expect(bob.locator("#presence .presence-changed")).to_contain_text("Changed by ann")

        bob.get_by_label("Paths").fill("/orders\n/v2/orders")
        bob.get_by_role("button", name="Save").click()
        expect(bob.get_by_role("heading", name="changed meanwhile")).to_be_visible()
        expect(bob.locator("table.merge")).to_contain_text("/priority")
        expect(bob.locator("table.merge")).to_contain_text("/paths")
        expect(bob.locator("#reload-theirs")).to_be_visible()
        screenshot(bob, "dashboard-manage-conflict")
        bob.get_by_role("button", name="Save mine on top of theirs").click()
        expect(bob.get_by_role("status")).to_contain_text("Saved")

        stored = api.get("/admin/v1/routes/orders").json()
        assert (stored["priority"], stored["paths"]) == (5, ["/orders", "/v2/orders"])
        # Reloading shows what is stored now.
        ann.reload()
        expect(ann.get_by_label("Paths")).to_have_value("/orders\n/v2/orders")
        assert errors == []
    finally:
        ann_context.close()
        bob_context.close()


def test_rollback_journey(browser: Browser, plane: ControlPlane, api: httpx.Client) -> None:
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    context, page = signed_in(browser, plane, ANN)
    try:
        errors = console_errors(page)
        before = api.get("/admin/v1/config/versions").json()["items"][0]["version"]
        page.goto(f"{plane.url}/dashboard/config/versions")
        screenshot(page, "dashboard-config-versions")
        page.get_by_role("link", name="1", exact=True).click()
        expect(page.get_by_role("heading", name="Config version 1")).to_be_visible()
        page.get_by_role("link", name="Roll back to version 1…").click()
        expect(page.get_by_role("heading", name="Roll back to version 1?")).to_be_visible()
        expect(page.locator("table.side-by-side").first).to_be_visible()
        screenshot(page, "dashboard-config-rollback-confirm")
        # Nothing happened yet: the confirmation page is only a page.
        assert api.get("/admin/v1/config/versions").json()["items"][0]["version"] == before
        page.get_by_role("button", name="Roll back to version 1").click()
        expect(page.get_by_role("status")).to_contain_text(f"version {before + 1} is now current")
        top = api.get("/admin/v1/config/versions").json()["items"][0]
        assert (top["version"], top["source_version"]) == (before + 1, 1)
        # On a phone-sized screen the pages reflow instead of scrolling sideways.
        page.set_viewport_size(PHONE)  # type: ignore[arg-type]
        for path, name in (
            ("/dashboard/manage/services/orders", "service-form"),
            (f"/dashboard/config/versions/{before + 1}", "config-diff"),
        ):
            page.goto(plane.url + path)
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            screenshot(page, f"dashboard-manage-phone-{name}")
        assert errors == []
    finally:
        context.close()
