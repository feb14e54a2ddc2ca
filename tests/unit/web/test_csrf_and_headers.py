"""CSRF checks (web/csrf.py) and the web security headers (web/security.py) on a small
app built like the web applications, with sessions in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from portcullis.services.web_sessions import WebSession
from portcullis.web.csrf import CsrfRefused, csrf_protect, csrf_token
from portcullis.web.dashboard.login import safe_next
from portcullis.web.security import CONTENT_SECURITY_POLICY, WebSecurityHeaders
from portcullis.web.sessions import WebApp, set_session_cookie
from portcullis.web.templating import render

NOW = datetime(2030, 1, 1, tzinfo=UTC)
SESSION = WebSession("s1", "admin", "u1", "the-session-csrf-token-0123456789", NOW, NOW, NOW)


class MemorySessions:
    async def lookup(self, token: str | None, kind: str) -> WebSession | None:
        return SESSION if token == "pcs_good" and kind == "admin" else None


def make_app() -> tuple[FastAPI, list[str]]:
    changes: list[str] = []
    app = FastAPI(dependencies=[Depends(csrf_protect)])
    sessions = MemorySessions()
    app.state.web = WebApp("dashboard", "Test", "", "pc_test", "admin", lambda name: sessions)

    @app.get("/form")
    async def form(request: Request) -> Response:
        return PlainTextResponse(csrf_token(request))

    @app.get("/page")
    async def page(request: Request) -> Response:
        return render(request, "error.html", {"title": "T", "status": 200, "detail": "d"})

    @app.post("/change")
    async def change(request: Request) -> Response:
        changes.append("changed")
        return PlainTextResponse("ok")

    async def refused(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(str(exc), status_code=403)

    app.add_exception_handler(CsrfRefused, refused)
    app.add_middleware(WebSecurityHeaders)
    return app, changes


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, list[str]]]:
    app, changes = make_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://web.test") as c:
        yield c, changes


async def test_a_session_request_needs_its_token(
    client: tuple[httpx.AsyncClient, list[str]],
) -> None:
    c, changes = client
    c.cookies.set("pc_test", "pcs_good")
    token = SESSION.csrf_token
    assert (await c.post("/change")).status_code == 403
    assert (await c.post("/change", data={"csrf_token": "wrong"})).status_code == 403
    assert (await c.post("/change", headers={"x-csrf-token": token[:-1]})).status_code == 403
    assert changes == []
    assert (await c.post("/change", data={"csrf_token": token})).status_code == 200
    assert (await c.post("/change", headers={"x-csrf-token": token})).status_code == 200
    assert len(changes) == 2


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"origin": "http://web.test"}, True),
        ({"origin": "http://evil.test"}, False),
        ({"origin": "https://web.test"}, False),  # another scheme is another origin
        ({"origin": "http://web.test:8080"}, False),
        ({"origin": "null"}, False),
        ({"referer": "http://web.test/form"}, True),
        ({"referer": "http://evil.test/web.test"}, False),
        ({}, True),  # neither: the token alone decides
    ],
)
async def test_another_origin_is_refused_even_with_the_token(
    client: tuple[httpx.AsyncClient, list[str]], headers: dict[str, str], allowed: bool
) -> None:
    c, changes = client
    c.cookies.set("pc_test", "pcs_good")
    response = await c.post("/change", data={"csrf_token": SESSION.csrf_token}, headers=headers)
    assert (response.status_code == 200) is allowed
    assert bool(changes) is allowed


async def test_before_sign_in_the_form_token_is_a_double_submit_cookie(
    client: tuple[httpx.AsyncClient, list[str]],
) -> None:
    c, changes = client
    page = await c.get("/page")
    token = page.cookies["pc_test_csrf"]
    assert f'<meta name="csrf-token" content="{token}">' in page.text
    set_cookie = page.headers["set-cookie"].lower()
    assert "httponly" in set_cookie
    assert "samesite=strict" in set_cookie
    assert (await c.post("/change", data={"csrf_token": "guess-" * 6})).status_code == 403
    assert (await c.post("/change", data={"csrf_token": token})).status_code == 200
    # Without the cookie (another site's form), the same value is refused.
    c.cookies.clear()
    assert (await c.post("/change", data={"csrf_token": token})).status_code == 403
    assert changes == ["changed"]


async def test_every_response_gets_the_policy_headers(
    client: tuple[httpx.AsyncClient, list[str]],
) -> None:
    c, _ = client
    for response in (await c.get("/page"), await c.post("/change"), await c.get("/missing")):
        headers: Any = response.headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
        assert "'unsafe-eval'" not in CONTENT_SECURITY_POLICY
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"


@pytest.mark.parametrize(("scheme", "secure"), [("https", True), ("http", False)])
def test_the_session_cookie_is_secure_over_tls(scheme: str, secure: bool) -> None:
    app, _ = make_app()
    scope = {
        "type": "http",
        "scheme": scheme,
        "method": "GET",
        "path": "/",
        "headers": [(b"host", b"web.test")],
        "app": app,
    }
    response = PlainTextResponse("")
    set_session_cookie(Request(scope), response, "pcs_token")
    flags = [f.strip().lower() for f in response.headers["set-cookie"].split(";")]
    assert ("secure" in flags) is secure
    assert "httponly" in flags


@pytest.mark.parametrize(
    ("wanted", "safe"),
    [
        ("/dashboard/routes?x=1", "/dashboard/routes?x=1"),
        ("//evil.test/dashboard/", "/dashboard/"),
        ("https://evil.test/dashboard/", "/dashboard/"),
        ("/dashboard\\@evil.test", "/dashboard/"),
        ("/portal/", "/dashboard/"),
        (None, "/dashboard/"),
    ],
)
def test_sign_in_returns_only_inside_the_application(wanted: str | None, safe: str) -> None:
    app = FastAPI()
    app.state.web = WebApp("dashboard", "T", "/dashboard", "pc_test", "admin", lambda _: None)
    request = Request({"type": "http", "app": app, "headers": []})
    assert safe_next(request, wanted) == safe


async def test_an_unhandled_error_still_gets_the_policy_headers() -> None:
    """A page that crashes answers Starlette's plain 500, made by the outermost
    ServerErrorMiddleware: the web application's headers must wrap that one too."""
    from portcullis.web.app import _build

    web = WebApp("dashboard", "Test", "/dashboard", "pc_test", "admin", lambda name: None)
    app = _build(web, ())

    @app.get("/boom")
    async def boom() -> Response:
        raise RuntimeError("a bug in a page")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://web.test") as c:
        response = await c.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert "a bug in a page" not in response.text
