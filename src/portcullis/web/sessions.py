"""The session cookie of a web application and the session behind it.

Each application has its own cookie (`pc_dashboard` on Path=/dashboard, `pc_portal` on
Path=/portal): HttpOnly, SameSite=Lax, Secure when the request came over TLS. It holds
only the session token; the session itself is in the store (services/web_sessions.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import RedirectResponse, Response

from portcullis.services.web_sessions import SessionKind, WebSession, WebSessions


@dataclass(frozen=True, slots=True)
class WebApp:
    """One web application: where it lives, its cookie, its sessions' kind, and the
    control plane's shared objects (`services`: a name -> object lookup, because
    they exist only once the control plane's lifespan has opened the store)."""

    name: str  # "dashboard" | "portal"
    title: str
    root: str  # "/dashboard"
    cookie: str
    kind: SessionKind
    services: Callable[[str], Any]

    @property
    def login_path(self) -> str:
        return f"{self.root}/login"

    def sessions(self) -> WebSessions:
        sessions: WebSessions = self.services("web_sessions")
        return sessions


def web_app_of(conn: HTTPConnection) -> WebApp:
    """The web application serving a request (set on its sub-application's state)."""
    web: WebApp = conn.app.state.web
    return web


def safe_next(conn: HTTPConnection, value: str | None, home: str = "/") -> str:
    """Where to go after sign-in: a path inside this application (no other host, no
    backslash tricks), else `home` within it."""
    root = web_app_of(conn).root
    if value and value.startswith(root + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return root + home


def session_token(conn: HTTPConnection) -> str | None:
    return conn.cookies.get(web_app_of(conn).cookie)


async def current_session(conn: HTTPConnection) -> WebSession | None:
    """The live session of the request's cookie (looked up once per request)."""
    if hasattr(conn.state, "web_session"):
        cached: WebSession | None = conn.state.web_session
        return cached
    web = web_app_of(conn)
    session = await web.sessions().lookup(session_token(conn), web.kind)
    conn.state.web_session = session
    return session


def is_tls(conn: HTTPConnection) -> bool:
    return conn.url.scheme in ("https", "wss")


def set_session_cookie(conn: HTTPConnection, response: Response, token: str) -> None:
    web = web_app_of(conn)
    response.set_cookie(
        web.cookie,
        token,
        path=web.root,
        httponly=True,
        samesite="lax",
        secure=is_tls(conn),
    )


def clear_session_cookie(conn: HTTPConnection, response: Response) -> None:
    web = web_app_of(conn)
    response.delete_cookie(
        web.cookie, path=web.root, httponly=True, samesite="lax", secure=is_tls(conn)
    )


async def sign_out(conn: HTTPConnection) -> Response:
    """End the request's session (the store forgets it, the cookie goes) and go to the
    sign-in page: the dashboard's and the portal's `POST /logout`."""
    web = web_app_of(conn)
    await web.sessions().delete(session_token(conn))
    response = RedirectResponse(web.login_path, status_code=303)
    clear_session_cookie(conn, response)
    return response
