"""The data-plane ASGI application: route, run the plugin chain, balance, proxy, stream back."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

import structlog

from portcullis import problems
from portcullis.analytics.record import Flag, RequestObserver, RequestRecord
from portcullis.asgi import Message, Receive, Scope, Send
from portcullis.plugins.base import BODY_BUFFER_LIMIT, AnyPlugin, PluginResponse
from portcullis.problems import ProblemKind, with_occurrence
from portcullis.proxy.context import ProxyContext
from portcullis.proxy.exchange_tap import ExchangeTap
from portcullis.proxy.headers import (
    TrustedProxies,
    new_request_id,
    rewrite_request_headers,
    rewrite_response_headers,
    sample_threshold,
    valid_request_id,
)
from portcullis.proxy.paths import upstream_target
from portcullis.proxy.responses import is_problem, request_instance, send_bytes, send_problem
from portcullis.proxy.target import Refusal, route_request
from portcullis.proxy.websocket import WebSocketUpstreamError, handshake_responder
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import CompiledRoute, CompiledService
from portcullis.settings import Settings
from portcullis.upstream.balancer import Outcome, RetryBudget, TargetState, UpstreamPool
from portcullis.upstream.shedding import Permit, Shedding
from portcullis.upstream.transport import (
    IDEMPOTENT_METHODS,
    ConnectError,
    ConnectTimeout,
    InvalidRequest,
    ReadTimeout,
    TlsError,
    Transport,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
    WriteTimeout,
)

if TYPE_CHECKING:
    import aiohttp

    from portcullis.upstream.transport import Origin

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

# Bodies up to this size are read before proxying, so a failed attempt can be retried.
REPLAYABLE_BODY = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})
_CLOSE = (b"connection", b"close")


class _BodyTooLarge(Exception):
    """A streamed request body passed the configured limit mid-stream (becomes a 413)."""


class _ClientGone(Exception):
    """The request body stopped before its end (becomes a 400 that closes the connection).

    granian reports a body it cannot parse (bad chunk size or extension) with the
    same `http.disconnect` as a client that went away, so both end here: the
    answer reaches a client that is still there and costs nothing if it is not.
    """


class _BodyGuard:
    """Counts a streamed request body against the limit; remembers why streaming stopped."""

    __slots__ = ("consumed", "gone", "limit", "too_large", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.consumed = False
        self.gone = False
        self.too_large = False
        self.total = 0

    async def stream(self, receive: Receive) -> AsyncIterator[bytes]:
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # Remembered: a transport may wrap the exception raised into its body.
                self.gone = True
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            if chunk:
                total += len(chunk)
                self.total = total
                if self.limit and total > self.limit:
                    self.too_large = True
                    raise _BodyTooLarge
                self.consumed = True
                yield chunk
            if not message.get("more_body", False):
                return


def _replaying(first: Message, receive: Receive) -> Receive:
    """`receive` with `first`, already taken from it, given back first."""
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def _prepend(parts: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    async for chunk in rest:
        yield chunk


class _Exchange:
    """What the request log needs to know about one request, filled in as it goes.

    Only created when the worker has observers; `send` counts what goes out.
    """

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "client_parent",
        "ctx",
        "error_kind",
        "flags",
        "raw_send",
        "request_id",
        "route",
        "started",
        "status",
        "tap",
        "upstream_ended",
        "upstream_started",
        "upstream_target",
        "wall",
    )

    def __init__(self, send: Send) -> None:
        self.raw_send = send
        self.wall = time.time()
        self.started = time.monotonic()
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.route: CompiledRoute | None = None
        self.ctx: ProxyContext | None = None
        self.error_kind: str | None = None
        self.flags = 0
        self.upstream_started = 0.0
        self.upstream_ended = 0.0
        self.upstream_target: str | None = None
        # The id the response carries when no request context exists yet (404, 414...).
        self.request_id = b""
        self.client_parent = b""
        # The request inspector's tap when the route's capture sampled this request.
        self.tap: ExchangeTap | None = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start" or kind == "websocket.http.response.start":
            self.status = message["status"]
        elif kind == "websocket.accept":
            self.status = 101
        elif kind == "websocket.close" and not self.status:
            self.status = 403  # a close before accepting: the server refuses with 403
        else:
            self.bytes_out += len(message.get("body", b""))
        await self.raw_send(message)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
    return None


def _closing(scope: Scope) -> list[tuple[bytes, bytes]] | None:
    """`Connection: close` for an answer after which the HTTP/1.x framing is in doubt.

    HTTP/2 frames each stream on its own (and forbids the header).
    """
    return [_CLOSE] if scope.get("http_version") != "2" else None


def _error_kind(exc: UpstreamError) -> tuple[ProblemKind, Outcome]:
    if isinstance(exc, TlsError):
        return problems.UPSTREAM_TLS_FAILED, Outcome.CONNECT_FAILURE
    if isinstance(exc, ConnectTimeout):
        return problems.UPSTREAM_TIMEOUT, Outcome.TIMEOUT
    if isinstance(exc, ReadTimeout | WriteTimeout):
        return problems.UPSTREAM_TIMEOUT, Outcome.TIMEOUT
    if isinstance(exc, ConnectError):
        return problems.UPSTREAM_CONNECT_FAILED, Outcome.CONNECT_FAILURE
    return problems.UPSTREAM_PROTOCOL_ERROR, Outcome.HTTP_FAILURE


def _forwarded_https(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a trusted proxy in front says the client used TLS (X-Forwarded-Proto)."""
    for name, value in headers:
        if name == b"x-forwarded-proto":
            # The client-side hop is the first entry of a list a chain of proxies built.
            return value.split(b",", 1)[0].strip().lower() == b"https"
    return False


