"""The request inspector in a real browser (chromium via Playwright) on a real gateway
in front of the echo upstream (issue 19): an operator starts a capture from the
dashboard (a bad duration is refused next to its field), watches a request made
through :8000 arrive without reloading, and opens it (credentials redacted, the body
cut at 1 KiB); then a developer signed in to the portal sees the exchange made with their
application's key, and not another consumer's."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import BrowserContext, Page, expect

from portcullis.identity.secrets import load_server_secret
from portcullis.services.portal import KeyEnvironment
from portcullis.services.web_sessions import WebSessions
from portcullis.store.engine import create_engine
from support import portal as portal_support
from support.admin_session import PASSWORD, signed_in_owner
from support.browser import console_errors, screenshot
from support.servers import Gateway, gateway, granian_app
from support.threaded_upstream import wait_until
from support.web import create_owner

TESTS_DIR = str(Path(__file__).resolve().parents[1])
OWNER = "inspector-ops@example.com"
BODY = "x" * 1500


@dataclass
class World:
    gw: Gateway
    developer_cookie: str
    developer_key: str
    other_key: str


async def _developer(database_url: str) -> tuple[str, str]:
    """A verified developer whose application has access to `shop` (approved at once),
    with a production key; their portal session token and the key."""
    engine = create_engine(database_url)
    try:
        secret = load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], Path())
        portal = portal_support.build(engine, secret=secret)
        ctx = await portal_support.developer(portal, "dev@example.com")
        (team, *_) = await portal.accounts.teams(ctx)
        app = await portal.apps.create_application(ctx, team.id, "shop-app", client_type="web")
        await portal.apps.request_access(ctx, app.id, "shop")
        key = await portal.apps.create_key(ctx, app.id, KeyEnvironment.production, "browser")
        session = await WebSessions(engine).create("developer", ctx.developer.id)
        return session.token, key.key
    finally:
        await engine.dispose()


def _in_thread(coro: Any) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("inspector-browser")
    with granian_app("support.body_echo:create_app", env={"PYTHONPATH": TESTS_DIR}) as echo:
        config = {
            "services": [{"name": "echo", "url": f"http://127.0.0.1:{echo}"}],
            "routes": [{"name": "shop-orders", "service": "echo", "paths": ["/shop"]}],
            "consumers": [{"username": "someone-else"}],
            "plugins": [
                {
                    "name": "key-auth",
                    "route": "shop-orders",
                    "config": {"header_names": ["x-shop-key"]},
                }
            ],
            "apis": [
                {
                    "name": "shop",
                    "versions": [{"name": "v1", "routes": ["shop-orders"]}],
                    "access": {"approval": "automatic"},
                }
            ],
        }
        path = tmp / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {"PORTCULLIS_INSPECTOR_FLUSH_INTERVAL": "0.05"}
        with gateway(tmp, path, extra_env=env) as gw:
            create_owner(gw.database_url, OWNER)
            token, key = _in_thread(_developer(gw.database_url))
            with signed_in_owner(gw, "keys@example.com") as admin:
                other = admin.post("/admin/v1/consumers/someone-else/keys", json={"name": "o"})
                assert other.status_code == 201, other.text
            world = World(gw, token, key, other.json()["key"])

            def served() -> bool:  # the approval's config version reached the worker
                with httpx.Client(base_url=gw.url, timeout=10) as client:
                    return client.get("/shop/ready", headers={"x-shop-key": key}).is_success

            wait_until(served, timeout=15)
            yield world


def _send(world: World, key: str, path: str) -> None:
    with httpx.Client(base_url=world.gw.url, timeout=10) as client:
        sent = client.post(path, content=BODY, headers={"x-shop-key": key})
        assert sent.status_code == 200, sent.text


def test_operator_captures_watches_and_opens_an_exchange(page: Page, world: World) -> None:
    errors = console_errors(page)
    admin = world.gw.admin_url
    page.goto(f"{admin}/dashboard/inspector")
    page.get_by_label("Email").fill(OWNER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Request inspector")).to_be_visible()
    page.get_by_label("Route", exact=True).select_option("shop-orders")
    page.get_by_label("Duration (seconds, at most 900)").fill("5000")
    page.get_by_role("button", name="Start capture").click()
    expect(page.locator("#duration_seconds-error")).to_contain_text("900")
    page.get_by_label("Duration (seconds, at most 900)").fill("600")
    page.get_by_role("button", name="Start capture").click()
    expect(page.get_by_role("heading", name="Capture of shop-orders")).to_be_visible()
    expect(page.locator("#capture-state")).to_contain_text("Recording")
    screenshot(page, "inspector-capture-empty")
    # The workers pick the capture up within a poll: send until one is recorded, and the
    # page shows it without a reload (htmx polls the rows every 2 s).
    row = page.get_by_role("link", name="POST /shop/orders")
    for _ in range(20):
        _send(world, world.developer_key, "/shop/orders")
        _send(world, world.other_key, "/shop/other")
        try:
            expect(row.first).to_be_visible(timeout=2500)
            break
        except AssertionError:
            continue
    expect(row.first).to_be_visible()
    screenshot(page, "inspector-capture")
    row.first.click()
    expect(page.get_by_role("heading", name="POST /shop/orders")).to_be_visible()
    headers = page.get_by_role("region", name="Request headers")
    expect(headers).to_contain_text("x-shop-key")
    expect(headers).to_contain_text("[redacted]")
    expect(page.get_by_role("region", name="Request body")).to_contain_text(
        "1500 bytes, the first 1024 shown (truncated)"
    )
    assert world.developer_key not in page.content()
    screenshot(page, "inspector-exchange")
    assert errors == []
    browser = page.context.browser
    assert browser is not None
    developer = browser.new_context()
    try:
        _developer_sees_only_their_own_exchanges(developer, world)
    finally:
        developer.close()


def _developer_sees_only_their_own_exchanges(context: BrowserContext, world: World) -> None:
    """Run after the operator's capture recorded exchanges (one journey, so the order
    is the test's own, not pytest's)."""
    context.add_cookies(
        [{"name": "pc_portal", "value": world.developer_cookie, "url": world.gw.admin_url}]
    )
    page = context.new_page()
    errors = console_errors(page)
    page.goto(f"{world.gw.admin_url}/portal/inspector")
    expect(page.get_by_role("heading", name="Captured requests")).to_be_visible()
    expect(page.get_by_role("link", name="POST /shop/orders").first).to_be_visible()
    expect(page.get_by_role("link", name="POST /shop/other")).to_have_count(0)
    screenshot(page, "portal-inspector")
    page.get_by_role("link", name="POST /shop/orders").first.click()
    expect(page.get_by_role("region", name="Request headers")).to_contain_text("[redacted]")
    assert errors == []
