"""The dashboard in a real browser (chromium via Playwright) on a real gateway:
sign-in, the live view, alerts appearing without reload (issue 19)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from support.admin_session import PASSWORD
from support.browser import console_errors, screenshot
from support.servers import Gateway, gateway
from support.web import create_owner

OWNER = "ops@example.com"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("dashboard")
    with gateway(tmp, None) as running:
        create_owner(running.database_url, OWNER)
        yield running


def test_sign_in_and_out(page: Page, gw: Gateway) -> None:
    errors = console_errors(page)
    page.goto(f"{gw.admin_url}/dashboard/")
    expect(page).to_have_url(f"{gw.admin_url}/dashboard/login?next=%2Fdashboard%2F")
    screenshot(page, "dashboard-login")
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
