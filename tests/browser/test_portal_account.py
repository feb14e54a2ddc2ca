"""The portal's account journey in a real browser (chromium via Playwright) on a real
gateway: sign up → verify the email through the outbox → register an application →
request access to an API with automatic approval → a key shown once (a reload does not
show it again), with the time the journey took printed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from support.browser import PHONE, console_errors, screenshot
from support.portal_pages import register_application, sign_up_and_verify
from support.servers import Gateway, free_port, gateway

CONFIG = """
upstreams:
  - name: pets
    targets: [{target: "127.0.0.1:%(upstream)d"}]
services:
  - name: pets
    upstream: pets
routes:
  - name: pets
    service: pets
    paths: [/pets]
plugins:
  - name: key-auth
    route: pets
    config: {}
apis:
  - name: petstore
    title: Pet store
    routes: [pets]
    versions:
      - name: v1
    access: {approval: automatic}
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("portal")
    config = tmp / "gateway.yaml"
    config.write_text(CONFIG % {"upstream": free_port()})
    with gateway(tmp, config, extra_env={"PORTCULLIS_PORTAL_OUTBOX_VIEW": "true"}) as running:
        yield running


def test_sign_up_verify_app_access_and_a_key_shown_once(page: Page, gw: Gateway) -> None:
    errors = console_errors(page)
    started = time.monotonic()
    sign_up_and_verify(page, gw.admin_url, "Ada", "ada@example.com", shots="portal")
    register_application(page, "Pet shop", "web", api="petstore")

    page.get_by_role("button", name="Create sandbox key").click()
    secret = page.get_by_label("API key", exact=True)
    expect(secret).to_be_visible()
    key = secret.input_value()
    assert key.startswith("pc_dev_")
    elapsed = time.monotonic() - started
    screenshot(page, "portal-app-key-shown-once")
    print(f"portal journey: sign-up to a key in {elapsed:.1f} s (browser, test speed)")

    page.reload()  # a GET of the page: the key is never shown again
    expect(page.get_by_role("heading", name="Pet shop")).to_be_visible()
    expect(page.get_by_label("API key", exact=True)).to_have_count(0)
    assert key not in page.content()
    # ... and the reload made no second key (it was a GET, not the form again).
    sandbox = page.get_by_role("region", name="Sandbox keys")
    expect(sandbox.locator("tbody tr")).to_have_count(1)

    # The key is the gateway's: the route's key-auth knows it (the upstream is not running).
    answer = httpx.get(f"{gw.url}/pets", headers={"x-api-key": key}, timeout=10)
    assert answer.status_code not in (401, 403), answer.text

    page.set_viewport_size(PHONE)
    screenshot(page, "portal-app-phone")
    assert errors == []
