"""Steps of the portal's pages that several browser journeys take (Playwright), waiting
on what each page shows, never on time."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from support.browser import screenshot

PASSWORD = "a long enough password"


def sign_up_and_verify(page: Page, admin_url: str, name: str, email: str, shots: str) -> None:
    """Sign up as `name` <`email`> and verify the address through the outbox page (the
    gateway runs with PORTCULLIS_PORTAL_OUTBOX_VIEW=true); screenshots `<shots>-signup`
    and `<shots>-outbox`. Ends on the "verified" page, signed in."""
    page.goto(f"{admin_url}/portal/signup")
    screenshot(page, f"{shots}-signup")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    page.get_by_role("link", name="outbox").click()
    verify = page.get_by_role("link", name="Verify email address").first
    expect(verify).to_be_visible()
    screenshot(page, f"{shots}-outbox")
    verify.click()
    page.get_by_role("button", name="Verify my email address").click()
    expect(page.get_by_role("status")).to_contain_text("verified")


def register_application(page: Page, name: str, client_type: str, api: str) -> None:
    """From the "verified" page: register application `name` and request access to
    `api` (an API whose access is approved automatically). Ends on the application's
    page with the access approved."""
    page.get_by_role("link", name="Go to your applications").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Client type").select_option(client_type)
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    page.get_by_label("API", exact=True).select_option(api)
    page.get_by_role("button", name="Request access").click()
    expect(page.locator("[data-access-status]")).to_have_text("approved")
