"""ProxyApp WebSocket handshakes: the access chain, shedding and observers before accepting.

A fake WebSocket proxy stands in for the upstream side (the real one, under granian,
is covered by tests/integration/proxy/test_websocket_access.py), so each exit path
of the handshake can be driven: refusals are HTTP responses through the ASGI
`websocket.http.response` extension, or a close before accepting without it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from portcullis.analytics.record import Flag
from portcullis.asgi import Message, Receive, Send
from portcullis.model.config import GatewayConfig
from portcullis.plugins.base import RequestContext
from portcullis.problems import UPSTREAM_CONNECT_FAILED
from portcullis.proxy.app import ProxyApp
from portcullis.proxy.websocket import WebSocketUpstreamError
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import build_snapshot
from portcullis.settings import Settings
from portcullis.upstream.balancer import Outcome
from portcullis.upstream.transport import Origin
from support.records import RecordCollector

EXTENSIONS = {"websocket.http.response": {}}


class _Upstream:
    protocol = "chat.v1"


class _FakeProxy:
    """Accepts (or fails) the upstream handshake; `relay` waits until released."""

    def __init__(self) -> None:
        self.connected: list[RequestContext] = []
        self.error: WebSocketUpstreamError | None = None
        self.gate = asyncio.Event()
        self.relaying = asyncio.Event()

    async def connect(self, ctx: RequestContext, origin: Origin, matched_length: int) -> Any:
        self.connected.append(ctx)
        if self.error is not None:
            raise self.error
        return _Upstream()

    async def relay(self, upstream: Any, receive: Receive, send: Send) -> None:
        self.relaying.set()
        await self.gate.wait()


def _app(**service: Any) -> tuple[ProxyApp, _FakeProxy, RecordCollector]:
    doc: dict[str, Any] = {
        "services": [{"name": "svc", "url": "http://127.0.0.1:9", **service}],
        "routes": [
            {"name": "open", "service": "svc", "paths": ["/open"], "priority_class": "low"},
            {"name": "ip", "service": "svc", "paths": ["/ip"]},
        ],
        "plugins": [
            {"name": "ip-restriction", "route": "ip", "config": {"allow": ["198.51.100.0/24"]}}
        ],
    }
    snapshot = build_snapshot(GatewayConfig.model_validate(doc), 1)
    app = ProxyApp(
        Settings(trusted_proxies=["10.0.0.0/8"]),
        SnapshotHolder(snapshot),
        None,  # type: ignore[arg-type]
    )
    proxy = _FakeProxy()
    app.websocket_proxy = proxy
    collect = RecordCollector()
    app.observers = (collect,)
    return app, proxy, collect


def _scope(path: str, *, extensions: bool = True, **headers: str) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "websocket",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "scheme": "ws",
        "server": ("127.0.0.1", 8000),
        "client": ("10.1.2.3", 5555),
        "headers": [(b"host", b"gw"), *((k.encode(), v.encode()) for k, v in headers.items())],
        "subprotocols": ["chat.v1"],
    }
    if extensions:
        scope["extensions"] = EXTENSIONS
    return scope


async def _handshake(app: ProxyApp, scope: dict[str, Any]) -> list[Message]:
    sent: list[Message] = []
    messages: list[Message] = [{"type": "websocket.connect"}]

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_a_plugin_refusal_is_an_http_response_to_the_handshake() -> None:
    app, proxy, collect = _app()
    sent = await _handshake(app, _scope("/ip"))
    start, body = sent
    assert start["type"] == "websocket.http.response.start"
    assert start["status"] == 403
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/problem+json"
    assert b"x-request-id" in headers
    assert body["type"] == "websocket.http.response.body"
    assert json.loads(body["body"])["status"] == 403
    assert proxy.connected == []  # the upstream never heard of it
    (record,) = collect.records
    assert record.status == 403
    assert record.method == "GET"
    assert record.route == "ip"
    assert record.error_kind == "plugin:ip-restriction"


async def test_without_the_extension_a_refusal_is_a_close_before_accepting() -> None:
    app, proxy, collect = _app()
    sent = await _handshake(app, _scope("/ip", extensions=False))
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert proxy.connected == []
    assert collect.records[0].status == 403  # what the server answers for such a close


async def test_the_client_behind_a_trusted_proxy_is_the_one_plugins_judge() -> None:
    app, proxy, _ = _app()
    proxy.gate.set()
    sent = await _handshake(app, _scope("/ip", **{"x-forwarded-for": "198.51.100.7"}))
    (accept,) = sent
    assert accept["type"] == "websocket.accept"
    assert accept["subprotocol"] == "chat.v1"
    (ctx,) = proxy.connected
    assert dict(accept["headers"])[b"x-request-id"] == ctx.request_id.encode()
    assert ctx.client_ip == "198.51.100.7"
    upstream = dict(ctx.upstream_headers)
    assert upstream[b"x-forwarded-for"] == b"198.51.100.7, 10.1.2.3"
    assert upstream[b"x-forwarded-proto"] == b"http"  # ws is http to the upstream


async def test_a_secure_websocket_is_https_to_the_upstream() -> None:
    app, proxy, _ = _app()
    proxy.gate.set()
    scope = _scope("/open")
    scope["scheme"] = "wss"
    await _handshake(app, scope)
    upstream = dict(proxy.connected[0].upstream_headers)
    assert upstream[b"x-forwarded-proto"] == b"https"
    assert b"proto=https" in upstream[b"forwarded"]


async def test_the_handshake_is_recorded_when_accepted_not_when_the_session_ends() -> None:
    app, proxy, collect = _app()
    task = asyncio.create_task(_handshake(app, _scope("/open")))
    await proxy.relaying.wait()
    (record,) = collect.records
    assert record.status == 101
    assert record.route == "open"
    assert record.upstream_target == "127.0.0.1:9"
    assert not record.flags & Flag.CLIENT_ABORTED
    proxy.gate.set()
    await task
    assert len(collect.records) == 1


async def test_an_upstream_handshake_failure_is_a_problem_and_a_drop() -> None:
    app, proxy, collect = _app()
    proxy.error = WebSocketUpstreamError(
        UPSTREAM_CONNECT_FAILED, Outcome.CONNECT_FAILURE, "Service 'svc': refused"
    )
    start, body = await _handshake(app, _scope("/open"))
    assert start["status"] == 502
    problem = json.loads(body["body"])
    assert problem["type"].endswith("/upstream-connect-failed")
    assert problem["detail"] == "Service 'svc': refused"
    assert collect.records[0].error_kind == "upstream-connect-failed"


async def test_handshakes_are_shed_and_hold_a_slot_only_while_handshaking() -> None:
    app, proxy, collect = _app(
        adaptive_concurrency={
            "enabled": True,
            "algorithm": "aimd",
            "initial_limit": 2,
            "min_limit": 1,
        }
    )
    (limiter,) = app.holder.current.limiters.values()
    # An open session does not count against the limit: it adds no upstream latency.
    first = asyncio.create_task(_handshake(app, _scope("/open")))
    await proxy.relaying.wait()
    assert limiter.inflight == 0
    # A handshake while the limit is in use by requests (its first sample may have grown it).
    held = []
    while (permit := limiter.try_acquire(0)) is not None:
        held.append(permit)
    assert held
    start, body = await _handshake(app, _scope("/open"))
    assert start["type"] == "websocket.http.response.start"
    assert start["status"] == 503
    assert dict(start["headers"])[b"retry-after"] == b"1"
    assert json.loads(body["body"])["type"].endswith("/overloaded")
    assert collect.records[-1].flags & Flag.SHED
    assert limiter.shed[3] == 1
    proxy.gate.set()
    await first
    for permit in held:
        permit.release()
    assert limiter.inflight == 0
