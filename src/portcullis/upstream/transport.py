"""The `Transport` protocol every upstream client implements, and its error kinds.

The proxy only ever talks to this protocol, so the project's own HTTP/1.1 pool
(`http1.py`) and the aiohttp reference transport (`aiohttp_transport.py`) are
interchangeable and share one conformance suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from portcullis.http_fields import field_value_bytes, token_bytes
from portcullis.upstream.tls import OriginTls

Headers = list[tuple[bytes, bytes]]

# Methods whose repetition has the effect of one request (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request goes: scheme, host and port of one upstream target.

    `tls`: the service's origin-TLS settings for an `https` origin (None: the
    transport's default context, the system store, SNI = `host`); part of the pool key.
    """

    scheme: str
    host: str
    port: int
    tls: OriginTls | None = None

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TransportTimeouts:
    """Per-exchange timeouts in seconds; `None` means no limit."""

    connect: float | None = 5.0
    read: float | None = 60.0
    write: float | None = 60.0


@dataclass(slots=True)
class UpstreamRequest:
    """A request as sent upstream.

    `target` is the request-target (path and query) exactly as it goes on the
    wire. `headers` are already rewritten by the proxy (hop-by-hop removed,
    forwarding headers added) and must include `host`. `body` is either bytes
    (sent with Content-Length) or an async iterator of chunks: with
    `content_length` set it is sent with that Content-Length, otherwise chunked.

    A transport sends a request a second time only when it may have been lost
    to the keep-alive race (a reused connection closed before any response
    byte), and then only if `idempotent` (None: "if the method is") and
    `retry_gate()` (None: always) allow it: once its bytes were written the
    upstream may have acted on it. The proxy passes its retry budget as the gate.
    """

    method: str
    target: bytes
    headers: Headers
    body: bytes | AsyncIterator[bytes] = b""
    content_length: int | None = None
    idempotent: bool | None = None
    retry_gate: Callable[[], bool] | None = None

    def may_resend(self) -> bool:
        """Whether the request may go out again after its bytes were written."""
        idempotent = self.idempotent
        if idempotent is None:
            idempotent = self.method in IDEMPOTENT_METHODS
        return idempotent and (self.retry_gate is None or self.retry_gate())


@dataclass(slots=True)
class UpstreamResponse:
    """A response whose body is streamed: iterate `body`, then call `aclose()`.

    `aclose()` must always be called (also after an error or a partial read): it
    returns a fully-read keep-alive connection to the pool and discards others.
    """

    status: int
    headers: Headers
    body: AsyncIterator[bytes]
    reason: bytes = b""
    _closer: ResponseCloser | None = field(default=None, repr=False)

    async def aclose(self) -> None:
        if self._closer is not None:
            closer, self._closer = self._closer, None
            await closer.aclose()


class ResponseCloser(Protocol):
    async def aclose(self) -> None: ...


class Transport(Protocol):
    """Sends one request to an origin and returns a streaming response."""

    async def send(
        self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


class UpstreamError(Exception):
    """Base of every transport failure.

    `request_sent` tells the retry logic whether any byte of the request was
    written to the upstream (or may have been): a failure with
    `request_sent=False` is always safe to retry, whatever the method; after one
    with `request_sent=True` only an idempotent request may be sent again.
    """

    kind = "upstream-error"

    def __init__(self, message: str, *, request_sent: bool) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class ConnectError(UpstreamError):
    kind = "connect-error"

    def __init__(self, message: str) -> None:
        super().__init__(message, request_sent=False)


class TlsError(ConnectError):
    """The TLS handshake with the origin failed (certificate refused, hostname mismatch,
    client certificate refused); the message names the cause, never key material."""

    kind = "tls-error"

    def __init__(self, message: str, *, request_sent: bool = False) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class ConnectTimeout(UpstreamError):
    kind = "connect-timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, request_sent=False)


class WriteTimeout(UpstreamError):
    kind = "write-timeout"


class ReadTimeout(UpstreamError):
    kind = "read-timeout"


class RemoteProtocolError(UpstreamError):
    """The upstream closed the connection early or sent a malformed response."""

    kind = "protocol-error"


class ResponseTooLarge(UpstreamError):
    """The upstream's response head exceeded the configured maximum header size."""

    kind = "response-header-too-large"


class InvalidRequest(UpstreamError):
    """The gateway was about to send a request that is not valid HTTP; nothing was sent.

    A header name that is not a token, or a value or request-target with CR, LF,
    NUL or another control character, would let data the gateway copied into the
    request (a consumer's custom id, a configured value) split it into two. It is
    a fault on the gateway's side, not the upstream's.
    """

    kind = "invalid-request"

    def __init__(self, message: str) -> None:
        super().__init__(message, request_sent=False)


# The request-target (origin-form) is visible ASCII and obs-text; never SP or controls.
_TARGET_BYTES = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
_checked_names: set[bytes] = set()
# A bound on the memo of valid names (names come from clients too).
_NAMES_MEMO = 4096


def check_request_head(method: str, target: bytes, headers: Headers) -> None:
    """Raise `InvalidRequest` unless every part of the request head is valid on the wire.

    The transports call this before serialising a request, so no value can smuggle
    a header or a second request into the upstream connection, whatever layer
    above let it through. Valid names are memoised; values are checked with one
    `bytes.translate` over all of them.
    """
    if (
        not target
        or target.translate(None, _TARGET_BYTES)
        or (method not in _KNOWN_METHODS and not token_bytes(method.encode("latin-1")))
    ):
        raise InvalidRequest(f"invalid request line: {method!r} {target!r}")
    memo = _checked_names
    for name, _ in headers:
        if name not in memo:
            if not token_bytes(name):
                raise InvalidRequest(f"invalid header name {name!r}")
            if len(memo) < _NAMES_MEMO:
                memo.add(name)
    if not field_value_bytes(b"".join([v for _, v in headers])):
        for name, value in headers:
            if not field_value_bytes(value):
                raise InvalidRequest(
                    f"header {name.decode('latin-1')!r} has a control character in its value"
                )
