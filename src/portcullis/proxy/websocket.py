"""WebSocket proxying: the upstream handshake, the answer to the client's, and the relay.

`ProxyApp.handle_websocket` runs a handshake through the same checks and access
plugins as an HTTP request, then calls `WebSocketProxy.connect`; the client is
accepted only once the upstream accepted. Refusals (a plugin's 401/403/429, a 502
when the upstream can't be reached) are HTTP responses to the handshake, sent
through `handshake_responder`.

Closing under granian: granian sends nothing, not even a close frame, while a
`receive()` of the same connection is pending (its close waits for the receive
lock, which a pending receive holds until the client sends a frame). So when the
upstream side ends, the relay first cancels its pending receive (granian drops the
read when its future is cancelled) and only then closes the client connection.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import aiohttp
import structlog
from multidict import CIMultiDict

from portcullis import problems
from portcullis.asgi import Message, Receive, Scope, Send
from portcullis.problems import ProblemKind
from portcullis.proxy.paths import upstream_target
from portcullis.upstream.aiohttp_transport import tls_failure
from portcullis.upstream.balancer import Outcome

if TYPE_CHECKING:
    from portcullis.proxy.context import ProxyContext
    from portcullis.upstream.transport import Origin

log = structlog.get_logger(__name__)

# The client library performs its own handshake; these must not be copied from the client.
# Host goes upstream only with preserve_host (the one routing used); aiohttp otherwise
# sends the target's.
_HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"connection",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
# Codes an endpoint may send in a close frame (RFC 6455 §7.4, IANA registry).
_SENDABLE_CLOSE = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, *range(3000, 5000)}
)
# "Bad Gateway" (IANA WebSocket close code): the upstream connection ended without a close
# frame (crashed, killed, reset) or with a code that may not be relayed.
UPSTREAM_LOST = 1014
# Close codes meaning "no code was given": relayed as a normal closure.
_NO_CODE = frozenset({0, 1005})
_EXTENSION = "websocket.http.response"


class WebSocketUpstreamError(Exception):
    """The upstream handshake failed: how to answer the client and what the balancer learns."""

    def __init__(self, kind: ProblemKind, outcome: Outcome, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.outcome = outcome
        self.detail = detail


def handshake_responder(scope: Scope, send: Send) -> Send:
    """A `send` through which the HTTP response helpers answer a WebSocket handshake.

    With the ASGI `websocket.http.response` extension (granian has it) the client
    gets the status, headers and body as sent. Without it ASGI's only refusal is a
    close before accepting, which the server answers with a bare 403: the status
    and body are lost, the refusal is not.
    """
    if _EXTENSION in (scope.get("extensions") or ()):

        async def respond(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                message = {
                    "type": "websocket.http.response.start",
                    "status": message["status"],
                    "headers": one_line_per_name(message["headers"]),
                }
            elif kind == "http.response.body":
                message = {**message, "type": "websocket.http.response.body"}
            await send(message)

    else:

        async def respond(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                await send({"type": "websocket.close", "code": 1008})
            elif kind != "http.response.body":
                await send(message)

    return respond


def one_line_per_name(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Repeated fields combined into one line (RFC 9110 §5.3); a repeated Set-Cookie dropped.

    granian 2.8.7 panics on a repeated header name in a handshake response (its
    worker thread unwraps the missing name `HeaderMap::drain` gives repeats) and
    the worker process exits: one key-auth 401 with two challenges would kill it.
    """
    out: dict[bytes, bytes] = {}
    for name, value in headers:
        name = name.lower()
        prior = out.get(name)
        if prior is None:
            out[name] = value
        elif name != b"set-cookie":
            out[name] = prior + b", " + value
    return list(out.items())


def _close_code(code: int | None) -> int:
    if code is None or code in _NO_CODE:
        return 1000
    return code if code in _SENDABLE_CLOSE else UPSTREAM_LOST


