"""Security headers on every control-plane response (plain ASGI, no per-request framework)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_COMMON: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
# API responses are data: nothing in them may load or run anything, nor be cached.
_API = (
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
)
# The documentation pages run the bundled Swagger UI / ReDoc scripts from this origin.
_DOCS = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
        b"'unsafe-inline'; img-src 'self' data: blob:; worker-src 'self' blob:; "
        b"frame-ancestors 'none'",
    ),
)
# The GraphiQL page (/graphql) sets its own, stricter policy (portcullis/graph/graphiql.py).
DOCS_PREFIXES = ("/docs", "/redoc", "/static/docs/", "/static/graphiql/")


class SecurityHeadersMiddleware:
    """Adds nosniff, framing, referrer, CSP and cache headers unless a response set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        extra = _COMMON + (_DOCS if path.startswith(DOCS_PREFIXES) else _API)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend((k, v) for k, v in extra if k not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
