"""The aiohttp-based reference implementation of the `Transport` protocol.

It exists to keep the project's own pool (`http1.py`) honest: the conformance
suite runs against both. aiohttp is configured to act as a proxy client: no
decompression, no cookies, no automatic request headers, no redirects; the
body streams through `resp.content.iter_any()`.

Where aiohttp's behaviour differs from the protocol it is adapted here:

- aiohttp has no write timeout, so the request body is fed through a generator
  that moves a deadline forward around each chunk aiohttp writes.
- aiohttp's own retry of idempotent methods on a dead pooled connection is
  switched off (as aiohttp's test utilities do) and replaced by this
  transport's one retry, under the same rule as `Http1Transport`: only a
  request that may be sent again (`UpstreamRequest.may_resend`, which asks the
  caller's retry gate) with a bytes body. aiohttp does not say whether the dead
  connection was reused, so (unlike `Http1Transport`) that retry also happens
  after a fresh connection died without a response.
- aiohttp limits each header line (`max_field_size`), not the head as a whole:
  `max_header_bytes` bounds each line here.
- aiohttp parses bytes that arrive on an idle pooled connection and hands them
  to the next request as its response; here such bytes close the connection
  instead (`_IdleGuard`). Bytes that follow a HEAD/204/304 response in the same
  read make aiohttp fail that response too (`Http1Transport` keeps it).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncIterator
from typing import Any, Final, cast

import aiohttp
from aiohttp import http_exceptions
from aiohttp.client_proto import ResponseHandler
from multidict import CIMultiDict
from yarl import URL

from portcullis.upstream.tls import describe_tls_error
from portcullis.upstream.transport import (
    ConnectError,
    ConnectTimeout,
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

__all__ = ["AiohttpTransport", "tls_failure"]

# Bytes bodies up to this size go to aiohttp as-is (they fit the socket buffer, so
# writing them cannot stall); larger ones are fed through the write-deadline generator.
_PLAIN_BODY_LIMIT: Final = 64 * 1024
_FRAMING_NAMES: Final = frozenset({"content-length", "transfer-encoding"})
_NO_BODY_METHODS: Final = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
_SKIP_AUTO_HEADERS: Final = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type", "Host")


class _WriteDeadline:
    """A write timeout for aiohttp: a deadline armed only while aiohttp writes a chunk."""

    __slots__ = ("loop", "scope", "timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        self.loop = loop
        self.timeout = timeout
        self.scope: asyncio.Timeout | None = None

    def arm(self) -> None:
        scope = self.scope
        if scope is not None and self.timeout is not None:
            scope.reschedule(self.loop.time() + self.timeout)

    def disarm(self) -> None:
        if self.scope is not None:
            self.scope.reschedule(None)


async def _guarded_body(
    body: bytes | AsyncIterator[bytes], guard: _WriteDeadline
) -> AsyncIterator[bytes]:
    """Yield `body` to aiohttp with the write deadline armed while each chunk is written."""
    try:
        if isinstance(body, bytes):
            guard.arm()
            yield body
        else:
            async for chunk in body:
                guard.arm()
                yield chunk
                guard.disarm()
    finally:
        guard.disarm()


async def _stream(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.content.iter_any():
            yield chunk
    except Exception as exc:
        resp.close()
        raise _map_error(exc, request_sent=True) from exc


class _IdleGuard(ResponseHandler):
    """aiohttp's connection protocol, closed by any byte that arrives while it is idle.

    Idle means not acquired by a request (the connector's private `_acquired`
    set): the upstream sent more than its responses, so nothing it sends on
    this connection can be trusted to be the answer to the next request.
    """

    def __init__(self, connector: _Connector, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._owner = connector

    def data_received(self, data: bytes) -> None:
        if data and self not in self._owner._acquired:
            transport = self.transport
            if transport is not None:
                transport.abort()
            return
        super().data_received(data)


class _Connector(aiohttp.TCPConnector):
    """A `TCPConnector` whose connections are `_IdleGuard`s."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._factory = cast(
            "functools.partial[ResponseHandler]", functools.partial(_IdleGuard, self, self._loop)
        )


class _Closer:
    """Returns a fully received response's connection to aiohttp's pool, else closes it."""

    __slots__ = ("_resp",)

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    async def aclose(self) -> None:
        resp = self._resp
        if resp.content.is_eof():
            resp.release()
        else:
            resp.close()


