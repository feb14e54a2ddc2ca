"""Helpers for tests of the web applications (dashboard and portal)."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor

import httpx

from support.admin_session import PASSWORD, _create_owner

_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def create_owner(database_url: str, email: str) -> None:
    """An owner `email` (password `PASSWORD`) in the store (from a thread: the caller may
    run in an event loop)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _create_owner(database_url, email)).result()


def form_token(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF_FIELD.search(html)
    assert found is not None, "the page has no form with a csrf_token"
    return found.group(1)


def dashboard_sign_in(client: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    """Sign `client` in to the dashboard through its login form; the POST's response."""
    page = client.get("/dashboard/login")
    assert page.status_code == 200, page.text
    return client.post(
        "/dashboard/login",
        data={"email": email, "password": password, "csrf_token": form_token(page.text)},
        headers={"origin": str(client.base_url).rstrip("/")},
    )