class WebSocketProxy:
    """Opens the upstream side of a WebSocket and relays frames both ways."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def connect(
        self, ctx: ProxyContext, origin: Origin, matched_length: int
    ) -> aiohttp.ClientWebSocketResponse:
        """The upstream's accepted WebSocket; `WebSocketUpstreamError` when it can't be had."""
        route = ctx.route
        service = route.service
        forward: CIMultiDict[str] = CIMultiDict()
        for name, value in ctx.upstream_headers:
            if name not in _HANDSHAKE or (name == b"host" and route.preserve_host and value):
                forward.add(name.decode("latin-1"), value.decode("latin-1"))
        path = upstream_target(ctx.scope, route, matched_length, ctx.query_string)
        ws_scheme = "wss" if service.scheme == "https" else "ws"
        url = f"{ws_scheme}://{origin.authority}{path.decode('latin-1')}"
        timeouts = service.timeouts
        # The handshake is one request and its response head: connect plus read.
        limit = None
        if timeouts.connect is not None and timeouts.read is not None:
            limit = timeouts.connect + timeouts.read
        # wss: the service's origin TLS, as for its HTTP requests (upstream/tls.py).
        context: ssl.SSLContext | bool = True  # True: the session's default, the system store
        server_name: str | None = None
        if (tls := origin.tls) is not None:
            if tls.error is not None:
                raise WebSocketUpstreamError(
                    problems.UPSTREAM_TLS_FAILED,
                    Outcome.CONNECT_FAILURE,
                    f"Service {service.name!r}: {origin.authority}: {tls.error}",
                )
            context, server_name = tls.context, tls.server_name
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                return await self.session.ws_connect(
                    url,
                    protocols=tuple(ctx.scope.get("subprotocols") or ()),
                    headers=forward,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                    autoping=True,
                    max_msg_size=0,
                    ssl=context,
                    server_hostname=server_name,
                )
        except TimeoutError:
            raise WebSocketUpstreamError(
                problems.UPSTREAM_TIMEOUT,
                Outcome.TIMEOUT,
                f"Service {service.name!r}: no WebSocket handshake within "
                f"{time.monotonic() - started:.1f}s",
            ) from None
        except aiohttp.WSServerHandshakeError as exc:
            outcome = (
                Outcome.HTTP_FAILURE
                if service.pool.is_failure_status(exc.status)
                else Outcome.SUCCESS
            )
            raise WebSocketUpstreamError(
                problems.UPSTREAM_UPGRADE_REFUSED,
                outcome,
                f"Service {service.name!r} answered the WebSocket handshake with "
                f"{exc.status}: {exc.message}",
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise WebSocketUpstreamError(
                problems.UPSTREAM_TLS_FAILED,
                Outcome.CONNECT_FAILURE,
                f"Service {service.name!r}: {tls_failure(exc)}",
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise WebSocketUpstreamError(
                problems.UPSTREAM_CONNECT_FAILED,
                Outcome.CONNECT_FAILURE,
                f"Service {service.name!r}: {exc.strerror or 'connect failed'}",
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise WebSocketUpstreamError(
                problems.UPSTREAM_PROTOCOL_ERROR,
                Outcome.HTTP_FAILURE,
                f"Service {service.name!r}: {type(exc).__name__}",
            ) from None

    async def relay(
        self, upstream: aiohttp.ClientWebSocketResponse, receive: Receive, send: Send
    ) -> None:
        """Frames both ways until one side ends; the other side is then closed promptly.

        The client's close code goes upstream; the upstream's code and reason go to
        the client. An upstream that vanished without a close frame is reported as
        `UPSTREAM_LOST` (1014), never as a normal closure.
        """
        reader = asyncio.ensure_future(_client_to_upstream(upstream, receive))
        ended: tuple[int, str] | None = None
        try:
            ended = await _upstream_to_client(upstream, send)
            if ended is None:
                # The client left and the reader is closing the upstream: let it finish.
                await asyncio.wait([reader])
        finally:
            if not reader.done():
                # Releases granian's pending receive, without which the close is never sent.
                reader.cancel()
                await asyncio.wait([reader])
            await upstream.close()
        failure = None if reader.cancelled() else reader.exception()
        if failure is not None:
            log.info("websocket.client_side_failed", error=repr(failure))
        if ended is not None and (reader.cancelled() or failure is not None):
            try:
                await send({"type": "websocket.close", "code": ended[0], "reason": ended[1]})
            except Exception as exc:  # the client left meanwhile: nobody to tell
                log.debug("websocket.close_not_sent", error=repr(exc))


async def _client_to_upstream(upstream: aiohttp.ClientWebSocketResponse, receive: Receive) -> None:
    """Client frames to the upstream until the client disconnects (its code goes upstream)."""
    while True:
        msg = await receive()
        kind = msg["type"]
        if kind == "websocket.receive":
            text = msg.get("text")
            if text is not None:
                await upstream.send_str(text)
            else:
                data = msg.get("bytes")
                if data is not None:
                    await upstream.send_bytes(data)
        elif kind == "websocket.disconnect":
            code = msg.get("code", 1000)
            reason = msg.get("reason") or ""
            await upstream.close(
                code=code if code in _SENDABLE_CLOSE else 1000,
                message=reason.encode() if isinstance(reason, str) else b"",
            )
            return


async def _upstream_to_client(
    upstream: aiohttp.ClientWebSocketResponse, send: Send
) -> tuple[int, str] | None:
    """Upstream frames to the client until the upstream side ends: the close to relay.

    None when the upstream is closing because the client left (nothing to relay).
    """
    while True:
        msg = await upstream.receive()
        kind = msg.type
        if kind is aiohttp.WSMsgType.TEXT:
            await send({"type": "websocket.send", "text": msg.data})
        elif kind is aiohttp.WSMsgType.BINARY:
            await send({"type": "websocket.send", "bytes": msg.data})
        elif kind is aiohttp.WSMsgType.CLOSE:
            return _close_code(msg.data), msg.extra or ""
        elif kind is aiohttp.WSMsgType.CLOSING:
            return None
        else:
            # CLOSED or ERROR without a close frame first: the connection was lost (aiohttp
            # reports a bare EOF as code 1000, which would tell the client all is well).
            return UPSTREAM_LOST, "upstream connection lost"
