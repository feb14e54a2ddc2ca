"""The web applications' security on a real control plane (granian): CSRF, Origin,
CSP and policy headers, no external assets, the sign-in lockout, session cookies, the
dashboard WebSocket's cookie authentication, sessions ending with the user's access."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from portcullis.services.rbac import Role
from portcullis.store.migrations import upgrade_to_head
from portcullis.web.security import CONTENT_SECURITY_POLICY
from support.admin_session import PASSWORD
from support.live_events import publish
from support.servers import ControlPlane, control_plane
from support.web import create_admin, create_owner, dashboard_sign_in, form_token

OWNER = "owner@example.com"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    path: Path = tmp_path_factory.mktemp("web") / "store.db"
    url = f"sqlite+aiosqlite:///{path}"
    asyncio.run(upgrade_to_head(url))
    create_owner(url, OWNER)
    # Live sockets check their session again at every heartbeat, each second (default 15).
    env = {"PORTCULLIS_STREAM_RECHECK_SECONDS": "1", "PORTCULLIS_STREAM_HEARTBEAT_SECONDS": "1"}
    with control_plane(url, env=env) as running:
        yield running


def client(plane: ControlPlane) -> httpx.Client:
    return httpx.Client(base_url=plane.url, timeout=10)


@pytest.fixture
def signed_in(plane: ControlPlane) -> Iterator[httpx.Client]:
    with client(plane) as c:
        assert dashboard_sign_in(c, OWNER).status_code == 303
        yield c


def _rest_token(plane: ControlPlane, email: str) -> str:
    with client(plane) as c:
        login = c.post("/admin/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        return str(login.json()["access_token"])


def test_a_state_change_without_the_csrf_token_is_refused_and_changes_nothing(
    signed_in: httpx.Client, plane: ControlPlane
) -> None:
    home = signed_in.get("/dashboard/")
    assert home.status_code == 200
    token = form_token(home.text)
    origin = {"origin": plane.url}
    for refused in (
        signed_in.post("/dashboard/logout", headers=origin),
        signed_in.post("/dashboard/logout", data={"csrf_token": "forged"}, headers=origin),
        # The right token from another site's page.
        signed_in.post(
            "/dashboard/logout", data={"csrf_token": token}, headers={"origin": "http://evil.test"}
        ),
        signed_in.post(
            "/dashboard/logout",
            data={"csrf_token": token},
            headers={"referer": "http://evil.test/page"},
        ),
    ):
        assert refused.status_code == 403
        assert "content-security-policy" in refused.headers
    assert signed_in.get("/dashboard/").status_code == 200  # still signed in
    out = signed_in.post("/dashboard/logout", data={"csrf_token": token}, headers=origin)
    assert out.status_code == 303
    # Now signed out: the home is the sign-in form, every other page sends there.
    home = signed_in.get("/dashboard/")
    assert home.status_code == 200
    assert 'name="password"' in home.text
    assert signed_in.get("/dashboard/audit").status_code == 303
    # The page's old sign-out button: its session ended, so no error, just the sign-in.
    again = signed_in.post("/dashboard/logout", data={"csrf_token": token}, headers=origin)
    assert again.status_code == 303
    assert again.headers["location"] == "/dashboard/login"


def test_sign_in_needs_the_pre_session_token_too(plane: ControlPlane) -> None:
    with client(plane) as c:
        response = c.post("/dashboard/login", data={"email": OWNER, "password": PASSWORD})
        assert response.status_code == 403
        assert "pc_dashboard" not in response.cookies


def test_session_cookie_flags(plane: ControlPlane) -> None:
    with client(plane) as c:
        response = dashboard_sign_in(c, OWNER)
    cookie = next(
        v for k, v in response.headers.multi_items() if k == "set-cookie" and "pc_dashboard=" in v
    )
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path=/dashboard", "samesite=lax"} <= flags
    assert "secure" not in flags  # plain HTTP here; over TLS it is set (unit test)
    assert re.match(r"pc_dashboard=pcs_[A-Za-z0-9_-]{40,};", cookie)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href", "action") and v]
        if tag == "script" and "src" not in values:
            self.inline_scripts += 1
        self.handlers += [k for k, _ in attrs if k.startswith(("on", "hx-on"))]


def test_every_page_has_the_policy_and_no_external_or_inline_code(
    signed_in: httpx.Client, plane: ControlPlane
) -> None:
    pages = [
        "/dashboard/",
        "/dashboard/live/alerts",
        "/dashboard/live/upstreams",
        "/dashboard/live/anomalies",
        "/dashboard/live/consumers",
        "/dashboard/live/events",
        "/dashboard/no-such-page",
        "/portal/",
        "/portal/no-such-page",
    ]
    with client(plane) as anonymous:
        responses = [signed_in.get(p) for p in pages]
        responses += [anonymous.get("/dashboard/login"), anonymous.get("/dashboard/")]
    for response in responses:
        where = response.request.url.path
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, where
        assert response.headers["x-frame-options"] == "DENY", where
        assert response.headers["cache-control"] == "no-store", where
        if not response.headers.get("content-type", "").startswith("text/html"):
            continue
        links = _Links()
        links.feed(response.text)
        external = [u for u in links.urls if u.startswith(("http:", "https:", "//"))]
        assert external == [], where
        assert links.inline_scripts == 0, where
        assert links.handlers == [], where
    # Assets come from this origin, cached, under the same policy.
    page = signed_in.get("/dashboard/")
    for asset in re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', page.text):
        fetched = signed_in.get(asset)
        assert fetched.status_code == 200, asset
        assert fetched.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "max-age" in fetched.headers["cache-control"]


def test_the_sign_in_lockout_applies_to_the_dashboard(plane: ControlPlane) -> None:
    email = "locked@example.com"
    create_owner(plane.database_url, email)
    with client(plane) as c:
        for _ in range(5):  # AuthService's MAX_FAILURES
            assert dashboard_sign_in(c, email, "wrong").status_code == 401
        locked = dashboard_sign_in(c, email)  # the right password, now refused
        assert locked.status_code == 429
        assert int(locked.headers["retry-after"]) > 0
        assert "pc_dashboard=" not in locked.headers.get("set-cookie", "")
        # One lockout: the REST login of the account is locked as well.
        rest = c.post("/admin/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert rest.status_code == 429
        # Audited like REST sign-ins: 5 wrong passwords, then the locked attempt.
        c.headers["authorization"] = f"Bearer {_rest_token(plane, OWNER)}"
        audit = c.get("/admin/v1/audit-events", params={"actor": f"user:{email}", "limit": 50})
        assert audit.status_code == 200, audit.text
        statuses = sorted(e["status"] for e in audit.json()["items"])
        assert statuses == [401] * 5 + [429, 429], statuses


def test_disabling_the_user_ends_their_dashboard_session(plane: ControlPlane) -> None:
    email = "leaver@example.com"
    create_owner(plane.database_url, email)
    with client(plane) as browser, client(plane) as admin:
        assert dashboard_sign_in(browser, email).status_code == 303
        assert browser.get("/dashboard/").status_code == 200
        admin.headers["authorization"] = f"Bearer {_rest_token(plane, OWNER)}"
        users = admin.get("/admin/v1/admin-users").json()
        user = next(u for u in users["items"] if u["email"] == email)
        assert admin.patch(
            f"/admin/v1/admin-users/{user['id']}", json={"disabled": True}
        ).is_success
        assert 'name="password"' in browser.get("/dashboard/").text
        assert browser.get("/dashboard/audit").status_code == 303


async def test_the_dashboard_socket_takes_the_session_cookie_from_this_origin_only(
    plane: ControlPlane,
) -> None:
    with client(plane) as c:
        assert dashboard_sign_in(c, OWNER).status_code == 303
        cookie = f"pc_dashboard={c.cookies['pc_dashboard']}"
    url = plane.url.replace("http://", "ws://") + "/dashboard/ws"
    headers = {"cookie": cookie, "origin": plane.url}
    async with connect(url, additional_headers=headers, open_timeout=10) as ws:
        welcome = await asyncio.wait_for(ws.recv(), 10)
        assert '"type":"welcome"' in str(welcome)
        assert '"actor":"user:owner@example.com"' in str(welcome)
    for refused in ({"cookie": cookie, "origin": "http://evil.test"}, {"cookie": cookie}):
        with pytest.raises(InvalidStatus) as caught:
            async with connect(url, additional_headers=refused, open_timeout=10):
                pass
        assert caught.value.response.status_code == 403
    # No session: the socket closes with 4401 after the upgrade.
    async with connect(url, additional_headers={"origin": plane.url}, open_timeout=10) as ws:
        await ws.wait_closed()
        assert ws.close_code == 4401
    # Signing out ends an open socket of the session (at its next check: `closed`, 4401).
    async with connect(url, additional_headers=headers, open_timeout=10) as ws:
        assert '"type":"welcome"' in str(await asyncio.wait_for(ws.recv(), 10))
        with client(plane) as c:
            c.cookies.set("pc_dashboard", cookie.partition("=")[2], path="/dashboard")
            token = form_token(c.get("/dashboard/").text)
            out = c.post("/dashboard/logout", data={"csrf_token": token})
            assert out.status_code == 303
        messages = await _until_closed(ws)
        assert any('"type":"closed"' in m for m in messages), messages
        assert ws.close_code == 4401


def test_an_organization_admin_sees_what_the_api_shows_them(plane: ControlPlane) -> None:
    with client(plane) as owner:
        owner.headers["authorization"] = f"Bearer {_rest_token(plane, OWNER)}"
        created = owner.post("/admin/v1/organizations", json={"name": "acme"})
        assert created.status_code == 201, created.text
        organization = created.json()["id"]
    create_admin(plane.database_url, "acme-viewer@example.com", Role.VIEWER, organization)
    with client(plane) as c:
        assert dashboard_sign_in(c, "acme-viewer@example.com").status_code == 303
        assert c.get("/dashboard/").status_code == 200
        # Alerting is gateway-wide: GET /admin/v1/alerts refuses this caller, the panel says so.
        assert "gateway-wide" in c.get("/dashboard/live/alerts").text
        # Events: the organization's, not the gateway-wide ones (as GET /admin/v1/events).
        with ThreadPoolExecutor(1) as pool:
            (wide,) = pool.submit(asyncio.run, publish(plane.database_url, 1)).result()
            (own,) = pool.submit(
                asyncio.run, publish(plane.database_url, 1, organization_id=organization)
            ).result()
        events = c.get("/dashboard/live/events").text
        assert f'data-event-id="{own.id}"' in events
        assert f'data-event-id="{wide.id}"' not in events
        # Read-only: the viewer's session signs out (a POST) but changes nothing else.
        token = form_token(c.get("/dashboard/").text)
        out = c.post("/dashboard/logout", data={"csrf_token": token})
        assert out.status_code == 303


async def _until_closed(ws: ClientConnection) -> list[str]:
    """The messages a socket gets until the server closes it."""
    messages: list[str] = []
    while True:
        try:
            messages.append(str(await asyncio.wait_for(ws.recv(), 10)))
        except ConnectionClosed:
            return messages