_REDIRECT_HOST = re.compile(rb"([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")


def https_location(scope: Scope, tls_port: int | None) -> bytes | None:
    """`https://host[:tls_port]/path?query` for a plain-HTTP request (`wss://` for a
    WebSocket handshake; None: no usable Host).

    The port is the TLS listener's (`PORTCULLIS_PROXY_TLS_PORT`), left out when it is
    443 or unset (TLS terminated in front on the default port), never the request's.
    The path goes as it came (`raw_path`, still percent-encoded).
    """
    host = b""
    for name, value in scope["headers"]:
        if name == b"host":
            host = value
            break
    match = _REDIRECT_HOST.fullmatch(host)
    if match is None:
        return None
    authority = match.group(1).lower()
    if tls_port is not None and tls_port != 443:
        authority += b":%d" % tls_port
    path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    query: bytes = scope.get("query_string", b"")
    # A WebSocket handshake goes to wss (clients that follow redirects take ws/wss only).
    scheme = b"wss://" if scope["type"] == "websocket" else b"https://"
    return scheme + authority + path + (b"?" + query if query else b"")


def _hash_key(ctx: ProxyContext) -> str | None:
    """What a consistent-hashing service hashes on for this request (None: the client IP)."""
    service = ctx.route.service
    if service.hash_on == "header" and service.hash_on_header is not None:
        for name, value in ctx.headers:
            if name == service.hash_on_header:
                return value.decode("latin-1")
        return None
    if service.hash_on == "consumer":
        return ctx.consumer.username if ctx.consumer is not None else None
    return None


class _Admitted:
    """A request the access chain let through, with what going upstream needs."""

    __slots__ = ("chunked", "ctx", "matched_length", "rid")

    def __init__(self, ctx: ProxyContext, matched_length: int, rid: bytes, chunked: bool) -> None:
        self.ctx = ctx
        self.matched_length = matched_length
        self.rid = rid
        self.chunked = chunked