def _caused_by_long_line(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, http_exceptions.LineTooLong):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def tls_failure(exc: BaseException) -> str | None:
    """What failed in an aiohttp TLS handshake, described (None: not a TLS failure)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return describe_tls_error(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientSSLError):
        return describe_tls_error(exc.os_error)
    return None


def _map_error(exc: BaseException, *, request_sent: bool) -> UpstreamError:
    """Translate an aiohttp failure into the transport's error kinds."""
    if isinstance(exc, UpstreamError):
        return exc
    if (cause := tls_failure(exc)) is not None:
        return TlsError(f"the upstream: {cause}")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectTimeout(f"connecting to the upstream timed out: {exc}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(f"cannot connect to the upstream: {exc}")
    if isinstance(exc, aiohttp.SocketTimeoutError | asyncio.TimeoutError):
        return ReadTimeout(f"upstream did not send data in time: {exc}", request_sent=True)
    if isinstance(exc, aiohttp.ClientResponseError) and _caused_by_long_line(exc):
        return ResponseTooLarge(f"upstream response head too large: {exc}", request_sent=True)
    return RemoteProtocolError(
        f"upstream exchange failed: {type(exc).__name__}: {exc}", request_sent=request_sent
    )


def _sent(exc: UpstreamError, resent: bool) -> UpstreamError:
    """`exc`, marked sent when an earlier attempt of the request already went out."""
    exc.request_sent = exc.request_sent or resent
    return exc


class AiohttpTransport:
    """`Transport` on an aiohttp `ClientSession` (created lazily on the running loop).

    Takes the same arguments as `Http1Transport`. `idle_timeout` becomes the
    connector's keep-alive timeout; `max_idle_per_origin` is accepted for parity
    only, as aiohttp's connector has no per-host idle cap.
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
        self._session: aiohttp.ClientSession | None = None
        self._bases: dict[Origin, str] = {}
        self._timeouts: dict[TransportTimeouts, aiohttp.ClientTimeout] = {}
        self._closed = False

    def _make_session(self) -> aiohttp.ClientSession:
        connector = _Connector(
            limit=0,
            limit_per_host=0,
            keepalive_timeout=self.idle_timeout,
            ssl=self._ssl_context if self._ssl_context is not None else True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(total=None),
            max_line_size=self.max_header_bytes,
            max_field_size=self.max_header_bytes,
            max_headers=max(128, self.max_header_bytes // 8),
            trust_env=False,
            requote_redirect_url=False,
        )
        # Private, but aiohttp's own test utilities set it: the retry is ours (see above).
        self._session._retry_connection = False
        return self._session

    def _client_timeout(self, timeouts: TransportTimeouts) -> aiohttp.ClientTimeout:
        ct = self._timeouts.get(timeouts)
        if ct is None:
            ct = aiohttp.ClientTimeout(
                total=None, sock_connect=timeouts.connect, sock_read=timeouts.read
            )
            if len(self._timeouts) < 1024:
                self._timeouts[timeouts] = ct
        return ct

    async def send(
        self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse:
        """Send `request` to `origin` through aiohttp and stream the response."""
        if self._closed:
            raise ConnectError("the upstream transport is closed")
        check_request_head(request.method, request.target, request.headers)
        session = self._session or self._make_session()
        base = self._bases.get(origin)
        if base is None:
            base = self._bases[origin] = f"{origin.scheme}://{origin.authority}"
        tls = origin.tls
        if tls is not None and tls.error is not None:
            raise TlsError(f"{origin.authority}: {tls.error}")
        tls_args: dict[str, Any] = (
            {} if tls is None else {"ssl": tls.context, "server_hostname": tls.server_name}
        )
        url = URL(base + request.target.decode("latin-1"), encoded=True)
        headers: CIMultiDict[str] = CIMultiDict(
            (n.decode("latin-1"), v.decode("latin-1"))
            for n, v in request.headers
            if n.lower().decode("latin-1") not in _FRAMING_NAMES
        )
        body = request.body
        retry = isinstance(body, bytes)
        if isinstance(body, bytes):
            if body or request.method not in _NO_BODY_METHODS:
                headers["Content-Length"] = str(len(body))
        elif request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        client_timeout = self._client_timeout(timeouts)
        resent = False
        while True:
            guard: _WriteDeadline | None = None
            data: bytes | AsyncIterator[bytes] | None
            if isinstance(body, bytes) and len(body) <= _PLAIN_BODY_LIMIT:
                data = body or None
            else:
                guard = _WriteDeadline(asyncio.get_running_loop(), timeouts.write)
                data = _guarded_body(body, guard)
            try:
                resp = await self._request(
                    session, request.method, url, headers, data, client_timeout, guard, tls_args
                )
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if (
                    retry
                    and not isinstance(exc, aiohttp.ClientConnectorError)
                    and request.may_resend()
                ):
                    retry = False
                    resent = True
                    continue
                raise _sent(_map_error(exc, request_sent=True), resent) from exc
            except UpstreamError as exc:
                _sent(exc, resent)
                raise
            except Exception as exc:
                raise _sent(_map_error(exc, request_sent=True), resent) from exc
            reason = resp.reason.encode("latin-1") if resp.reason else b""
            return UpstreamResponse(
                resp.status,
                [(n.lower(), v) for n, v in resp.raw_headers],
                _stream(resp),
                reason,
                _Closer(resp),
            )

    async def _request(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        data: bytes | AsyncIterator[bytes] | None,
        timeout: aiohttp.ClientTimeout,
        guard: _WriteDeadline | None,
        tls_args: dict[str, Any],
    ) -> aiohttp.ClientResponse:
        if guard is None:
            return await session.request(
                method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=timeout,
                **tls_args,
            )
        try:
            async with asyncio.timeout(None) as scope:
                guard.scope = scope
                resp = await session.request(
                    method,
                    url,
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    timeout=timeout,
                    **tls_args,
                )
        except TimeoutError as exc:
            if scope.expired():
                raise WriteTimeout(
                    f"upstream did not accept request body data within {guard.timeout}s",
                    request_sent=True,
                ) from exc
            raise
        finally:
            guard.scope = None
        return resp

    async def aclose(self) -> None:
        """Close the session and its connections; later sends fail with `ConnectError`."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
