"""The project's own HTTP/1.1 keep-alive client pool on asyncio + httptools (llhttp).

One `_Connection` is an `asyncio.Protocol` that carries one exchange at a time:
the request head (and a small body) goes out in a single write, llhttp parses the
response in `data_received`, and the body is handed to the caller through a
bounded buffer that pauses the socket when it fills, so a response of any size
streams with flat memory. `Http1Transport` keeps idle connections in a LIFO stack
per origin, expires them before the upstream's own keep-alive timeout would, and
retries exactly once when a reused connection turns out to have been closed by
the upstream before any byte of the response arrived (the keep-alive race) —
for a request whose bytes were written only if it may be sent again
(`UpstreamRequest.may_resend`): the upstream may have received it.

Response header names are lowercased; values, order and duplicates are kept.
Request framing (`content-length` / `transfer-encoding`) is always decided here
from the body, so any such header in `UpstreamRequest.headers` is dropped.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Final, cast

import httptools

from portcullis.upstream.tls import default_context, describe_tls_error
from portcullis.upstream.transport import (
    ConnectError,
    ConnectTimeout,
    Headers,
    Origin,
    ReadTimeout,
    RemoteProtocolError,
    ResponseTooLarge,
    TlsError,
    TransportTimeouts,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
    WriteTimeout,
    check_request_head,
)

__all__ = ["Http1Transport", "body_ends_at_eof", "build_request_head", "head_keep_alive"]

# Body bytes buffered per response before the socket is paused; bounds memory per stream.
_READ_HIGH_WATER: Final = 256 * 1024
# Bodies up to this size are copied behind the head so the request is one write.
_JOIN_LIMIT: Final = 64 * 1024

_FRAMING_NAMES: Final = frozenset({b"content-length", b"transfer-encoding"})
# Methods whose empty body is sent without any framing header (RFC 9110 §8.6).
_NO_BODY_METHODS: Final = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
_METHOD_PREFIX: Final[dict[str, bytes]] = {
    m: m.encode("ascii") + b" "
    for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
}
_VERSION_LINE: Final = b" HTTP/1.1\r\n"
_CHUNKED_LINE: Final = b"transfer-encoding: chunked\r\n\r\n"
_CHUNKED_END: Final = b"0\r\n\r\n"


def build_request_head(
    method: str, target: bytes, headers: Headers, content_length: int | None, chunked: bool
) -> bytes:
    """Serialise a request line and header block, ending with the blank line.

    Framing headers in `headers` are dropped and replaced by `transfer-encoding:
    chunked` when `chunked`, else by `content-length` when `content_length` is not
    None, else by nothing. Raises `InvalidRequest` for a field that is not valid
    on the wire (header injection), before anything is written.
    """
    check_request_head(method, target, headers)
    prefix = _METHOD_PREFIX.get(method)
    if prefix is None:
        prefix = method.encode("ascii") + b" "
    parts = [prefix, target, _VERSION_LINE]
    for name, value in headers:
        n = len(name)
        if (n == 14 or n == 17) and name.lower() in _FRAMING_NAMES:
            continue
        parts += (name, b": ", value, b"\r\n")
    if chunked:
        parts.append(_CHUNKED_LINE)
    elif content_length is not None:
        parts.append(b"content-length: %d\r\n\r\n" % content_length)
    else:
        parts.append(b"\r\n")
    return b"".join(parts)


def body_ends_at_eof(headers: Headers) -> bool:
    """Whether a final response with a body is delimited by the connection closing.

    True when it has neither `content-length` nor a `transfer-encoding` ending in
    chunked (RFC 9112 §6.3, rule 7). `headers` must have lowercase names.
    """
    for name, value in headers:
        if name == b"content-length":
            return False
        if name == b"transfer-encoding" and value.rstrip().lower().endswith(b"chunked"):
            return False
    return True


def head_keep_alive(http_version: str, headers: Headers) -> bool:
    """Whether a connection stays open after a response, from its version and `connection`.

    Used for HEAD responses, whose framing llhttp cannot be told to skip; other
    responses use llhttp's own answer. `headers` must have lowercase names.
    """
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    if http_version == "1.1":
        return b"close" not in tokens
    return http_version == "1.0" and b"keep-alive" in tokens and b"close" not in tokens


class _StaleConnection(Exception):
    """A connection closed before any response byte: a retry candidate, never raised out.

    `sent`: whether request bytes were written to it (then the upstream may have
    received the request, and only a request that may be resent is retried).
    """

    def __init__(self, *, sent: bool) -> None:
        super().__init__()
        self.sent = sent


def _wake(fut: asyncio.Future[bool] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(True)


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


class _Connection(asyncio.Protocol):
    """One upstream connection and the state of the exchange it carries."""

    __slots__ = (
        "_active",
        "_body_consumed",
        "_body_waiter",
        "_buffered",
        "_chunks",
        "_complete",
        "_deadline",
        "_drain_waiter",
        "_error",
        "_got_bytes",
        "_head_done",
        "_head_fed",
        "_head_waiter",
        "_headers",
        "_interim",
        "_is_head",
        "_keep_alive",
        "_loop",
        "_max_header",
        "_parser",
        "_parser_stale",
        "_pool",
        "_read_timeout",
        "_reading_paused",
        "_reason",
        "_status",
        "_timed_waiter",
        "_timer",
        "_timer_when",
        "_transport",
        "_write_paused",
        "closed",
        "idle",
        "idle_since",
        "origin",
        "reusable",
        "tls13",
    )

    def __init__(
        self, pool: Http1Transport, origin: Origin, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._pool = pool
        self.origin = origin
        self._loop = loop
        self._max_header = pool.max_header_bytes
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._parser_stale = False
        self.closed = False
        self.idle = False
        self.idle_since = 0.0
        self.reusable = True
        self.tls13 = False
        self._write_paused = False
        self._reading_paused = False
        self._drain_waiter: asyncio.Future[bool] | None = None
        self._head_waiter: asyncio.Future[bool] | None = None
        self._body_waiter: asyncio.Future[bool] | None = None
        self._chunks: list[bytes] = []
        self._headers: Headers = []
        self._deadline = 0.0
        self._timed_waiter: asyncio.Future[bool] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._reset(False, None)

    def _reset(self, is_head: bool, read_timeout: float | None) -> None:
        self._active = False
        self._is_head = is_head
        self._read_timeout = read_timeout
        self._got_bytes = False
        self._body_consumed = False
        self._head_fed = 0
        self._head_done = False
        self._interim = False
        self._complete = False
        self._keep_alive = False
        self._status = 0
        self._reason = b""
        self._buffered = 0
        self._error: UpstreamError | _StaleConnection | None = None

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio and uvloop both enable TCP_NODELAY on TCP transports already.
        self._transport = cast(asyncio.Transport, transport)
        if self.origin.scheme == "https":
            # Called once the TLS handshake is done: once per connection.
            ssl_object = transport.get_extra_info("ssl_object")
            self.tls13 = ssl_object is not None and ssl_object.version() == "TLSv1.3"

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pool._forget(self)
        if self._active and self._error is None:
            if not self._head_done:
                if self._got_bytes:
                    self._error = RemoteProtocolError(
                        "upstream closed the connection inside the response head",
                        request_sent=True,
                    )
                elif isinstance(exc, ssl.SSLError):
                    # TLS 1.3: the origin refuses a client certificate after the handshake.
                    self._error = TlsError(
                        f"{self.origin.authority}: {describe_tls_error(exc)}", request_sent=True
                    )
                else:
                    # `exchange` writes before it first yields, so the request went out.
                    self._error = _StaleConnection(sent=True)
            elif not self._complete:
                if exc is None and body_ends_at_eof(self._headers):
                    self._complete = True
                else:
                    self._error = RemoteProtocolError(
                        "upstream closed the connection before the end of the response body",
                        request_sent=True,
                    )
        self._wake_all()

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        _wake(waiter)

    def data_received(self, data: bytes) -> None:
        if not self._active or self._complete:
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            self.reusable = False
            if self.idle:
                self.close()
            return
        self._got_bytes = True
        if not self._head_done:
            self._head_fed += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._parse_failed(exc)
            return
        except httptools.HttpParserUpgrade:
            self._fail(RemoteProtocolError("upstream switched protocols", request_sent=True))
            return
        if not self._head_done and self._head_fed > self._max_header:
            self._fail(self._too_large())

    def _parse_failed(self, exc: httptools.HttpParserError) -> None:
        """Fail the exchange for a parse error; an error raised by a callback wins."""
        if self._complete:
            # Bytes after a complete response: the response stands, the connection goes.
            self.close()
            return
        cause = exc.__context__
        if isinstance(cause, UpstreamError):
            self._fail(cause)
        else:
            self._fail(
                RemoteProtocolError(
                    f"invalid HTTP/1.1 response from upstream: {exc}", request_sent=True
                )
            )

    # -- httptools callbacks -----------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            raise RemoteProtocolError("upstream sent a second response", request_sent=True)
        self._headers = []

    def on_status(self, status: bytes) -> None:
        self._reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                raise RemoteProtocolError("upstream switched protocols", request_sent=True)
            self._interim = True
            return
        if self._head_fed > self._max_header and self._head_size() > self._max_header:
            raise self._too_large()
        self._status = status
        self._head_done = True
        if self._is_head:
            # llhttp cannot be told that a HEAD response has no body, so the
            # exchange ends here and the parser is replaced before the next one.
            self._complete = True
            self._parser_stale = True
            self._keep_alive = head_keep_alive(parser.get_http_version(), self._headers)
        else:
            self._keep_alive = parser.should_keep_alive()
        waiter, self._head_waiter = self._head_waiter, None
        _wake(waiter)
        # An early final response also ends any request body upload in progress.
        waiter, self._drain_waiter = self._drain_waiter, None
        _wake(waiter)

    def on_body(self, body: bytes) -> None:
        if self._complete:
            raise RemoteProtocolError(
                "upstream sent a body after a HEAD response", request_sent=True
            )
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered >= _READ_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()
        waiter, self._body_waiter = self._body_waiter, None
        _wake(waiter)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._complete:
            return
        self._complete = True
        waiter, self._body_waiter = self._body_waiter, None
        _wake(waiter)

    # -- helpers -----------------------------------------------------------------

    def _head_size(self) -> int:
        return 15 + len(self._reason) + sum(len(n) + len(v) + 4 for n, v in self._headers)

    def _too_large(self) -> ResponseTooLarge:
        return ResponseTooLarge(
            f"upstream response head exceeds {self._max_header} bytes", request_sent=True
        )

    def _fail(self, exc: UpstreamError) -> None:
        if self._error is None:
            self._error = exc
        self.close()
        self._wake_all()

    def _wake_all(self) -> None:
        for waiter in (self._head_waiter, self._body_waiter, self._drain_waiter):
            _wake(waiter)
        self._head_waiter = self._body_waiter = self._drain_waiter = None

    async def _wait(self, fut: asyncio.Future[bool], timeout: float | None) -> bool:
        """Wait for a wake-up on `fut`; False when `timeout` expired first.

        Rather than a timer per wait, the connection keeps one timer that is only
        moved when it fires: a wait just records its deadline, and `_on_timer`
        either expires the waiter or re-arms for the deadline now in force.
        """
        if timeout is None:
            return await fut
        loop = self._loop
        deadline = loop.time() + timeout
        self._deadline = deadline
        self._timed_waiter = fut
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._on_timer)
            self._timer_when = deadline
        elif self._timer_when > deadline:
            self._timer.cancel()
            self._timer = loop.call_at(deadline, self._on_timer)
            self._timer_when = deadline
        try:
            return await fut
        finally:
            self._deadline = 0.0
            self._timed_waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline == 0.0 or self.closed:
            return
        if self._loop.time() >= deadline:
            waiter = self._timed_waiter
            if waiter is not None:
                _expire(waiter)
        else:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_when = deadline

    async def _drain(self, timeout: float | None) -> None:
        """Wait until the transport's write buffer drains, the response head arrives or
        the connection fails."""
        fut = self._loop.create_future()
        self._drain_waiter = fut
        if not await self._wait(fut, timeout):
            raise WriteTimeout(
                f"upstream did not accept request body data within {timeout}s", request_sent=True
            )
        if self._write_paused and self._head_done:
            # Answered before it read the whole request: the rest is still queued.
            self.reusable = False

    def close(self) -> None:
        """Close the connection without waiting for anything in flight."""
        self.reusable = False
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.abort()

    def close_idle(self) -> None:
        """Close an idle connection gracefully (nothing is in flight)."""
        self.idle = False
        self.reusable = False
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.close()

    # -- one exchange ------------------------------------------------------------

    async def exchange(self, request: UpstreamRequest, timeouts: TransportTimeouts) -> None:
        """Send `request` and wait for the final response head.

        Raises `_StaleConnection` when the connection closed before any response
        byte arrived, and an `UpstreamError` for every other failure.
        """
        if self._parser_stale:
            self._parser = httptools.HttpResponseParser(self)
            self._parser_stale = False
        method = request.method
        self._reset(method == "HEAD", timeouts.read)
        self._active = True
        transport = self._transport
        assert transport is not None
        if self.closed:
            raise _StaleConnection(sent=False)
        body = request.body
        if isinstance(body, bytes):
            size = len(body)
            head = build_request_head(
                method,
                request.target,
                request.headers,
                None if size == 0 and method in _NO_BODY_METHODS else size,
                False,
            )
            if size == 0:
                transport.write(head)
            elif size <= _JOIN_LIMIT:
                transport.write(head + body)
            else:
                transport.writelines((head, body))
            if self._write_paused and not self._head_done:
                await self._drain(timeouts.write)
        else:
            await self._send_stream(request, body, timeouts.write)
        while not self._head_done:
            if self._error is not None:
                raise self._error
            fut = self._loop.create_future()
            self._head_waiter = fut
            if not await self._wait(fut, timeouts.read):
                raise ReadTimeout(
                    f"upstream sent no response within {timeouts.read}s", request_sent=True
                )
        if self._error is not None:
            raise self._error

    async def _send_stream(
        self, request: UpstreamRequest, body: AsyncIterator[bytes], write_timeout: float | None
    ) -> None:
        length = request.content_length
        chunked = length is None
        transport = self._transport
        assert transport is not None
        transport.write(
            build_request_head(request.method, request.target, request.headers, length, chunked)
        )
        sent = 0
        while True:
            if self._head_done:
                # The upstream answered before the body was complete: stop sending;
                # the request is cut short on the wire, so the connection can't be reused.
                self.reusable = False
                return
            if self._error is not None:
                raise self._error
            try:
                chunk = await anext(body)
            except StopAsyncIteration:
                break
            self._body_consumed = True
            if self._error is not None:
                raise self._error
            if not chunk:
                continue
            sent += len(chunk)
            if chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                if length is not None and sent > length:
                    self.close()
                    raise UpstreamError(
                        f"request body is longer than its declared length {length}",
                        request_sent=True,
                    )
                transport.write(chunk)
            if self._write_paused:
                await self._drain(write_timeout)
        if chunked:
            transport.write(_CHUNKED_END)
        elif sent != length:
            self.close()
            raise UpstreamError(
                f"request body ended after {sent} of its declared {length} bytes",
                request_sent=True,
            )
        if self._write_paused and not self._head_done:
            await self._drain(write_timeout)

    def replayable(self, request: UpstreamRequest) -> bool:
        """Whether `request` can be sent again after this connection went stale."""
        return isinstance(request.body, bytes) or not self._body_consumed

    def response(self) -> UpstreamResponse:
        body = _ResponseBody(self)
        return UpstreamResponse(self._status, self._headers, body, self._reason, body)

    async def read_body(self) -> bytes | None:
        """Return the next body bytes, or None once the body is complete."""
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                if self._reading_paused:
                    self._reading_paused = False
                    if not self.closed:
                        assert self._transport is not None
                        self._transport.resume_reading()
                return data
            if self._error is not None:
                raise self._error
            if self._complete:
                return None
            fut = self._loop.create_future()
            self._body_waiter = fut
            if not await self._wait(fut, self._read_timeout):
                self.close()
                raise ReadTimeout(
                    f"upstream sent no response body data within {self._read_timeout}s",
                    request_sent=True,
                )

    def finish(self) -> None:
        """End the exchange: a fully read keep-alive connection goes back to the pool."""
        self._active = False
        if self._chunks:
            self._chunks.clear()
            self._buffered = 0
        if (
            self._complete
            and self._keep_alive
            and self.reusable
            and self._error is None
            and not self.closed
        ):
            if self._reading_paused:
                self._reading_paused = False
                assert self._transport is not None
                self._transport.resume_reading()
            self._pool._release(self)
        else:
            self.close()


class _ResponseBody:
    """The streaming body of one response and its closer (see `UpstreamResponse`)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: _Connection) -> None:
        self._conn: _Connection | None = conn

    def __aiter__(self) -> _ResponseBody:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        try:
            data = await conn.read_body()
        except BaseException:
            self._conn = None
            conn.finish()
            raise
        if data is None:
            self._conn = None
            conn.finish()
            raise StopAsyncIteration
        return data

    async def aclose(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.finish()


class Http1Transport:
    """HTTP/1.1 keep-alive connection pool implementing the `Transport` protocol.

    `idle_timeout` must be below the upstream's keep-alive timeout (nginx: 75 s)
    so the pool drops a connection before the upstream does; the one-shot retry
    covers the remaining race. `max_header_bytes` bounds a response head.
    `ssl_context` replaces the default context for `https` origins (tests use it
    to trust a private CA). Not safe to share across event loops.
    """

    def __init__(
        self,
        max_idle_per_origin: int = 64,
        idle_timeout: float = 30.0,
        max_header_bytes: int = 64 * 1024,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_idle_per_origin = max_idle_per_origin
        self.idle_timeout = idle_timeout
        self.max_header_bytes = max_header_bytes
        self._ssl_context = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._conns: set[_Connection] = set()
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._closed = False

    async def send(
        self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse:
        """Send `request` to `origin`; the response body streams from the connection."""
        conn = self._pop_idle(origin)
        resent = False
        if conn is not None:
            try:
                await conn.exchange(request, timeouts)
                return conn.response()
            except _StaleConnection as stale:
                if stale.sent and not (conn.replayable(request) and request.may_resend()):
                    raise RemoteProtocolError(
                        "reused upstream connection closed before the response; the request "
                        "may have reached the upstream and is not sent again",
                        request_sent=True,
                    ) from None
                resent = stale.sent
            except BaseException:
                conn.close()
                raise
        try:
            conn = await self._connect(origin, timeouts.connect)
        except UpstreamError as exc:
            # The request went out on the dead connection before this connect failed.
            exc.request_sent = exc.request_sent or resent
            raise
        try:
            await conn.exchange(request, timeouts)
        except _StaleConnection as stale:
            if conn.tls13:
                # Under TLS 1.3 an origin checks the client certificate after the client's
                # handshake ended; many then close without an alert, and only this is seen.
                raise TlsError(
                    f"{origin.authority}: the origin closed the connection right after the "
                    "TLS handshake without answering (as an origin refusing the client "
                    "certificate, or its absence, does under TLS 1.3)",
                    request_sent=stale.sent,
                ) from None
            raise RemoteProtocolError(
                "upstream closed the connection without sending a response",
                request_sent=stale.sent,
            ) from None
        except BaseException:
            conn.close()
            raise
        return conn.response()

    async def aclose(self) -> None:
        """Close every connection, idle or in use; later sends fail with `ConnectError`."""
        self._closed = True
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        self._idle.clear()
        conns = list(self._conns)
        for conn in conns:
            if conn.idle:
                conn.close_idle()
            else:
                conn.close()
        if conns:
            # Let the transports run their connection_lost callbacks and free the sockets.
            await asyncio.sleep(0)

    def idle_count(self, origin: Origin) -> int:
        """How many idle connections the pool holds for `origin` (for tests and metrics)."""
        return len(self._idle.get(origin, ()))

    # -- pool internals ------------------------------------------------------------

    def _pop_idle(self, origin: Origin) -> _Connection | None:
        stack = self._idle.get(origin)
        while stack:
            conn = stack.pop()
            conn.idle = False
            if conn.closed:
                continue
            if conn._loop.time() - conn.idle_since > self.idle_timeout:
                # The stack is LIFO, so everything below is older still.
                conn.close_idle()
                for old in stack:
                    old.close_idle()
                stack.clear()
                return None
            return conn
        return None

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        if self._closed:
            raise ConnectError("the upstream transport is closed")
        loop = asyncio.get_running_loop()
        conn = _Connection(self, origin, loop)
        tls: ssl.SSLContext | None = None
        server_name: str | None = None
        if origin.scheme == "https":
            if origin.tls is not None:
                if origin.tls.error is not None:
                    raise TlsError(f"{origin.authority}: {origin.tls.error}")
                tls, server_name = origin.tls.context, origin.tls.name_for(origin.host)
            else:
                tls, server_name = self._tls_context(), origin.host
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: conn, origin.host, origin.port, ssl=tls, server_hostname=server_name
                )
        except TimeoutError:
            raise ConnectTimeout(
                f"connecting to {origin.authority} took longer than {timeout}s"
            ) from None
        except ssl.SSLError as exc:
            raise TlsError(f"{origin.authority}: {describe_tls_error(exc)}") from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {origin.authority}: {exc}") from exc
        if conn.closed:
            raise ConnectError(f"connection to {origin.authority} closed right after connecting")
        self._conns.add(conn)
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = default_context()
        return self._ssl_context

    def _release(self, conn: _Connection) -> None:
        if self._closed or self.max_idle_per_origin <= 0:
            conn.close_idle()
            return
        conn.idle = True
        conn.idle_since = conn._loop.time()
        stack = self._idle.get(conn.origin)
        if stack is None:
            stack = self._idle[conn.origin] = []
        elif len(stack) >= self.max_idle_per_origin:
            stack.pop(0).close_idle()
        stack.append(conn)
        if self._sweep_handle is None:
            self._sweep_handle = conn._loop.call_later(
                max(self.idle_timeout / 2, 0.05), self._sweep, conn._loop
            )

    def _forget(self, conn: _Connection) -> None:
        """Drop a closed connection from the pool's bookkeeping."""
        self._conns.discard(conn)
        if conn.idle:
            conn.idle = False
            stack = self._idle.get(conn.origin)
            if stack is not None and conn in stack:
                stack.remove(conn)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close idle connections past `idle_timeout`; re-arms while any stay idle."""
        self._sweep_handle = None
        deadline = loop.time() - self.idle_timeout
        for origin, stack in list(self._idle.items()):
            expired = 0
            while expired < len(stack) and stack[expired].idle_since <= deadline:
                expired += 1
            for conn in stack[:expired]:
                conn.close_idle()
            del stack[:expired]
            if not stack:
                del self._idle[origin]
        if self._idle and not self._closed:
            self._sweep_handle = loop.call_later(
                max(self.idle_timeout / 2, 0.05), self._sweep, loop
            )
