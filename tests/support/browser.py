"""Playwright on Debian's chromium for the browser tests (tests/browser/).

No browser is ever downloaded: Playwright drives `/usr/bin/chromium` (installed by
./dev), with PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1. One browser per test module
(starting chromium costs about a second of CPU), a fresh context (cookies, storage)
per test. `screenshot(page, name)` saves `var/test-artifacts/screenshots/<name>.png`
(gitignored) for people to look at; tests never compare pixels.

A test module uses the fixtures through tests/browser/conftest.py:

    def test_journey(page: Page, ...) -> None:
        page.goto(url)
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        screenshot(page, "dashboard-home")
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    sync_playwright,
)

CHROMIUM = os.environ.get("PORTCULLIS_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "screenshots"
# Phone-sized and desktop viewports the pages are checked at.
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 860}
# What expect() waits for at most (a signal that never comes fails the test then).
EXPECT_TIMEOUT_MS = 10_000

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    """One headless chromium for the test module."""
    launched = playwright_driver.chromium.launch(executable_path=CHROMIUM, headless=True)
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser context (no cookies) per test, desktop-sized."""
    ctx = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    ctx.set_default_timeout(EXPECT_TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    return context.new_page()


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot of `page` as var/test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def console_errors(page: Page) -> list[str]:
    """Collects the page's script errors and CSP violations from now on (the list grows
    as they come): a test asserts it is empty at the end of a journey. A response with
    an error status (a refused sign-in's 401) is the page's business, not an error here."""
    errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            errors.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors
