"""ProxyApp on an API's routes: the version's service is the one called and logged, the
version's refusals are logged with their problem, the lifecycle headers replace an
upstream's, and the response cache keeps versions and sandboxes apart. (The record's
api/api_version/sandbox fields are filled by the request-log side of issue 18.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from portcullis.asgi import Message
from portcullis.cache.memory import MemoryCache
from portcullis.model.config import GatewayConfig
from portcullis.model.plugins import registry as model_registry
from portcullis.model.plugins.base import PluginConfig
from portcullis.plugins import registry
from portcullis.plugins.base import Phase, Plugin, PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.proxy.app import ProxyApp
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import build_snapshot
from portcullis.settings import Settings
from portcullis.upstream.transport import (
    Origin,
    TransportTimeouts,
    UpstreamRequest,
    UpstreamResponse,
)
from support.records import RecordCollector


class _Upstream:
    """Answers 200 at once; remembers where each request went."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.extra_headers: list[tuple[bytes, bytes]] = []

    async def send(
        self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse:
        self.sent.append((origin.authority, request.target))

        async def body() -> AsyncIterator[bytes]:
            yield b"ok"

        headers = [(b"content-length", b"2"), (b"cache-control", b"max-age=60")]
        headers += self.extra_headers
        return UpstreamResponse(status=200, headers=headers, body=body())

    async def aclose(self) -> None:
        return None


CONFIG: dict[str, Any] = {
    "services": [
        {"name": "route-svc", "url": "http://10.0.0.1:80"},
        {"name": "v1-svc", "url": "http://10.0.0.2:80/one"},
        {"name": "sandbox-svc", "url": "http://10.0.0.3:80/sandbox"},
    ],
    "routes": [
        {"name": "shared", "service": "route-svc", "paths": ["/items"]},
        {"name": "old", "service": "route-svc", "paths": ["/old"]},
    ],
    "consumers": [{"username": "alice"}],
    "apis": [
        {
            "name": "demo",
            "routes": ["shared"],
            "default_version": "v2",
            "versions": [
                {
                    "name": "v1",
                    "service": "v1-svc",
                    "deprecated_at": "2026-01-01T00:00:00Z",
                    "sunset_at": "2030-01-01T00:00:00Z",
                },
                {"name": "v2", "sandbox": {"service": "sandbox-svc"}},
            ],
        },
        {"name": "old", "versions": [{"name": "v0", "status": "retired", "routes": ["old"]}]},
    ],
}


def _app(
    plugins: list[dict[str, Any]] | None = None,
) -> tuple[ProxyApp, _Upstream, RecordCollector]:
    config = {**CONFIG, "plugins": plugins or []}
    env = PluginEnv(cache=MemoryCache())
    snapshot = build_snapshot(GatewayConfig.model_validate(config), 1, env=env)
    upstream = _Upstream()
    collect = RecordCollector()
    app = ProxyApp(Settings(), SnapshotHolder(snapshot), upstream, observers=[collect])
    return app, upstream, collect


async def _call(app: ProxyApp, path: str, headers: list[tuple[bytes, bytes]]) -> list[Message]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("10.1.2.3", 5555),
        "headers": [(b"host", b"gw"), *headers],
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_the_selected_versions_service_is_called_and_logged() -> None:
    app, upstream, collect = _app()
    messages = await _call(app, "/items/7", [(b"api-version", b"v1")])
    assert messages[0]["status"] == 200
    assert upstream.sent == [("10.0.0.2", b"/one/7")]
    headers = dict(messages[0]["headers"])
    assert headers[b"deprecation"] == b"@1767225600"
    assert headers[b"sunset"] == b"Tue, 01 Jan 2030 00:00:00 GMT"
    (record,) = collect.records
    assert (record.route, record.service, record.upstream_target) == (
        "shared",
        "v1-svc",
        "10.0.0.2",
    )
    await _call(app, "/items/7", [])
    assert upstream.sent[-1] == ("10.0.0.1", b"/7")
    assert collect.records[-1].service == "route-svc"


async def test_a_refused_request_is_logged_with_the_versions_problem() -> None:
    app, upstream, collect = _app()
    messages = await _call(app, "/old/x", [])
    assert messages[0]["status"] == 410
    problem = json.loads(messages[1]["body"])
    assert problem["type"].endswith("/version-sunset")
    assert problem["instance"] == "/old/x"
    assert upstream.sent == []
    (record,) = collect.records
    assert record.error_kind == "version-sunset"
    await _call(app, "/items", [(b"api-version", b"nope")])
    assert collect.records[-1].error_kind == "unknown-api-version"


class _FakeAuthConfig(PluginConfig):
    pass


class _FakeAuth(Plugin[_FakeAuthConfig]):
    """Where key-auth runs: the consumer and key environment named by test headers."""

    name: ClassVar[str] = "test-fake-auth"
    priority: ClassVar[int] = 1250
    config_model = _FakeAuthConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access"})

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        headers = dict(ctx.headers)
        ctx.consumer = self.env.consumers.get(headers[b"x-test-consumer"].decode())
        ctx.environment = headers[b"x-test-environment"].decode()
        return None


@pytest.fixture
def fake_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.PLUGINS, "test-fake-auth", _FakeAuth)
    monkeypatch.setitem(model_registry.SCHEMAS, "test-fake-auth", _FakeAuthConfig)


@pytest.mark.usefixtures("fake_auth")
async def test_the_response_cache_keeps_versions_and_sandboxes_apart() -> None:
    app, upstream, _ = _app(
        [
            {"name": "test-fake-auth", "route": "shared", "config": {}},
            {"name": "response-cache", "route": "shared", "config": {}},
        ]
    )

    def who(environment: str, *version: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-test-consumer", b"alice"),
            (b"x-test-environment", environment.encode()),
            *version,
        ]

    asked = [
        who("production", (b"api-version", b"v1")),
        who("production", (b"api-version", b"v2")),
        who("staging", (b"api-version", b"v2")),
        who("production", (b"api-version", b"v1")),  # a hit
        who("staging", (b"api-version", b"v2")),  # a hit
    ]
    for headers in asked:
        messages = await _call(app, "/items/7", headers)
        assert messages[0]["status"] == 200
        vary = [v for n, v in messages[0]["headers"] if n == b"vary"]
        assert vary == [b"Api-Version"]
    assert upstream.sent == [
        ("10.0.0.2", b"/one/7"),
        ("10.0.0.1", b"/7"),
        ("10.0.0.3", b"/sandbox/7"),
    ]


async def test_the_versions_lifecycle_headers_replace_the_upstreams() -> None:
    app, upstream, _ = _app()
    upstream.extra_headers = [
        (b"deprecation", b"@1"),
        (b"sunset", b"Thu, 01 Jan 1970 00:00:01 GMT"),
        (b"link", b'<https://upstream.example/d>; rel="deprecation"'),
    ]
    messages = await _call(app, "/items", [(b"api-version", b"v1")])

    def values(name: bytes) -> list[bytes]:
        return [v for n, v in messages[0]["headers"] if n == name]

    # One field each, the gateway's: two would make both invalid for a client.
    assert values(b"deprecation") == [b"@1767225600"]
    assert values(b"sunset") == [b"Tue, 01 Jan 2030 00:00:00 GMT"]
    assert values(b"link") == [b'<https://upstream.example/d>; rel="deprecation"']
    # A version without its own lifecycle leaves the upstream's fields alone.
    messages = await _call(app, "/items", [(b"api-version", b"v2")])
    assert values(b"deprecation") == [b"@1"]
