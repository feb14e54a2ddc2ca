"""A consumer field with CR LF that got past config validation cannot smuggle a request.

Config validation refuses such a custom_id (tests/unit/model/test_config_header_fields.py);
here one is put into a snapshot anyway (as an old store or a bug elsewhere could) and
the real proxy, key-auth and both real transports run against a raw upstream that
records every request it parses. The transport must refuse to write it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest

from portcullis.asgi import Message
from portcullis.model.config import Consumer, GatewayConfig
from portcullis.plugins.env import PluginEnv
from portcullis.proxy.app import ProxyApp
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import build_snapshot
from portcullis.settings import Settings
from portcullis.upstream.aiohttp_transport import AiohttpTransport
from portcullis.upstream.http1 import Http1Transport
from portcullis.upstream.transport import Transport
from support.raw_upstream import RawUpstream, keep_alive_handler, response

# Ends the real request early and starts a second one that takes the rest of the head.
SMUGGLING_ID = "crm-42\r\ncontent-length: 0\r\n\r\nGET /smuggled HTTP/1.1\r\nx-ignore: 1"

TRANSPORTS: dict[str, Callable[[], Transport]] = {
    "http1": Http1Transport,
    "aiohttp": AiohttpTransport,
}


@pytest.fixture
async def upstream() -> AsyncIterator[RawUpstream]:
    server = RawUpstream(keep_alive_handler(lambda req: response(200, b"ok")))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(params=sorted(TRANSPORTS))
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    t = TRANSPORTS[request.param]()
    yield t
    await t.aclose()


def _app(upstream: RawUpstream, transport: Transport) -> ProxyApp:
    bad = Consumer.model_construct(username="mallory", custom_id=SMUGGLING_ID)
    doc: dict[str, Any] = {
        "services": [{"name": "svc", "url": f"http://127.0.0.1:{upstream.port}"}],
        "routes": [
            {"name": "bad", "service": "svc", "paths": ["/bad"], "strip_path": False},
            {"name": "good", "service": "svc", "paths": ["/good"], "strip_path": False},
        ],
        # Instances are not validated again, so the bad consumer gets into the config.
        "consumers": [bad, Consumer(username="alice", custom_id="crm-7")],
        "plugins": [
            {"name": "key-auth", "route": "bad", "config": {"anonymous": "mallory"}},
            {"name": "key-auth", "route": "good", "config": {"anonymous": "alice"}},
        ],
    }
    config = GatewayConfig.model_validate(doc)
    # key-auth resolves no key here (anonymous access), so it never uses the cache.
    env = PluginEnv(credentials=cast(Any, object()))
    snapshot = build_snapshot(config, 1, env=env)
    return ProxyApp(Settings(), SnapshotHolder(snapshot), transport)


async def _get(app: ProxyApp, path: str) -> tuple[int, bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("10.1.2.3", 5555),
        "headers": [(b"host", b"gw.example")],
    }
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_the_transport_refuses_a_header_value_with_crlf(
    upstream: RawUpstream, transport: Transport
) -> None:
    app = _app(upstream, transport)
    status, body = await _get(app, "/bad")
    assert status == 500
    problem = json.loads(body)
    assert problem["type"].endswith("/invalid-upstream-request")
    assert upstream.requests == []

    status, _ = await _get(app, "/good")
    assert status == 200
    (seen,) = upstream.requests
    assert seen.target == b"/good"
    assert seen.header(b"x-consumer-custom-id") == b"crm-7"
    assert upstream.errors == []


async def test_a_refused_request_is_not_retried_or_held_against_the_target(
    upstream: RawUpstream, transport: Transport
) -> None:
    app = _app(upstream, transport)
    for _ in range(10):
        status, _ = await _get(app, "/bad")
        assert status == 500
    pool = app.holder.current.router.specs[0].payload.service.pool
    (target,) = pool.targets
    assert target.active == 0
    assert pool.pick(client_ip="10.1.2.3") is target
    assert upstream.requests == []
