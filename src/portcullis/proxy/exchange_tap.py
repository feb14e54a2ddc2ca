"""The request inspector's tap on one sampled request (see proxy/inspector.py).

The proxy makes one for a request its route's capture session sampled
(`CaptureSession.admit`): it copies the first `BODY_LIMIT` bytes of the request body
as the upstream reads it and of the response as the client gets it, with the
response head, and at the end hands one redacted `CapturedExchange` to the
session's sink. Nothing of it exists for a request that was not sampled.
"""

from __future__ import annotations

from portcullis.analytics.record import RequestRecord
from portcullis.asgi import Message, Receive, Scope, Send
from portcullis.runtime.captures import (
    BODY_LIMIT,
    CapturedExchange,
    CaptureSession,
    Redaction,
    scrub,
)


class ExchangeTap:
    """What one sampled request sent and got back, as it streams (see the module doc)."""

    __slots__ = (
        "downstream",
        "redaction",
        "request_body",
        "request_size",
        "response_body",
        "response_headers",
        "response_size",
        "session",
    )

    def __init__(self, session: CaptureSession, redaction: Redaction, downstream: Send) -> None:
        self.session = session
        self.redaction = redaction
        self.downstream = downstream
        self.request_body = bytearray()
        self.request_size: int | None = None
        self.response_body = bytearray()
        self.response_size: int | None = None
        self.response_headers: list[tuple[bytes, bytes]] = []

    async def send(self, message: Message) -> None:
        """The client's `send`, noting the response head and the start of its body."""
        kind = message["type"]
        if kind == "http.response.start":
            self.response_headers = list(message.get("headers", ()))
            self.response_size = 0
        elif kind == "http.response.body":
            body: bytes = message.get("body", b"")
            self._keep(self.response_body, body)
            self.response_size = (self.response_size or 0) + len(body)
        await self.downstream(message)

    def receiving(self, receive: Receive) -> Receive:
        """`receive`, noting the start of the request body as it is read."""

        async def tapped() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body: bytes = message.get("body", b"")
                self._keep(self.request_body, body)
                self.request_size = (self.request_size or 0) + len(body)
            return message

        return tapped

    @staticmethod
    def _keep(kept: bytearray, chunk: bytes) -> None:
        room = BODY_LIMIT - len(kept)
        if room > 0 and chunk:
            kept += chunk[:room]

    def finish(self, scope: Scope, record: RequestRecord) -> None:
        """Hand the redacted exchange to the session's sink (the request is over).

        Credential values found in redacted headers and query parameters are scrubbed
        from both bodies too (an upstream that echoes its request would show them).
        """
        redaction = self.redaction
        secrets: set[bytes] = set()
        query = redaction.query_string(scope.get("query_string", b""), secrets)
        request_headers = redaction.header_list(scope["headers"], secrets)
        response_headers = redaction.header_list(self.response_headers, secrets)
        request_body: bytes | None = None
        if self.request_size is not None:
            request_body = scrub(bytes(self.request_body), secrets)
        response_body: bytes | None = None
        if self.response_size is not None:
            response_body = scrub(bytes(self.response_body), secrets)
        self.session.sink(
            CapturedExchange(
                session_id=self.session.id,
                route=self.session.route,
                captured_at=record.started_at,
                request_id=record.request_id,
                method=record.method,
                path=record.path,
                query=query,
                request_headers=request_headers,
                response_headers=response_headers,
                status=record.status,
                latency_ms=record.latency_ms,
                consumer=record.consumer,
                credential_id=record.credential_id,
                request_body=request_body,
                request_body_size=self.request_size,
                response_body=response_body,
                response_body_size=self.response_size,
            )
        )
