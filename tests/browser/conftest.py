"""Browser tests: Playwright on Debian's chromium (fixtures: support/browser.py)."""

from support.browser import browser, context, page, playwright_driver

__all__ = ["browser", "context", "page", "playwright_driver"]