class ProxyApp:
    """Pure ASGI app. Everything config-derived comes from the snapshot taken per request."""

    def __init__(
        self,
        settings: Settings,
        holder: SnapshotHolder,
        transport: Transport,
        *,
        websocket: WebSocketHandler | None = None,
        observers: Sequence[RequestObserver] = (),
    ) -> None:
        """Everything the app needs is given here: it is complete once constructed.

        `websocket` relays upgraded connections (None: WebSocket requests are refused);
        `observers` see every finished request (request log, metrics, tracing).
        """
        self.settings = settings
        self.holder = holder
        self.transport = transport
        self.via = f"1.1 {settings.node_name}".encode()
        self.trusted = TrustedProxies(settings.trusted_proxies)
        # Where a route's https_redirect sends plain-HTTP clients (None: the default 443).
        # With the TLS port off, TLS is terminated in front of the gateway (a load
        # balancer): redirects go to the default https port.
        self.tls_port = settings.proxy_tls_port if settings.proxy_tls != "off" else None
        self.max_body = settings.max_request_body
        self.max_header_bytes = settings.max_header_bytes
        self.max_uri = settings.max_uri_length
        self.websocket_proxy = websocket
        # With tracing on the gateway is a Trace Context participant (see headers.py):
        # the ratio's threshold decides the sampled flag it sends upstream.
        self.sample_threshold: int | None = (
            sample_threshold(getattr(settings, "otlp_sample_ratio", 1.0))
            if getattr(settings, "otlp_endpoint", None)
            else None
        )
        self.observers: tuple[RequestObserver, ...] = tuple(observers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if self.observers or self.holder.current.logs or self.holder.current.captures.any:
                await self._observed(self.handle_http, scope, receive, send)
            else:
                await self.handle_http(scope, receive, send, None)
        elif kind == "websocket" and self.websocket_proxy is not None:
            # The handshake is what observers see (status 101 or the refusal, its
            # latency); the session that follows is not a request.
            if self.observers or self.holder.current.logs:
                session = await self._observed(self.handle_websocket, scope, receive, send)
            else:
                session = await self.handle_websocket(scope, receive, send, None)
            if session is not None:
                await session.run(receive, send)

    async def _observed(
        self,
        handler: Callable[[Scope, Receive, Send, _Exchange | None], Awaitable[_T]],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> _T:
        ex = _Exchange(send)
        aborted = False
        try:
            return await handler(scope, receive, ex.send, ex)
        except UpstreamError:
            # The upstream broke off a response already under way (see `error_kind`).
            raise
        except BaseException:
            aborted = True
            raise
        finally:
            record = self._record(scope, ex, aborted)
            for observer in self.observers:
                try:
                    observer.observe(record)
                except Exception:
                    log.exception("request.observer_failed", observer=type(observer).__name__)
            # The route's log plugins (http-log, file-log, syslog): each queues the record.
            route = ex.route
            log_plugins = route.chain.log if route is not None else self.holder.current.unrouted_log
            for plugin in log_plugins:
                try:
                    plugin.log(record)
                except Exception:
                    log.exception("request.log_plugin_failed", plugin=plugin.name)
            if ex.tap is not None:
                try:
                    ex.tap.finish(scope, record)
                except Exception:
                    log.exception("request.capture_failed", route=ex.tap.session.route)

    def _record(self, scope: Scope, ex: _Exchange, aborted: bool) -> RequestRecord:
        now = time.monotonic()
        ctx = ex.ctx
        route = ex.route
        flags = ex.flags | (ctx.flags if ctx is not None else 0)
        if aborted or ex.status == 0:
            flags |= Flag.CLIENT_ABORTED
        upstream_ms: float | None = None
        upstream_offset_ms: float | None = None
        if ex.upstream_started:
            upstream_ms = ((ex.upstream_ended or now) - ex.upstream_started) * 1000.0
            upstream_offset_ms = (ex.upstream_started - ex.started) * 1000.0
        latency_ms = (now - ex.started) * 1000.0
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        agent = _header(headers, b"user-agent")
        trace_id: str | None = None
        upstream_span_id: str | None = None
        consumer: str | None = None
        credential_id: str | None = None
        api: str | None = None
        api_version: str | None = None
        sandbox = False
        client_ip: str
        if ctx is not None:
            parent = _header(ctx.upstream_headers, b"traceparent")
            if parent is not None and len(parent) >= 52:
                trace_id = parent[3:35].decode("latin-1")
                upstream_span_id = parent[36:52].decode("latin-1")
            if ctx.consumer is not None:
                consumer = ctx.consumer.username
            credential_id = ctx.credential_id
            client_ip = ctx.client_ip
            request_id = ctx.request_id
            error_kind = ex.error_kind or ctx.error_kind
            priority = ctx.priority
            api, api_version, sandbox = ctx.api, ctx.api_version, ctx.sandbox
        else:
            client = scope.get("client")
            client_ip = client[0] if client else "0.0.0.0"
            rid = ex.request_id or _header(headers, b"x-request-id")
            request_id = rid.decode("latin-1") if rid is not None else ""
            error_kind = ex.error_kind
            priority = None
        return RequestRecord(
            request_id=request_id,
            started_at=ex.wall,
            method=scope.get("method", "GET"),
            path=scope["path"],
            path_template=route.path_template if route is not None else None,
            route=route.name if route is not None else None,
            service=route.service.name if route is not None else None,
            upstream_target=ex.upstream_target,
            consumer=consumer,
            credential_id=credential_id,
            status=ex.status or 499,
            bytes_in=ex.bytes_in,
            bytes_out=ex.bytes_out,
            client_ip=client_ip,
            user_agent=agent.decode("latin-1") if agent is not None else None,
            latency_ms=latency_ms,
            upstream_ms=upstream_ms,
            gateway_ms=latency_ms - (upstream_ms or 0.0),
            upstream_offset_ms=upstream_offset_ms,
            flags=int(flags),
            error_kind=error_kind,
            trace_id=trace_id,
            priority=priority,
            parent_span_id=ex.client_parent.decode("latin-1") if ex.client_parent else None,
            upstream_span_id=upstream_span_id,
            api=api,
            api_version=api_version,
            sandbox=sandbox,
        )

    async def _problem(
        self,
        send: Send,
        ex: _Exchange | None,
        kind: ProblemKind,
        detail: str | None,
        rid: bytes,
        *,
        scope: Scope,
        head_only: bool = False,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
        ctx: ProxyContext | None = None,
    ) -> None:
        if ex is not None:
            ex.error_kind = kind.slug
            ex.request_id = rid
        if ctx is not None and ctx.response_headers:
            # Headers earlier plugins granted (CORS...) so a browser can read the error.
            extra_headers = [*ctx.response_headers, *(extra_headers or ())]
        await send_problem(
            send,
            kind,
            detail,
            request_id=rid,
            instance=request_instance(scope),
            via=self.via,
            extra_headers=extra_headers,
            head_only=head_only,
        )

    async def _admit(
        self,
        scope: Scope,
        send: Send,
        ex: _Exchange | None,
        method: str,
        head_only: bool,
        scheme: str,
    ) -> _Admitted | None:
        """What HTTP requests and WebSocket handshakes share before going upstream.

        Limits on the request head, routing, the upstream headers (forwarding fields
        believed only from trusted proxies), the client address plugins see, the
        request context and the route's access plugins. None when the request was
        answered here (a refusal); `send` carries that answer.
        """
        snapshot = self.holder.current
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        raw_len = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
        if raw_len > self.max_uri:
            await self._problem(
                send, ex, problems.URI_TOO_LONG, None, new_request_id(), scope=scope
            )
            return None
        if sum(len(n) + len(v) + 4 for n, v in headers) > self.max_header_bytes:
            await self._problem(
                send,
                ex,
                problems.HEADERS_TOO_LARGE,
                f"Request headers exceed {self.max_header_bytes} bytes.",
                new_request_id(),
                scope=scope,
            )
            return None
        match = route_request(snapshot.router, method, scope)
        path: str = scope["path"]
        client = scope.get("client")
        client_ip: str = client[0] if client else "0.0.0.0"
        if match is None or isinstance(match, Refusal):
            rid = new_request_id()
            for name, value in headers:
                if name == b"x-request-id" and valid_request_id(value):
                    rid = value
                    break
            if match is None:
                kind, detail = problems.ROUTE_NOT_FOUND, f"No route matches {method} {path}"
            else:
                kind, detail = problems.BAD_REQUEST, f"Invalid request: {match.detail}."
            await self._problem(send, ex, kind, detail, rid, head_only=head_only, scope=scope)
            return None
        route = match.payload
        if ex is not None:
            ex.route = route
            # The request inspector: one attribute read unless the route is capturing.
            session = route.capture.session
            if session is not None and session.admit():
                ex.tap = ExchangeTap(session, route.redaction, ex.raw_send)
                ex.raw_send = ex.tap.send
        trusted = bool(self.trusted) and self.trusted.trusts(client_ip)
        up_headers, info = rewrite_request_headers(
            headers,
            client_ip=client_ip,
            scheme=scheme,
            server_port=scope["server"][1] if scope.get("server") else None,
            upstream_host=b"",
            preserve_host=route.preserve_host,
            via=self.via,
            trusted=trusted,
            sample_threshold=self.sample_threshold,
        )
        rid = info.request_id
        if ex is not None:
            ex.client_parent = info.client_parent_id
        if info.invalid is not None:
            await self._problem(
                send,
                ex,
                problems.BAD_REQUEST,
                info.invalid,
                rid,
                extra_headers=_closing(scope),
                scope=scope,
            )
            return None
        if info.unsupported_coding:
            # Forwarding the codings would hand the upstream a framing decision only we
            # made; dropping them would pass the body on as if it were not encoded.
            await self._problem(
                send,
                ex,
                problems.TRANSFER_CODING_NOT_IMPLEMENTED,
                f"Transfer coding {info.unsupported_coding.decode('latin-1')!r} is not "
                "supported; only chunked is accepted.",
                rid,
                extra_headers=_closing(scope),
                scope=scope,
            )
            return None
        tls = False
        if route.https_redirect or route.hsts is not None:
            # Precompiled per route; routes without either option pay only this test.
            tls = scheme == "https" or (trusted and _forwarded_https(headers))
            if not tls and route.https_redirect:
                await self._redirect_to_https(send, ex, scope, route.https_redirect, rid)
                return None
        if (
            self.max_body
            and info.content_length is not None
            and info.content_length > self.max_body
        ):
            await self._problem(
                send,
                ex,
                problems.PAYLOAD_TOO_LARGE,
                f"The request body exceeds {self.max_body} bytes.",
                rid,
                scope=scope,
            )
            return None
        if info.forwarded_for and trusted:
            # Plugins (IP allowlists, per-IP limits) see the client behind our proxies.
            client_ip = self.trusted.client_of(client_ip, info.forwarded_for)
        ctx = ProxyContext(
            scope, route, method, path, client_ip, rid.decode(), info.content_length, up_headers
        )
        ctx.matched_length = match.matched_length
        if tls and route.hsts is not None:
            # RFC 6797 §7.2: only over TLS (a UA ignores it on plain HTTP, which anyone
            # on the path could forge or strip).
            ctx.response_headers.append((b"strict-transport-security", route.hsts))
        if ex is not None:
            ex.ctx = ctx
            ex.bytes_in = info.content_length or 0
        for plugin in route.chain.access:
            reply = await plugin.access(ctx)
            if reply is not None:
                await self._plugin_reply(send, ex, ctx, plugin, reply, head_only)
                return None
        if ex is not None and ctx.route is not route:
            ex.route = ctx.route  # an API version's (or sandbox's) service serves it
        return _Admitted(ctx, match.matched_length, rid, info.chunked)

    async def _redirect_to_https(
        self, send: Send, ex: _Exchange | None, scope: Scope, status: int, rid: bytes
    ) -> None:
        """A route's `https_redirect`: the same URL over https, before any plugin runs."""
        location = https_location(scope, self.tls_port)
        if location is None:
            await self._problem(
                send,
                ex,
                problems.BAD_REQUEST,
                "Invalid request: no valid Host header to redirect to https.",
                rid,
                scope=scope,
            )
            return
        await send_bytes(
            send,
            status,
            b"",
            [(b"location", location), (b"x-request-id", rid), (b"via", self.via)],
        )

    async def _plugin_reply(
        self,
        send: Send,
        ex: _Exchange | None,
        ctx: ProxyContext,
        plugin: AnyPlugin,
        reply: PluginResponse,
        head_only: bool,
    ) -> None:
        """Send the response a plugin answered the request with (a refusal, a mock)."""
        if ex is not None and reply.status >= 400:
            ex.flags |= plugin.refusal_flag
            ex.error_kind = ctx.error_kind or f"plugin:{plugin.name}"
        body = reply.body
        if is_problem(reply.headers):
            body = with_occurrence(body, ctx.request_id, request_instance(ctx.scope))
        await send_bytes(
            send,
            reply.status,
            b"" if head_only else body,
            [
                *reply.headers,
                *ctx.response_headers,
                (b"x-request-id", ctx.request_id.encode()),
                (b"via", self.via),
            ],
            length=len(body),
        )

    async def handle_http(
        self, scope: Scope, receive: Receive, send: Send, ex: _Exchange | None
    ) -> None:
        method: str = scope["method"]
        head_only = method == "HEAD"
        admitted = await self._admit(
            scope, send, ex, method, head_only, scope.get("scheme", "http")
        )
        if admitted is None:
            return
        ctx = admitted.ctx
        if ex is not None and ex.tap is not None:
            receive = ex.tap.receiving(receive)
        route = ctx.route
        service = route.service
        rid = admitted.rid
        client_ip = ctx.client_ip
        limit = self.max_body
        if ctx.body_limit is not None:
            limit = min(limit, ctx.body_limit) if limit else ctx.body_limit
        guard = _BodyGuard(limit)
        body: bytes | AsyncIterator[bytes]
        content_length = ctx.content_length
        chunked = admitted.chunked
        if not chunked and not content_length and scope.get("http_version") == "2":
            # HTTP/2 ends a body with END_STREAM, a Content-Length is optional (RFC 9113
            # §8.1.1): no length is not no body. One receive tells which it is.
            first = await receive()
            if first["type"] == "http.disconnect":
                await self._body_stopped(send, ex, ctx)
                return
            if first.get("body") or first.get("more_body", False):
                if content_length == 0:
                    await self._body_stopped(send, ex, ctx)
                    return
                chunked = True
                content_length = None
                receive = _replaying(first, receive)
        if route.chain.request_body and (chunked or content_length):
            read = await self._read_request_body(send, ex, ctx, guard, receive, content_length)
            if read is None:
                return
            body, content_length = read
            chunked = content_length is None
        elif chunked or (content_length is not None and content_length > REPLAYABLE_BODY):
            body = guard.stream(receive)
        elif content_length:
            try:
                body = b"".join([c async for c in guard.stream(receive)])
            except _ClientGone:
                await self._body_stopped(send, ex, ctx)
                return
            except _BodyTooLarge:
                await self._too_large(send, ex, ctx, guard)
                return
            if len(body) != content_length:
                await self._problem(
                    send, ex, problems.BAD_REQUEST, "Incomplete request body", rid, scope=scope
                )
                return
        else:
            body = b""
        request = UpstreamRequest(
            method=method,
            target=upstream_target(scope, route, admitted.matched_length, ctx.query_string),
            headers=ctx.upstream_headers,
            body=body,
            content_length=content_length if content_length is not None and not chunked else None,
        )
        await self._proxy(
            send, ctx, service, request, guard, client_ip, _hash_key(ctx), head_only, rid, ex
        )
        if ex is not None and guard.total:
            ex.bytes_in = guard.total

    async def _body_stopped(self, send: Send, ex: _Exchange | None, ctx: ProxyContext) -> None:
        await self._problem(
            send,
            ex,
            problems.INVALID_REQUEST_BODY,
            "The request body is malformed or ended before it was complete.",
            ctx.request_id.encode(),
            extra_headers=_closing(ctx.scope),
            ctx=ctx,
            scope=ctx.scope,
        )

    async def _too_large(
        self, send: Send, ex: _Exchange | None, ctx: ProxyContext, guard: _BodyGuard
    ) -> None:
        await self._problem(
            send,
            ex,
            problems.PAYLOAD_TOO_LARGE,
            f"The request body exceeds {guard.limit} bytes.",
            ctx.request_id.encode(),
            ctx=ctx,
            scope=ctx.scope,
        )

    async def handle_websocket(
        self, scope: Scope, receive: Receive, send: Send, ex: _Exchange | None
    ) -> _WebSocketSession | None:
        """A WebSocket handshake: the HTTP path's checks and access chain, then the upstream's.

        The client is accepted only once the upstream accepted; every refusal (a
        plugin's, a shed request, no target, a failed upstream handshake) is an
        HTTP response to the handshake (see `websocket.handshake_responder`).
        Returns the open session to relay, or None when the handshake was refused.
        """
        proxy = self.websocket_proxy
        assert proxy is not None
        message = await receive()
        if message["type"] != "websocket.connect":
            return None
        respond = handshake_responder(scope, send)
        # The upstream hears of the client's transport, as for HTTP: ws is http, wss https.
        scheme = "https" if scope.get("scheme") == "wss" else "http"
        admitted = await self._admit(scope, respond, ex, "GET", False, scheme)
        if admitted is None:
            return None
        ctx = admitted.ctx
        service = ctx.route.service
        rid = admitted.rid
        permit: Permit | None = None
        if service.shedding is not None:
            permit = await self._admission(service.shedding, respond, ctx, rid, False, ex)
            if permit is None:
                return None
        try:
            pool = service.pool
            target = pool.pick(client_ip=ctx.client_ip, hash_key=_hash_key(ctx))
            if target is None:
                await self._no_target(respond, ex, service, rid, False, ctx)
                return None
            origin = target.origin(service.scheme, service.tls)
            pool.begin(target)
            started = time.monotonic()
            if ex is not None:
                ex.upstream_target = origin.authority
                ex.upstream_started = started
            try:
                upstream = await proxy.connect(ctx, origin, admitted.matched_length)
            except WebSocketUpstreamError as exc:
                pool.end(target, exc.outcome, time.monotonic() - started)
                if permit is not None:
                    if exc.outcome is Outcome.SUCCESS:
                        permit.responded()
                    else:
                        permit.failed()
                log.info(
                    "upstream.failed",
                    service=service.name,
                    target=origin.authority,
                    error=exc.kind.slug,
                    websocket=True,
                    request_id=ctx.request_id,
                )
                if ex is not None:
                    ex.upstream_ended = time.monotonic()
                await self._problem(respond, ex, exc.kind, exc.detail, rid, ctx=ctx, scope=scope)
                return None
            except BaseException:
                pool.abandon(target)
                raise
            if permit is not None:
                permit.responded()
            if ex is not None:
                ex.upstream_ended = time.monotonic()
            try:
                await send(
                    {
                        "type": "websocket.accept",
                        "subprotocol": upstream.protocol,
                        # ASGI 2.1; granian 2.8.7 ignores them (its 101 has none of ours).
                        "headers": [*ctx.response_headers, (b"x-request-id", rid)],
                    }
                )
            except BaseException:
                await upstream.close()
                pool.end(target, Outcome.SUCCESS, time.monotonic() - started)
                raise
            return _WebSocketSession(proxy, upstream, pool, target, started)
        finally:
            # The slot covers the handshake, not the session: an open WebSocket adds no
            # latency to the upstream's requests, and hours-long sessions holding slots
            # would shed everyone else.
            if permit is not None:
                permit.release()

    async def _read_request_body(
        self,
        send: Send,
        ex: _Exchange | None,
        ctx: ProxyContext,
        guard: _BodyGuard,
        receive: Receive,
        content_length: int | None,
    ) -> tuple[bytes | AsyncIterator[bytes], int | None] | None:
        """Read the request body for `request_body` plugins; None when already answered.

        Bodies up to `BODY_BUFFER_LIMIT` are read whole and passed through the
        plugins (the result goes upstream with a Content-Length). A larger body is
        streamed on untouched, with the chunks read so far in front, and the phase
        is skipped for it, as for response bodies.
        """
        if content_length is not None and content_length > BODY_BUFFER_LIMIT:
            return guard.stream(receive), content_length
        chunks = guard.stream(receive)
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in chunks:
                parts.append(chunk)
                size += len(chunk)
                if size > BODY_BUFFER_LIMIT:
                    return _prepend(parts, chunks), content_length
        except _ClientGone:
            await self._body_stopped(send, ex, ctx)
            return None
        except _BodyTooLarge:
            await self._too_large(send, ex, ctx, guard)
            return None
        body = b"".join(parts)
        if content_length is not None and len(body) != content_length:
            await self._problem(
                send,
                ex,
                problems.BAD_REQUEST,
                "Incomplete request body",
                ctx.request_id.encode(),
                ctx=ctx,
                scope=ctx.scope,
            )
            return None
        for plugin in ctx.route.chain.request_body:
            changed = plugin.request_body(ctx, body)
            if isinstance(changed, PluginResponse):
                await self._plugin_reply(send, ex, ctx, plugin, changed, ctx.method == "HEAD")
                return None
            if changed is not None:
                body = changed
        return body, len(body)

    async def _proxy(
        self,
        send: Send,
        ctx: ProxyContext,
        service: CompiledService,
        request: UpstreamRequest,
        guard: _BodyGuard,
        client_ip: str,
        hash_key: str | None,
        head_only: bool,
        rid: bytes,
        ex: _Exchange | None,
        permit: Permit | None = None,
    ) -> None:
        shedding = service.shedding
        if shedding is not None and permit is None:
            await self._proxy_admitted(
                shedding,
                send,
                ctx,
                service,
                request,
                guard,
                client_ip,
                hash_key,
                head_only,
                rid,
                ex,
            )
            return
        pool = service.pool
        budget = service.retry_budget
        budget.record_request()
        attempts_left = service.retry_attempts
        # May the request be sent again once the upstream may have received it?
        idempotent = request.method in IDEMPOTENT_METHODS or (
            service.retry_with_idempotency_key
            and _header(request.headers, b"idempotency-key") is not None
        )
        request.idempotent = idempotent
        # A transport's own retry (the keep-alive race) is an upstream attempt too.
        request.retry_gate = budget.try_retry
        replayable = isinstance(request.body, bytes)
        tried: list[TargetState] = []
        host_index = next(i for i, (n, _) in enumerate(request.headers) if n == b"host")
        preserve = ctx.route.preserve_host and bool(request.headers[host_index][1])
        deadline = (
            time.monotonic() + service.total_timeout if service.total_timeout is not None else None
        )
        target = pool.pick(client_ip=client_ip, hash_key=hash_key)
        if target is None:
            await self._no_target(send, ex, service, rid, head_only, ctx)
            return
        while True:
            origin = target.origin(service.scheme, service.tls)
            if not preserve:
                request.headers[host_index] = (b"host", origin.authority.encode())
            pool.begin(target)
            started = time.monotonic()
            if ex is not None:
                ex.upstream_target = origin.authority
                if tried:
                    ex.flags |= Flag.RETRIED
                else:
                    ex.upstream_started = started
            try:
                if deadline is None:
                    response = await self.transport.send(origin, request, service.timeouts)
                else:
                    async with asyncio.timeout_at(
                        asyncio.get_running_loop().time() + max(0.0, deadline - time.monotonic())
                    ):
                        response = await self.transport.send(origin, request, service.timeouts)
            except (UpstreamError, TimeoutError, _BodyTooLarge, _ClientGone) as exc:
                latency = time.monotonic() - started
                if guard.gone or isinstance(exc, _ClientGone):
                    # No verdict on the target: the client's body failed, not the upstream.
                    pool.abandon(target)
                    await self._body_stopped(send, ex, ctx)
                    return
                if isinstance(exc, InvalidRequest):
                    # Nothing was sent and no target would accept it: not the upstream's fault.
                    pool.abandon(target)
                    log.error("upstream.invalid_request", error=str(exc), request_id=ctx.request_id)
                    await self._problem(
                        send,
                        ex,
                        problems.INVALID_UPSTREAM_REQUEST,
                        None,
                        rid,
                        ctx=ctx,
                        scope=ctx.scope,
                    )
                    return
                if guard.too_large or isinstance(exc, _BodyTooLarge):
                    pool.end(target, Outcome.SUCCESS, latency)
                    await self._too_large(send, ex, ctx, guard)
                    return
                if isinstance(exc, UpstreamError):
                    kind, outcome = _error_kind(exc)
                    detail = f"Service {service.name!r}: {exc.kind}"
                    if isinstance(exc, TlsError):
                        # Its message names the cause (never key material).
                        detail = f"Service {service.name!r}: {exc}"
                    may_retry = idempotent or not exc.request_sent
                else:
                    kind, outcome = problems.UPSTREAM_TIMEOUT, Outcome.TIMEOUT
                    detail = f"Service {service.name!r} exceeded its total timeout"
                    # The total timeout ends the exchange, retries included.
                    may_retry = False
                pool.end(target, outcome, latency)
                tried.append(target)
                if may_retry and attempts_left > 0 and (replayable or not guard.consumed):
                    retry = self._retry_target(pool, budget, client_ip, hash_key, tried)
                    if retry is not None:
                        attempts_left -= 1
                        target = retry
                        continue
                # The failure itself is the answer, also when no other target was left.
                log.info(
                    "upstream.failed",
                    service=service.name,
                    target=origin.authority,
                    error=exc.kind if isinstance(exc, UpstreamError) else "total-timeout",
                    request_id=ctx.request_id,
                )
                if ex is not None:
                    ex.upstream_ended = time.monotonic()
                if permit is not None:
                    permit.failed()
                await self._problem(
                    send, ex, kind, detail, rid, head_only=head_only, ctx=ctx, scope=ctx.scope
                )
                return
            latency = time.monotonic() - started
            if (
                response.status in service.retry_statuses
                and attempts_left > 0
                and idempotent
                and (replayable or not guard.consumed)
            ):
                retry = self._retry_target(pool, budget, client_ip, hash_key, [*tried, target])
                if retry is not None:
                    await response.aclose()
                    pool.end(target, Outcome.HTTP_FAILURE, latency)
                    tried.append(target)
                    attempts_left -= 1
                    target = retry
                    continue
            if permit is not None:
                permit.responded()
            await self._stream_response(
                send, ctx, response, head_only, rid, pool, target, latency, ex, permit
            )
            return

    @staticmethod
    def _retry_target(
        pool: UpstreamPool,
        budget: RetryBudget,
        client_ip: str,
        hash_key: str | None,
        tried: list[TargetState],
    ) -> TargetState | None:
        """A target not tried yet for a retry, if one is available and the budget allows.

        Picked before the budget is asked, so a retry that has nowhere to go costs
        nothing and the client gets the real failure rather than "no target".
        """
        target = pool.pick(client_ip=client_ip, hash_key=hash_key, exclude=tried)
        if target is not None and not budget.try_retry():
            pool.release(target)
            return None
        return target

    async def _proxy_admitted(
        self,
        shedding: Shedding,
        send: Send,
        ctx: ProxyContext,
        service: CompiledService,
        request: UpstreamRequest,
        guard: _BodyGuard,
        client_ip: str,
        hash_key: str | None,
        head_only: bool,
        rid: bytes,
        ex: _Exchange | None,
    ) -> None:
        """`_proxy` under the upstream's concurrency limit: shed (503) or proxy with a permit.

        The permit is released however the request ends (response streamed,
        upstream failure, client gone, cancellation), so a slot never leaks.
        """
        permit = await self._admission(shedding, send, ctx, rid, head_only, ex)
        if permit is None:
            return
        try:
            await self._proxy(
                send, ctx, service, request, guard, client_ip, hash_key, head_only, rid, ex, permit
            )
        finally:
            permit.release()

    async def _admission(
        self,
        shedding: Shedding,
        send: Send,
        ctx: ProxyContext,
        rid: bytes,
        head_only: bool,
        ex: _Exchange | None,
    ) -> Permit | None:
        """A slot under the upstream's concurrency limit; None once shed (503 sent)."""
        limiter = shedding.limiter
        cls = shedding.classify(ctx)
        permit = limiter.try_acquire(cls)
        if permit is None and limiter.can_queue(cls):
            permit = await limiter.wait(cls)
        if permit is None:
            limiter.refuse(cls)
            ctx.flags |= Flag.SHED
            await self._problem(
                send,
                ex,
                problems.OVERLOADED,
                f"Service {ctx.route.service.name!r} is at its concurrency limit for "
                f"{ctx.priority} requests; retry later.",
                rid,
                extra_headers=[(b"retry-after", shedding.retry_after)],
                head_only=head_only,
                ctx=ctx,
                scope=ctx.scope,
            )
        return permit

    async def _no_target(
        self,
        send: Send,
        ex: _Exchange | None,
        service: CompiledService,
        rid: bytes,
        head_only: bool,
        ctx: ProxyContext,
    ) -> None:
        """Answer a request no target of `service` can take (503, circuit open or none healthy)."""
        reason = service.pool.unavailable_reason()
        kind = problems.CIRCUIT_OPEN if reason == "circuit-open" else problems.UPSTREAM_UNAVAILABLE
        if ex is not None and reason == "circuit-open":
            ex.flags |= Flag.CIRCUIT_OPEN
        await self._problem(
            send,
            ex,
            kind,
            f"Service {service.name!r}: {reason}",
            rid,
            extra_headers=[(b"retry-after", b"1")],
            head_only=head_only,
            ctx=ctx,
            scope=ctx.scope,
        )

    async def _stream_response(
        self,
        send: Send,
        ctx: ProxyContext,
        response: UpstreamResponse,
        head_only: bool,
        rid: bytes,
        pool: UpstreamPool,
        target: TargetState,
        latency: float,
        ex: _Exchange | None,
        permit: Permit | None = None,
    ) -> None:
        """Relay the response, each body chunk as soon as it arrives.

        The head goes out together with the first body chunk (granian writes it
        then anyway), so an upstream body that fails before its first byte still
        becomes a clean 502/504; after that, the only honest signal left is an
        aborted client connection.
        """
        status = response.status
        headers = rewrite_response_headers(response.headers, via=self.via)
        headers.append((b"x-request-id", rid))
        if ctx.route.hsts is not None:
            # The route's policy replaces the upstream's own (a UA heeds only the first).
            headers = [h for h in headers if h[0] != b"strict-transport-security"]
        if ctx.response_headers:
            headers.extend(ctx.response_headers)
        for plugin in ctx.route.chain.response:
            plugin.response(ctx, status, headers)
        outcome = Outcome.HTTP_FAILURE if pool.is_failure_status(status) else Outcome.SUCCESS
        started = False
        try:
            if head_only or status in _NO_BODY_STATUSES:
                started = True
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            chunks = response.body.__aiter__()
            first: list[bytes]
            if ctx.route.chain.body:
                buffered = await self._buffer_body(chunks, headers)
                if isinstance(buffered, bytes):
                    body = self._transform_body(ctx, status, headers, buffered)
                    started = True
                    await send(
                        {"type": "http.response.start", "status": status, "headers": headers}
                    )
                    await send({"type": "http.response.body", "body": body, "more_body": False})
                    return
                first = buffered
            else:
                try:
                    first = [await anext(chunks)]
                except StopAsyncIteration:
                    first = []
            # With a declared length the last chunk is known when it arrives, so it
            # closes the body itself rather than an extra empty message. The chunks
            # are still read to their end, which lets the transport finish cleanly.
            declared = _header(response.headers, b"content-length")
            left = int(declared) if declared is not None and declared.isdigit() else -1
            more = True
            started = True
            await send({"type": "http.response.start", "status": status, "headers": headers})
            for chunk in first:
                left -= len(chunk)
                more = left != 0
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
            async for chunk in chunks:
                left -= len(chunk)
                more = left != 0
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
            if more:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except UpstreamError as exc:
            outcome = Outcome.TIMEOUT if isinstance(exc, ReadTimeout) else Outcome.HTTP_FAILURE
            log.info("upstream.body_failed", error=exc.kind, request_id=ctx.request_id)
            kind, _ = _error_kind(exc)
            if not started:
                # Nothing went out yet: a clean 502/504 is possible.
                await self._problem(
                    send,
                    ex,
                    kind,
                    "The upstream response body failed",
                    rid,
                    head_only=head_only,
                    ctx=ctx,
                    scope=ctx.scope,
                )
                return
            if ex is not None:
                ex.error_kind = kind.slug
            # Headers are already out: the only honest signal left is an aborted connection.
            raise
        finally:
            await response.aclose()
            pool.end(target, outcome, latency)
            if permit is not None and outcome is not Outcome.SUCCESS:
                permit.dropped = True
            if ex is not None:
                ex.upstream_ended = time.monotonic()

    @staticmethod
    async def _buffer_body(
        chunks: AsyncIterator[bytes], headers: list[tuple[bytes, bytes]]
    ) -> bytes | list[bytes]:
        """The whole body if it fits `BODY_BUFFER_LIMIT`; else the chunks read so far.

        A declared Content-Length over the limit is not read at all (empty list):
        the caller streams it untouched and body plugins are skipped.
        """
        declared = _header(headers, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > BODY_BUFFER_LIMIT):
            return []
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            parts.append(chunk)
            size += len(chunk)
            if size > BODY_BUFFER_LIMIT:
                return parts
        return b"".join(parts)

    @staticmethod
    def _transform_body(
        ctx: ProxyContext, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> bytes:
        original = body
        for plugin in ctx.route.chain.body:
            changed = plugin.response_body(ctx, status, headers, body)
            if changed is not None:
                body = changed
        if body is not original:
            length = str(len(body)).encode()
            headers[:] = [
                (n, v) for n, v in headers if n not in (b"content-length", b"transfer-encoding")
            ]
            headers.append((b"content-length", length))
        return body


class WebSocketHandler(Protocol):
    """The WebSocket proxy (see `portcullis.proxy.websocket.WebSocketProxy`)."""

    async def connect(
        self, ctx: ProxyContext, origin: Origin, matched_length: int
    ) -> aiohttp.ClientWebSocketResponse: ...

    async def relay(
        self, upstream: aiohttp.ClientWebSocketResponse, receive: Receive, send: Send
    ) -> None: ...


class _WebSocketSession:
    """An accepted WebSocket: relayed until either side ends, then its target is released."""

    __slots__ = ("pool", "proxy", "started", "target", "upstream")

    def __init__(
        self,
        proxy: WebSocketHandler,
        upstream: aiohttp.ClientWebSocketResponse,
        pool: UpstreamPool,
        target: TargetState,
        started: float,
    ) -> None:
        self.proxy = proxy
        self.upstream = upstream
        self.pool = pool
        self.target = target
        self.started = started

    async def run(self, receive: Receive, send: Send) -> None:
        try:
            await self.proxy.relay(self.upstream, receive, send)
        finally:
            self.pool.end(self.target, Outcome.SUCCESS, time.monotonic() - self.started)
