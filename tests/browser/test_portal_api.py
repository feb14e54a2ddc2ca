"""The portal's API pages in a real browser (chromium via Playwright) on a real gateway:
a signed-in developer opens the demo API's reference docs, the try-it console answers
200 through the gateway with RateLimit fields, and the usage chart shows the call;
another developer's usage never shows it (issue 19, decision 037)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from portcullis.identity.secrets import load_server_secret
from portcullis.services.audit import AuditLog
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.context import RequestFacts
from portcullis.services.keys import KeyService
from portcullis.services.portal import DeveloperContext
from portcullis.services.portal_accounts import PortalAccounts
from portcullis.services.portal_apps import PortalApps
from portcullis.services.portal_mail import OutboxMailSender
from portcullis.services.web_sessions import WebSessions
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import create_engine
from support.admin_session import TEST_PASSWORD_HASHER
from support.browser import PHONE, console_errors, screenshot
from support.portal_gateway import demo_api_gateway, items_upstream
from support.raw_upstream import RawUpstream
from support.servers import Gateway

PASSWORD = "a long enough password"


@dataclass(frozen=True)
class Developer:
    session: str  # the portal session cookie's token
    key: str  # an API key of the developer's application
    consumer: str


@pytest.fixture(scope="module")
def upstream() -> Iterator[RawUpstream]:
    with items_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: RawUpstream) -> Iterator[Gateway]:
    with demo_api_gateway(tmp_path_factory.mktemp("portal-api"), upstream.port) as running:
        yield running


async def _seed(database_url: str, email: str) -> Developer:
    """A verified developer with an application that has access to the demo API, a key
    of it, and a portal session (as the portal's own pages make them)."""
    engine = create_engine(database_url)
    try:
        secret = load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], Path())
        editor = ConfigEditor(ConfigRepository(engine))
        audit = AuditLog(engine)
        outbox = OutboxMailSender(engine)
        accounts = PortalAccounts(
            engine, audit, outbox, TEST_PASSWORD_HASHER, base_url="http://portal.test"
        )
        keys = KeyService(engine, secret, editor)
        apps = PortalApps(engine, editor, audit, outbox, keys, lambda: None)  # type: ignore[arg-type, return-value]
        facts = RequestFacts("req-browser", "127.0.0.1")
        dev = await accounts.sign_up(facts, email, PASSWORD, email.split("@")[0], verified=True)
        ctx = DeveloperContext(dev, facts)
        [team] = await accounts.teams(ctx)
        app = await apps.create_application(ctx, team.id, f"{dev.name}'s app")
        await apps.request_access(ctx, app.id, "demo")
        created = await apps.create_key(ctx, app.id, "production", "browser")
        session = await WebSessions(engine).create("developer", dev.id)
        return Developer(session.token, created.key, created.info.consumer)
    finally:
        await engine.dispose()


def seed(gw: Gateway, email: str) -> Developer:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _seed(gw.database_url, email)).result()


def _signed_in(context: BrowserContext, gw: Gateway, developer: Developer) -> None:
    context.add_cookies(
        [{"name": "pc_portal", "value": developer.session, "url": f"{gw.admin_url}/portal/"}]
    )


def test_docs_try_it_and_usage(page: Page, context: BrowserContext, gw: Gateway) -> None:
    alice = seed(gw, "alice@example.com")
    bob = seed(gw, "bob@example.com")
    errors = console_errors(page)
    _signed_in(context, gw, alice)
    page.goto(f"{gw.admin_url}/portal/apis")
    page.get_by_role("link", name="Demo API").click()
    page.get_by_role("link", name="Reference").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Demo API")
    operation = page.locator("#op-listItems")
    expect(operation).to_contain_text("GET /items")
    screenshot(page, "portal-api-reference")
    operation.get_by_role("link", name="Try it").click()
    expect(page.get_by_label("Path")).to_have_value("/v2/items")
    # What the key page's "Use in console" leaves in this tab: the console fills it in.
    page.evaluate("key => sessionStorage.setItem('portcullis.tryit.key', key)", alice.key)
    page.reload()
    expect(page.get_by_label("API key")).to_have_value(alice.key)
    page.get_by_role("button", name="Send").click()
    answer = page.locator("[data-tryit-state]")
    expect(answer).to_have_attribute("data-status", "200")
    expect(answer.locator(".rate-limit")).to_contain_text("ratelimit")
    expect(answer).to_contain_text('"name": "pen"')
    screenshot(page, "portal-api-tryit")
    page.get_by_role("link", name="Usage").click()
    chart = page.locator(f'[data-usage-chart][data-app="{alice.consumer}"]')
    # The live window is fetched again every 2 s: the call shows once its row is logged.
    expect(chart).to_have_attribute("data-requests", re.compile(r"^[1-9]"))
    expect(chart.locator("canvas")).to_have_count(1)
    screenshot(page, "portal-api-usage")
    # A rollup window: requests, errors and p95 latency (its own axis).
    page.get_by_label("Window").select_option("24h")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("[data-usage-chart]")).to_have_attribute("data-state", "ready")
    # Phone-sized: the reference docs fit the width (wide tables scroll on their own).
    page.set_viewport_size(PHONE)
    page.goto(f"{gw.admin_url}/portal/apis/demo/v2")
    expect(page.locator("#op-getItem")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "portal-api-reference-phone", full_page=False)
    assert errors == []
    # Bob sees his own application only, with nothing of Alice's call.
    context.clear_cookies()
    _signed_in(context, gw, bob)
    usage = page.request.get(f"{gw.admin_url}/portal/usage.json")
    assert usage.ok
    assert [a["app"] for a in usage.json()["apps"]] == [bob.consumer]
    assert usage.json()["apps"][0]["totals"]["requests"] == 0
