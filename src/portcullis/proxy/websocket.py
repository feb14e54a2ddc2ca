"""WebSocket proxying: accept the client only once the upstream handshake succeeded."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import structlog

from portcullis.asgi import Receive, Scope, Send
from portcullis.proxy.balancer import Outcome
from portcullis.proxy.headers import rewrite_request_headers
from portcullis.proxy.paths import upstream_target
from portcullis.proxy.target import Refusal, route_request
from portcullis.runtime.holder import SnapshotHolder

log = structlog.get_logger(__name__)

# The client library performs its own handshake; these must not be copied from the client.
# Host is not among them: rewrite_request_headers sets the one routing used (preserve_host)
# or the target's.
_HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"connection",
        b"upgrade",
        b"content-length",
    }
)
# Codes an endpoint may send in a close frame (RFC 6455 §7.4).
_SENDABLE_CLOSE = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, *range(3000, 5000)}


class WebSocketProxy:
    """Relays frames both ways between the client and the routed upstream target."""

    def __init__(self, holder: SnapshotHolder, via: bytes, session: aiohttp.ClientSession) -> None:
        self.holder = holder
        self.via = via
        self.session = session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        snapshot = self.holder.current
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        match = route_request(snapshot.router, "GET", scope)
        if match is None or isinstance(match, Refusal):
            await send({"type": "websocket.close", "code": 1008})
            return
        route = match.payload
        service = route.service
        client = scope.get("client")
        client_ip = client[0] if client else "0.0.0.0"
        target = service.pool.pick(client_ip=client_ip)
        if target is None:
            await send({"type": "websocket.close", "code": 1013})
            return
        origin = target.origin(service.scheme)
        up_headers, _ = rewrite_request_headers(
            headers,
            client_ip=client_ip,
            scheme="https" if scope.get("scheme") == "wss" else "http",
            server_port=scope["server"][1] if scope.get("server") else None,
            upstream_host=origin.authority.encode(),
            preserve_host=route.preserve_host,
            via=self.via,
            trusted=False,
        )
        forward = {
            n.decode("latin-1"): v.decode("latin-1") for n, v in up_headers if n not in _HANDSHAKE
        }
        path = upstream_target(scope, route, match.matched_length).decode("latin-1")
        ws_scheme = "wss" if service.scheme == "https" else "ws"
        url = f"{ws_scheme}://{origin.authority}{path}"
        pool = service.pool
        pool.begin(target)
        started = time.monotonic()
        try:
            upstream = await self.session.ws_connect(
                url,
                protocols=tuple(scope.get("subprotocols") or ()),
                headers=forward,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                autoping=True,
                max_msg_size=0,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            pool.end(target, Outcome.CONNECT_FAILURE, time.monotonic() - started)
            log.info("websocket.upstream_failed", url=url, error=str(exc))
            await send({"type": "websocket.close", "code": 1011})
            return
        await send({"type": "websocket.accept", "subprotocol": upstream.protocol})
        try:
            await self._relay(upstream, receive, send)
        finally:
            await upstream.close()
            pool.end(target, Outcome.SUCCESS, time.monotonic() - started)

    async def _relay(
        self, upstream: aiohttp.ClientWebSocketResponse, receive: Receive, send: Send
    ) -> None:
        async def client_to_upstream() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "websocket.receive":
                    if msg.get("text") is not None:
                        await upstream.send_str(msg["text"])
                    elif msg.get("bytes") is not None:
                        await upstream.send_bytes(msg["bytes"])
                elif msg["type"] == "websocket.disconnect":
                    code = msg.get("code", 1000)
                    await upstream.close(code=code if code in _SENDABLE_CLOSE else 1000)
                    return

        async def upstream_to_client() -> None:
            async for msg in upstream:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await send({"type": "websocket.send", "text": msg.data})
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await send({"type": "websocket.send", "bytes": msg.data})
                else:
                    break
            code = upstream.close_code or 1000
            with contextlib.suppress(Exception):
                await send(
                    {"type": "websocket.close", "code": code if code in _SENDABLE_CLOSE else 1000}
                )

        tasks = [
            asyncio.create_task(client_to_upstream()),
            asyncio.create_task(upstream_to_client()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
