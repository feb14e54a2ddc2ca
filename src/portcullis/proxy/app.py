"""The data-plane ASGI application: route, run the plugin chain, balance, proxy, stream back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Protocol

import structlog

from portcullis import problems
from portcullis.asgi import Receive, Scope, Send
from portcullis.plugins.base import RequestContext
from portcullis.problems import ProblemKind
from portcullis.proxy.balancer import Outcome, TargetState, UpstreamPool
from portcullis.proxy.headers import (
    TrustedProxies,
    new_request_id,
    rewrite_request_headers,
    rewrite_response_headers,
)
from portcullis.proxy.paths import upstream_target
from portcullis.proxy.responses import send_bytes, send_problem
from portcullis.proxy.upstream.transport import (
    ConnectError,
    ConnectTimeout,
    ReadTimeout,
    Transport,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
    WriteTimeout,
)
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import IDEMPOTENT_METHODS, CompiledService
from portcullis.settings import Settings

log = structlog.get_logger(__name__)

# Bodies up to this size are read before proxying, so a failed attempt can be retried.
REPLAYABLE_BODY = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})


class _BodyTooLarge(Exception):
    """A streamed request body passed the configured limit mid-stream (becomes a 413)."""


class _ClientGone(Exception):
    """The client disconnected while its body was being read; nothing is left to answer."""


class _BodyGuard:
    """Counts a streamed request body against the limit; remembers why streaming stopped."""

    __slots__ = ("consumed", "limit", "too_large")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.consumed = False
        self.too_large = False

    async def stream(self, receive: Receive) -> AsyncIterator[bytes]:
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            if chunk:
                total += len(chunk)
                if self.limit and total > self.limit:
                    self.too_large = True
                    raise _BodyTooLarge
                self.consumed = True
                yield chunk
            if not message.get("more_body", False):
                return


def _error_kind(exc: UpstreamError) -> tuple[ProblemKind, Outcome]:
    if isinstance(exc, ConnectTimeout):
        return problems.UPSTREAM_TIMEOUT, Outcome.TIMEOUT
    if isinstance(exc, ReadTimeout | WriteTimeout):
        return problems.UPSTREAM_TIMEOUT, Outcome.TIMEOUT
    if isinstance(exc, ConnectError):
        return problems.UPSTREAM_CONNECT_FAILED, Outcome.CONNECT_FAILURE
    return problems.UPSTREAM_PROTOCOL_ERROR, Outcome.HTTP_FAILURE


class ProxyApp:
    """Pure ASGI app. Everything config-derived comes from the snapshot taken per request."""

    def __init__(self, settings: Settings, holder: SnapshotHolder, transport: Transport) -> None:
        self.settings = settings
        self.holder = holder
        self.transport = transport
        self.via = f"1.1 {settings.node_name}".encode()
        self.trusted = TrustedProxies(settings.trusted_proxies)
        self.max_body = settings.max_request_body
        self.max_header_bytes = settings.max_header_bytes
        self.max_uri = settings.max_uri_length
        self.websocket_proxy: WebSocketHandler | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.handle_http(scope, receive, send)
        elif kind == "websocket" and self.websocket_proxy is not None:
            await self.websocket_proxy(scope, receive, send)

    async def handle_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        snapshot = self.holder.current
        method: str = scope["method"]
        path: str = scope["path"]
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        head_only = method == "HEAD"
        raw_len = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
        if raw_len > self.max_uri:
            await send_problem(
                send, problems.URI_TOO_LONG, None, request_id=new_request_id(), via=self.via
            )
            return
        if sum(len(n) + len(v) + 4 for n, v in headers) > self.max_header_bytes:
            await send_problem(
                send,
                problems.HEADERS_TOO_LARGE,
                f"Request headers exceed {self.max_header_bytes} bytes.",
                request_id=new_request_id(),
                via=self.via,
            )
            return
        host = b""
        for name, value in headers:
            if name == b"host":
                host = value
                break
        match = snapshot.router.match(method, host.decode("latin-1"), path, headers)
        client = scope.get("client")
        client_ip: str = client[0] if client else "0.0.0.0"
        if match is None:
            rid = new_request_id()
            for name, value in headers:
                if name == b"x-request-id":
                    rid = value
                    break
            await send_problem(
                send,
                problems.ROUTE_NOT_FOUND,
                f"No route matches {method} {path}",
                request_id=rid,
                via=self.via,
                head_only=head_only,
            )
            return
        route = match.payload
        service = route.service
        up_headers, info = rewrite_request_headers(
            headers,
            client_ip=client_ip,
            scheme=scope.get("scheme", "http"),
            server_port=scope["server"][1] if scope.get("server") else None,
            upstream_host=b"",
            preserve_host=route.preserve_host,
            via=self.via,
            trusted=bool(self.trusted) and self.trusted.trusts(client_ip),
        )
        rid = info.request_id
        if info.invalid is not None:
            await send_problem(
                send, problems.BAD_REQUEST, info.invalid, request_id=rid, via=self.via
            )
            return
        if (
            self.max_body
            and info.content_length is not None
            and info.content_length > self.max_body
        ):
            await send_problem(
                send,
                problems.PAYLOAD_TOO_LARGE,
                f"The request body exceeds {self.max_body} bytes.",
                request_id=rid,
                via=self.via,
            )
            return
        if info.forwarded_for and self.trusted and self.trusted.trusts(client_ip):
            # Plugins (IP allowlists, per-IP limits) see the client behind our proxies.
            client_ip = self.trusted.client_of(client_ip, info.forwarded_for)
        ctx = RequestContext(
            scope, route, method, path, client_ip, rid.decode(), info.content_length, up_headers
        )
        for plugin in route.chain.access:
            reply = await plugin.access(ctx)
            if reply is not None:
                await send_bytes(
                    send,
                    reply.status,
                    b"" if head_only else reply.body,
                    [*reply.headers, (b"x-request-id", rid), (b"via", self.via)],
                )
                return

        guard = _BodyGuard(self.max_body)
        body: bytes | AsyncIterator[bytes]
        content_length = info.content_length
        if info.chunked or (content_length is not None and content_length > REPLAYABLE_BODY):
            body = guard.stream(receive)
        elif content_length:
            try:
                body = b"".join([c async for c in guard.stream(receive)])
            except (_ClientGone, _BodyTooLarge):
                return
            if len(body) != content_length:
                await send_problem(
                    send,
                    problems.BAD_REQUEST,
                    "Incomplete request body",
                    request_id=rid,
                    via=self.via,
                )
                return
        else:
            body = b""
        request = UpstreamRequest(
            method=method,
            target=upstream_target(scope, route, match.matched_length, ctx.query_string),
            headers=ctx.upstream_headers,
            body=body,
            content_length=content_length
            if content_length is not None and not info.chunked
            else None,
        )
        hash_key: str | None = None
        if service.hash_on == "header" and service.hash_on_header is not None:
            for name, value in headers:
                if name == service.hash_on_header:
                    hash_key = value.decode("latin-1")
                    break
        elif service.hash_on == "consumer":
            hash_key = ctx.consumer.username if ctx.consumer is not None else None
        await self._proxy(send, ctx, service, request, guard, client_ip, hash_key, head_only, rid)

    async def _proxy(
        self,
        send: Send,
        ctx: RequestContext,
        service: CompiledService,
        request: UpstreamRequest,
        guard: _BodyGuard,
        client_ip: str,
        hash_key: str | None,
        head_only: bool,
        rid: bytes,
    ) -> None:
        pool = service.pool
        budget = service.retry_budget
        budget.record_request()
        attempts_left = service.retry_attempts
        idempotent = request.method in IDEMPOTENT_METHODS
        replayable = isinstance(request.body, bytes)
        tried: list[TargetState] = []
        host_index = next(i for i, (n, _) in enumerate(request.headers) if n == b"host")
        preserve = ctx.route.preserve_host and bool(request.headers[host_index][1])
        deadline = (
            time.monotonic() + service.total_timeout if service.total_timeout is not None else None
        )
        while True:
            target = pool.pick(client_ip=client_ip, hash_key=hash_key, exclude=tried)
            if target is None:
                reason = pool.unavailable_reason()
                kind = (
                    problems.CIRCUIT_OPEN
                    if reason == "circuit-open"
                    else problems.UPSTREAM_UNAVAILABLE
                )
                await send_problem(
                    send,
                    kind,
                    f"Service {service.name!r}: {reason}",
                    request_id=rid,
                    via=self.via,
                    extra_headers=[(b"retry-after", b"1")],
                    head_only=head_only,
                )
                return
            origin = target.origin(service.scheme)
            if not preserve:
                request.headers[host_index] = (b"host", origin.authority.encode())
            pool.begin(target)
            started = time.monotonic()
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
                if isinstance(exc, _ClientGone):
                    # No verdict on the target: the client left, not the upstream.
                    pool.abandon(target)
                    return
                if guard.too_large or isinstance(exc, _BodyTooLarge):
                    pool.end(target, Outcome.SUCCESS, latency)
                    await send_problem(
                        send,
                        problems.PAYLOAD_TOO_LARGE,
                        f"The request body exceeds {self.max_body} bytes.",
                        request_id=rid,
                        via=self.via,
                    )
                    return
                if isinstance(exc, TimeoutError):
                    kind, outcome = problems.UPSTREAM_TIMEOUT, Outcome.TIMEOUT
                    sent = True
                    detail = f"Service {service.name!r} exceeded its total timeout"
                else:
                    kind, outcome = _error_kind(exc)
                    sent = exc.request_sent
                    detail = f"Service {service.name!r}: {exc.kind}"
                pool.end(target, outcome, latency)
                tried.append(target)
                can_replay = replayable or not guard.consumed
                if (
                    attempts_left > 0
                    and can_replay
                    and (idempotent or not sent)
                    and not isinstance(exc, TimeoutError)
                    and budget.try_retry()
                ):
                    attempts_left -= 1
                    continue
                log.info(
                    "upstream.failed",
                    service=service.name,
                    target=origin.authority,
                    error=exc.kind if isinstance(exc, UpstreamError) else "total-timeout",
                    request_id=ctx.request_id,
                )
                await send_problem(
                    send, kind, detail, request_id=rid, via=self.via, head_only=head_only
                )
                return
            latency = time.monotonic() - started
            if (
                response.status in service.retry_statuses
                and attempts_left > 0
                and idempotent
                and (replayable or not guard.consumed)
                and budget.try_retry()
            ):
                await response.aclose()
                pool.end(target, Outcome.HTTP_FAILURE, latency)
                tried.append(target)
                attempts_left -= 1
                continue
            await self._stream_response(send, ctx, response, head_only, rid, pool, target, latency)
            return

    async def _stream_response(
        self,
        send: Send,
        ctx: RequestContext,
        response: UpstreamResponse,
        head_only: bool,
        rid: bytes,
        pool: UpstreamPool,
        target: TargetState,
        latency: float,
    ) -> None:
        status = response.status
        headers = rewrite_response_headers(response.headers, via=self.via)
        headers.append((b"x-request-id", rid))
        if ctx.response_headers:
            headers.extend(ctx.response_headers)
        for plugin in ctx.route.chain.response:
            plugin.response(ctx, status, headers)
        outcome = Outcome.HTTP_FAILURE if pool.is_failure_status(status) else Outcome.SUCCESS
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            if head_only or status in _NO_BODY_STATUSES:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            pending: bytes | None = None
            async for chunk in response.body:
                if pending is not None:
                    await send({"type": "http.response.body", "body": pending, "more_body": True})
                pending = chunk
            await send({"type": "http.response.body", "body": pending or b"", "more_body": False})
        except UpstreamError as exc:
            # Headers are already out: the only honest signal left is an aborted connection.
            outcome = Outcome.TIMEOUT if isinstance(exc, ReadTimeout) else Outcome.HTTP_FAILURE
            log.info("upstream.body_failed", error=exc.kind, request_id=ctx.request_id)
            raise
        finally:
            await response.aclose()
            pool.end(target, outcome, latency)


class WebSocketHandler(Protocol):
    """The WebSocket proxy (see `portcullis.proxy.websocket`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...
