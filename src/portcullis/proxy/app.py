"""The data-plane ASGI application: route, run the plugin chain, balance, proxy, stream back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Protocol

import structlog

from portcullis import problems
from portcullis.analytics.record import Flag, RequestObserver, RequestRecord
from portcullis.asgi import Message, Receive, Scope, Send
from portcullis.plugins.base import BODY_BUFFER_LIMIT, RequestContext
from portcullis.problems import ProblemKind
from portcullis.proxy.balancer import Outcome, TargetState, UpstreamPool
from portcullis.proxy.headers import (
    TrustedProxies,
    new_request_id,
    rewrite_request_headers,
    rewrite_response_headers,
    valid_request_id,
)
from portcullis.proxy.paths import upstream_target
from portcullis.proxy.responses import send_bytes, send_problem
from portcullis.proxy.shedding import Permit, Shedding
from portcullis.proxy.target import Refusal, route_request
from portcullis.proxy.upstream.transport import (
    ConnectError,
    ConnectTimeout,
    InvalidRequest,
    ReadTimeout,
    Transport,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
    WriteTimeout,
)
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import IDEMPOTENT_METHODS, CompiledRoute, CompiledService
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

    __slots__ = ("consumed", "limit", "too_large", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.consumed = False
        self.too_large = False
        self.total = 0

    async def stream(self, receive: Receive) -> AsyncIterator[bytes]:
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
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
        self.ctx: RequestContext | None = None
        self.error_kind: str | None = None
        self.flags = 0
        self.upstream_started = 0.0
        self.upstream_ended = 0.0
        self.upstream_target: str | None = None
        # The id the response carries when no request context exists yet (404, 414...).
        self.request_id = b""
        self.client_parent = b""

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            self.bytes_out += len(message.get("body", b""))
        await self.raw_send(message)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
    return None


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
        # With tracing on the gateway is a Trace Context participant (see headers.py).
        self.new_parent_id = bool(getattr(settings, "otlp_endpoint", None))
        # Who sees every finished request (request log, metrics, tracing); set at startup.
        self.observers: tuple[RequestObserver, ...] = ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if self.observers:
                await self._observed(scope, receive, send)
            else:
                await self.handle_http(scope, receive, send, None)
        elif kind == "websocket" and self.websocket_proxy is not None:
            await self.websocket_proxy(scope, receive, send)

    async def _observed(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = _Exchange(send)
        aborted = False
        try:
            await self.handle_http(scope, receive, ex.send, ex)
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
            method=scope["method"],
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
        )

    async def _problem(
        self,
        send: Send,
        ex: _Exchange | None,
        kind: ProblemKind,
        detail: str | None,
        rid: bytes,
        *,
        head_only: bool = False,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
        ctx: RequestContext | None = None,
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
            via=self.via,
            extra_headers=extra_headers,
            head_only=head_only,
        )

    async def handle_http(
        self, scope: Scope, receive: Receive, send: Send, ex: _Exchange | None
    ) -> None:
        snapshot = self.holder.current
        method: str = scope["method"]
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        head_only = method == "HEAD"
        raw_len = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
        if raw_len > self.max_uri:
            await self._problem(send, ex, problems.URI_TOO_LONG, None, new_request_id())
            return
        if sum(len(n) + len(v) + 4 for n, v in headers) > self.max_header_bytes:
            await self._problem(
                send,
                ex,
                problems.HEADERS_TOO_LARGE,
                f"Request headers exceed {self.max_header_bytes} bytes.",
                new_request_id(),
            )
            return
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
            await self._problem(send, ex, kind, detail, rid, head_only=head_only)
            return
        route = match.payload
        if ex is not None:
            ex.route = route
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
            new_parent_id=self.new_parent_id,
        )
        rid = info.request_id
        if ex is not None:
            ex.client_parent = info.client_parent_id
        if info.invalid is not None:
            await self._problem(send, ex, problems.BAD_REQUEST, info.invalid, rid)
            return
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
            )
            return
        if info.forwarded_for and self.trusted and self.trusted.trusts(client_ip):
            # Plugins (IP allowlists, per-IP limits) see the client behind our proxies.
            client_ip = self.trusted.client_of(client_ip, info.forwarded_for)
        ctx = RequestContext(
            scope, route, method, path, client_ip, rid.decode(), info.content_length, up_headers
        )
        if ex is not None:
            ex.ctx = ctx
            ex.bytes_in = info.content_length or 0
        for plugin in route.chain.access:
            reply = await plugin.access(ctx)
            if reply is not None:
                if ex is not None and reply.status >= 400:
                    ex.flags |= plugin.refusal_flag
                    ex.error_kind = ctx.error_kind or f"plugin:{plugin.name}"
                await send_bytes(
                    send,
                    reply.status,
                    b"" if head_only else reply.body,
                    [
                        *reply.headers,
                        *ctx.response_headers,
                        (b"x-request-id", rid),
                        (b"via", self.via),
                    ],
                    length=len(reply.body),
                )
                return

        limit = self.max_body
        if ctx.body_limit is not None:
            limit = min(limit, ctx.body_limit) if limit else ctx.body_limit
        guard = _BodyGuard(limit)
        body: bytes | AsyncIterator[bytes]
        content_length = info.content_length
        chunked = info.chunked
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
            except (_ClientGone, _BodyTooLarge):
                return
            if len(body) != content_length:
                await self._problem(send, ex, problems.BAD_REQUEST, "Incomplete request body", rid)
                return
        else:
            body = b""
        request = UpstreamRequest(
            method=method,
            target=upstream_target(scope, route, match.matched_length, ctx.query_string),
            headers=ctx.upstream_headers,
            body=body,
            content_length=content_length if content_length is not None and not chunked else None,
        )
        hash_key: str | None = None
        if service.hash_on == "header" and service.hash_on_header is not None:
            for name, value in headers:
                if name == service.hash_on_header:
                    hash_key = value.decode("latin-1")
                    break
        elif service.hash_on == "consumer":
            hash_key = ctx.consumer.username if ctx.consumer is not None else None
        await self._proxy(
            send, ctx, service, request, guard, client_ip, hash_key, head_only, rid, ex
        )
        if ex is not None and guard.total:
            ex.bytes_in = guard.total

    async def _read_request_body(
        self,
        send: Send,
        ex: _Exchange | None,
        ctx: RequestContext,
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
            return None
        except _BodyTooLarge:
            await self._problem(
                send,
                ex,
                problems.PAYLOAD_TOO_LARGE,
                f"The request body exceeds {guard.limit} bytes.",
                ctx.request_id.encode(),
                ctx=ctx,
            )
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
            )
            return None
        for plugin in ctx.route.chain.request_body:
            changed = plugin.request_body(ctx, body)
            if changed is not None:
                body = changed
        return body, len(body)

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
                )
                return
            origin = target.origin(service.scheme)
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
                if isinstance(exc, _ClientGone):
                    # No verdict on the target: the client left, not the upstream.
                    pool.abandon(target)
                    return
                if isinstance(exc, InvalidRequest):
                    # Nothing was sent and no target would accept it: not the upstream's fault.
                    pool.abandon(target)
                    log.error("upstream.invalid_request", error=str(exc), request_id=ctx.request_id)
                    await self._problem(
                        send, ex, problems.INVALID_UPSTREAM_REQUEST, None, rid, ctx=ctx
                    )
                    return
                if guard.too_large or isinstance(exc, _BodyTooLarge):
                    pool.end(target, Outcome.SUCCESS, latency)
                    await self._problem(
                        send,
                        ex,
                        problems.PAYLOAD_TOO_LARGE,
                        f"The request body exceeds {guard.limit} bytes.",
                        rid,
                        ctx=ctx,
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
                if ex is not None:
                    ex.upstream_ended = time.monotonic()
                if permit is not None:
                    permit.failed()
                await self._problem(send, ex, kind, detail, rid, head_only=head_only, ctx=ctx)
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
            if permit is not None:
                permit.responded()
            await self._stream_response(
                send, ctx, response, head_only, rid, pool, target, latency, ex, permit
            )
            return

    async def _proxy_admitted(
        self,
        shedding: Shedding,
        send: Send,
        ctx: RequestContext,
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
                f"Service {service.name!r} is at its concurrency limit for "
                f"{ctx.priority} requests; retry later.",
                rid,
                extra_headers=[(b"retry-after", shedding.retry_after)],
                head_only=head_only,
                ctx=ctx,
            )
            return
        try:
            await self._proxy(
                send, ctx, service, request, guard, client_ip, hash_key, head_only, rid, ex, permit
            )
        finally:
            permit.release()

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
        ex: _Exchange | None,
        permit: Permit | None = None,
    ) -> None:
        status = response.status
        headers = rewrite_response_headers(response.headers, via=self.via)
        headers.append((b"x-request-id", rid))
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
            pending: bytes | None = None
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
                started = True
                await send({"type": "http.response.start", "status": status, "headers": headers})
                for chunk in buffered:
                    if pending is not None:
                        await send(
                            {"type": "http.response.body", "body": pending, "more_body": True}
                        )
                    pending = chunk
            else:
                started = True
                await send({"type": "http.response.start", "status": status, "headers": headers})
            async for chunk in chunks:
                if pending is not None:
                    await send({"type": "http.response.body", "body": pending, "more_body": True})
                pending = chunk
            await send({"type": "http.response.body", "body": pending or b"", "more_body": False})
        except UpstreamError as exc:
            outcome = Outcome.TIMEOUT if isinstance(exc, ReadTimeout) else Outcome.HTTP_FAILURE
            log.info("upstream.body_failed", error=exc.kind, request_id=ctx.request_id)
            if not started:
                # Nothing went out yet (the body was being buffered): a clean 502 is possible.
                kind, _ = _error_kind(exc)
                await self._problem(
                    send,
                    ex,
                    kind,
                    "The upstream response body failed",
                    rid,
                    head_only=head_only,
                    ctx=ctx,
                )
                return
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
        ctx: RequestContext, status: int, headers: list[tuple[bytes, bytes]], body: bytes
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
    """The WebSocket proxy (see `portcullis.proxy.websocket`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...
