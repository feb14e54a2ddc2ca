"""Cross-site request forgery protection of the web applications.

Every request whose method can change something (anything but GET, HEAD, OPTIONS)
must:

1. come from this origin when the browser says where it came from: an `Origin` header
   (or, without one, a `Referer`) naming another scheme, host or port is refused, and so
   is `Origin: null`;
2. echo the synchronizer token: form field `csrf_token` or header `X-CSRF-Token` equal
   (constant-time) to the session's token; before sign-in (the login and sign-up forms),
   to the value of a pre-session cookie set with the form (double submit: another site
   can neither read nor set it).

A refusal is `CsrfRefused` (403), raised before the page's handler runs: nothing changes.
htmx sends the token as a header (static/js/web.js reads `<meta name="csrf-token">`).
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from portcullis.web.sessions import current_session, is_tls, web_app_of

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FIELD = "csrf_token"
HEADER = "x-csrf-token"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class CsrfRefused(Exception):
    """A state-changing request without this origin or the session's token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def pre_session_cookie(request: Request) -> str:
    return f"{web_app_of(request).cookie}_csrf"


def csrf_token(request: Request) -> str:
    """The token a page of `request` must put in its forms (and its csrf-token meta)."""
    session = getattr(request.state, "web_session", None)
    if session is not None:
        token: str = session.csrf_token
        return token
    existing = request.cookies.get(pre_session_cookie(request), "")
    if 20 <= len(existing) <= 64:
        return existing
    pending: str | None = getattr(request.state, "pending_csrf", None)
    if pending is None:
        pending = secrets.token_urlsafe(32)
        request.state.pending_csrf = pending
    return pending


def set_pending_cookies(request: Request, response: Response) -> None:
    """Set the pre-session token cookie a rendered form needs (when `csrf_token` made one)."""
    pending = getattr(request.state, "pending_csrf", None)
    if pending is not None:
        response.set_cookie(
            pre_session_cookie(request),
            pending,
            path=web_app_of(request).root,
            httponly=True,
            samesite="strict",
            secure=is_tls(request),
        )


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(request: Request) -> bool:
    """False when the request says it came from another origin (see the module)."""
    expected = f"{request.url.scheme}://{request.headers.get('host', '')}".lower()
    origin = request.headers.get("origin")
    if origin is not None:
        return _origin_of(origin) == expected
    referer = request.headers.get("referer")
    if referer is not None:
        return _origin_of(referer) == expected
    return True


async def _presented_token(request: Request) -> str:
    header = request.headers.get(HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in _FORM_TYPES:
        form = await request.form()
        value = form.get(FIELD)
        if isinstance(value, str):
            return value
    return ""


async def csrf_protect(request: Request) -> None:
    """Dependency of every web route: raises `CsrfRefused` (see the module)."""
    if request.method in SAFE_METHODS:
        return
    if not same_origin(request):
        raise CsrfRefused("the request came from another site")
    session = await current_session(request)
    expected = (
        session.csrf_token
        if session is not None
        else request.cookies.get(pre_session_cookie(request), "")
    )
    presented = await _presented_token(request)
    if (
        not expected
        or not presented
        or not hmac.compare_digest(expected.encode(), presented.encode())
    ):
        raise CsrfRefused("the form's security token is missing or out of date: reload the page")
