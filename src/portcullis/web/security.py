"""Headers on every web response: a Content-Security-Policy without inline scripts or
styles, framing refused, no referrer, no sniffing, and no caching of pages (they carry
a session's data and CSRF token). Plain ASGI, on each web sub-application."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
_ALWAYS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)
_PAGE_CACHE = (b"cache-control", b"no-store")
# Static files are addressed with their content hash (`?v=`): cached for a day.
_STATIC_CACHE = (b"cache-control", b"public, max-age=86400")


class WebSecurityHeaders:
    """Sets the web policy headers on every HTTP response of the wrapped app (they
    replace any the app set, so no page can weaken them)."""

    def __init__(self, app: ASGIApp, *, static_prefix: str = "/static/") -> None:
        self.app = app
        self.static_prefix = static_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        static = path.removeprefix(root).startswith(self.static_prefix)
        extra = (*_ALWAYS, _STATIC_CACHE if static else _PAGE_CACHE)
        names = {name for name, _ in extra}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*kept, *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
