"""The try-it guard: only paths the chosen API version serves, never another host, the
key where key-auth reads it and never shown, bounded bodies (a fake transport)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from portcullis.model.config import GatewayConfig
from portcullis.services.errors import ServiceError
from portcullis.services.portal_catalogue import ANONYMOUS, access_of
from portcullis.services.portal_tryit import (
    MAX_REQUEST_BODY,
    MAX_RESPONSE_BODY,
    TRYIT_TIMEOUT,
    Outgoing,
    RawAnswer,
    TryItIn,
    TryItService,
    body_view,
)
from portcullis.settings import Settings

KEY = "pc_live_0123456789ab_secretsecretsecret"
CONFIG: dict[str, Any] = {
    "format_version": "1",
    "services": [{"name": "shop", "url": "http://127.0.0.1:9"}],
    "routes": [
        {"name": "shop-v1", "service": "shop", "paths": ["/v1"]},
        {"name": "shop-v2", "service": "shop", "paths": ["/v2"]},
        {"name": "shop-v2-admin", "service": "shop", "paths": ["/v2/admin"], "priority": 5},
        {"name": "shop-shared", "service": "shop", "paths": ["/shared"]},
        {"name": "hosted", "service": "shop", "paths": ["/h"], "hosts": ["api.example.com"]},
        {"name": "other", "service": "shop", "paths": ["/other"]},
    ],
    "plugins": [
        {"name": "key-auth", "route": "shop-v2", "config": {"header_names": ["x-api-key"]}},
        {"name": "key-auth", "route": "shop-shared", "config": {}},
    ],
    "consumers": [{"username": "app-a", "organization": None}],
    "apis": [
        {
            "name": "shop",
            "public": True,
            "routes": ["shop-shared"],
            "selection": {"header": "Api-Version"},
            "versions": [
                {"name": "v1", "routes": ["shop-v1"]},
                {"name": "v2", "routes": ["shop-v2", "hosted"]},
            ],
        },
        {"name": "private", "public": False, "versions": [{"name": "v1", "routes": ["other"]}]},
    ],
}


@dataclass
class FakeTransport:
    answer: RawAnswer = field(
        default_factory=lambda: RawAnswer(
            200,
            "OK",
            [
                ("Content-Type", "application/json"),
                ("RateLimit", '"default";r=9;t=60'),
                ("X-RateLimit-Remaining", "9"),
            ],
            b'{"a":1}',
            False,
            1.0,
        )
    )
    sent: list[Outgoing] = field(default_factory=list)
    error: BaseException | None = None

    async def send(self, request: Outgoing, *, timeout: float, max_body: int) -> RawAnswer:
        self.sent.append(request)
        if self.error is not None:
            raise self.error
        return self.answer


class FakeEditor:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config

    async def state(self) -> Any:
        return SimpleNamespace(config=self.config)


@pytest.fixture
def config() -> GatewayConfig:
    return GatewayConfig.model_validate(CONFIG)


def _service(
    config: GatewayConfig, transport: FakeTransport, clock: Any = None, **settings: Any
) -> TryItService:
    return TryItService(
        FakeEditor(config),  # type: ignore[arg-type]
        Settings(proxy_port=8123, **settings),
        transport,
        clock=clock or (lambda: 0.0),
    )


def _pointers(exc: pytest.ExceptionInfo[ServiceError]) -> list[str]:
    return [e.pointer for e in exc.value.errors]


async def test_sends_to_the_gateway_with_the_key_in_key_auths_header(config: GatewayConfig) -> None:
    transport = FakeTransport()
    service = _service(config, transport)
    result = await service.send(
        ANONYMOUS,
        TryItIn.parse(
            {
                "api": "shop",
                "version": "v2",
                "path": "/v2/items/1",
                "query": [{"name": "q", "value": "a b"}],
                "headers": [{"name": "Accept", "value": "application/json"}],
                "key": KEY,
            }
        ),
        client_ip="203.0.113.9",
    )
    [sent] = transport.sent
    assert sent.url == "http://127.0.0.1:8123/v2/items/1?q=a%20b"
    headers = dict(sent.headers)
    assert headers["x-api-key"] == KEY
    assert headers["X-Forwarded-For"] == "203.0.113.9"
    assert result.status == 200
    assert result.route == "shop-v2"
    assert result.rate_limit == [
        ("RateLimit", '"default";r=9;t=60'),
        ("X-RateLimit-Remaining", "9"),
    ]
    assert result.body.kind == "json"
    assert json.loads(result.body.text) == {"a": 1}
    shown = json.dumps(result.as_json())
    assert KEY not in shown
    assert "[redacted]" in shown


async def test_paths_outside_the_version_are_refused_naming_the_path(
    config: GatewayConfig,
) -> None:
    transport = FakeTransport()
    service = _service(config, transport)
    for path in (
        "/v1/items",  # another version's route
        "/other",  # another API's route
        "/v2/admin/x",  # under /v2, but the gateway routes it to another route
        "/v2/../other",  # dot segments resolved before routing
        "/nothing",
    ):
        with pytest.raises(ServiceError) as exc:
            await service.send(
                ANONYMOUS, TryItIn.parse({"api": "shop", "version": "v2", "path": path})
            )
        assert _pointers(exc) == ["#/path"], path
    assert transport.sent == []


async def test_the_host_is_never_the_developers(config: GatewayConfig) -> None:
    transport = FakeTransport()
    service = _service(config, transport)
    for path in ("//evil.example/v2", "http://evil.example/v2", "@evil.example/v2", "/v2?x#y"):
        with pytest.raises(ServiceError) as exc:
            await service.send(
                ANONYMOUS, TryItIn.parse({"api": "shop", "version": "v2", "path": path})
            )
        assert _pointers(exc) == ["#/path"]
    for i, name in enumerate(("Host", "X-Forwarded-Host", "Forwarded", "Transfer-Encoding")):
        with pytest.raises(ServiceError) as exc:
            await service.send(
                ANONYMOUS,
                TryItIn.parse(
                    {
                        "api": "shop",
                        "version": "v2",
                        "path": "/v2",
                        "headers": [{"name": "A", "value": "b"}] * i
                        + [{"name": name, "value": "x"}],
                    }
                ),
            )
        assert _pointers(exc) == [f"#/headers/{i}/name"]
    assert transport.sent == []
    # A path with an @ after the first slash stays a path on the gateway.
    await service.send(
        ANONYMOUS, TryItIn.parse({"api": "shop", "version": "v2", "path": "/v2/@evil.example"})
    )
    # A route restricted to a host gets that host from the config.
    await service.send(ANONYMOUS, TryItIn.parse({"api": "shop", "version": "v2", "path": "/h/x"}))
    first, second = transport.sent
    assert first.url.startswith("http://127.0.0.1:8123/v2/@evil.example")
    assert second.url == "http://127.0.0.1:8123/h/x"
    assert ("Host", "api.example.com") in second.headers
    with pytest.raises(ValueError):
        _service(config, transport, portal_tryit_url="http://gw.example/prefix")


async def test_shared_routes_name_the_version_and_authorization_is_bearer(
    config: GatewayConfig,
) -> None:
    transport = FakeTransport()
    service = _service(config, transport, portal_tryit_url="https://gw.example:9443")
    result = await service.send(
        ANONYMOUS,
        TryItIn.parse(
            {
                "api": "shop",
                "version": "v1",
                "path": "/shared/x",
                "headers": [{"name": "api-version", "value": "v9"}],
                "key": KEY,
            }
        ),
    )
    [sent] = transport.sent
    assert sent.url == "https://gw.example:9443/shared/x"
    headers = dict(sent.headers)
    assert headers["Api-Version"] == "v1"
    assert "api-version" not in headers
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert KEY not in json.dumps(result.as_json())
    # A route without key-auth: the key is not sent, and the console says so.
    result = await service.send(
        ANONYMOUS, TryItIn.parse({"api": "shop", "version": "v1", "path": "/v1", "key": KEY})
    )
    assert KEY not in json.dumps(transport.sent[-1].headers)
    assert result.notes


async def test_visibility_bounds_and_timeouts(config: GatewayConfig) -> None:
    transport = FakeTransport()
    service = _service(config, transport)
    with pytest.raises(ServiceError) as exc:
        await service.send(
            ANONYMOUS, TryItIn.parse({"api": "private", "version": "v1", "path": "/other"})
        )
    assert exc.value.kind.status == 404
    app = access_of(config, ["app-a"])
    await service.send(app, TryItIn.parse({"api": "private", "version": "v1", "path": "/other"}))
    with pytest.raises(ServiceError) as exc:
        await service.send(
            app,
            TryItIn.parse(
                {
                    "api": "shop",
                    "version": "v2",
                    "path": "/v2",
                    "method": "POST",
                    "body": "x" * (MAX_REQUEST_BODY + 1),
                }
            ),
        )
    assert _pointers(exc) == ["#/body"]
    with pytest.raises(ServiceError) as exc:
        await service.send(app, TryItIn.parse({"api": "shop", "version": "v3", "path": "/v2"}))
    assert _pointers(exc) == ["#/version"]
    with pytest.raises(ServiceError) as exc:
        TryItIn.parse({"api": "shop", "version": "v2", "path": "/v2", "url": "http://x"})
    assert _pointers(exc) == ["#/url"]
    transport.error = TimeoutError()
    with pytest.raises(ServiceError) as exc:
        await service.send(app, TryItIn.parse({"api": "shop", "version": "v2", "path": "/v2"}))
    assert exc.value.kind is TRYIT_TIMEOUT


def test_body_views() -> None:
    json_type = [("Content-Type", "application/problem+json")]
    assert body_view(json_type, b'{"b":[1]}', False).text == '{\n  "b": [\n    1\n  ]\n}'
    assert body_view(json_type, b'{"b":', True).kind == "text"
    assert body_view([("Content-Type", "text/plain")], "é".encode()[:1], True).text == ""
    binary = body_view([("Content-Type", "image/png")], b"\x89PNG" * 10, False)
    assert binary.kind == "binary"
    assert "40 bytes of image/png" in binary.text
    gz = body_view(
        [("Content-Type", "text/plain"), ("Content-Encoding", "gzip")], b"\x1f\x8b", False
    )
    assert gz.kind == "binary"
    assert body_view([], b"", False).kind == "empty"
    big = body_view([("Content-Type", "text/plain")], b"a" * MAX_RESPONSE_BODY, True)
    assert big.truncated
    assert big.size == MAX_RESPONSE_BODY


async def test_a_developer_is_throttled_per_minute(config: GatewayConfig) -> None:
    transport = FakeTransport()
    now = [120.0]
    service = _service(config, transport, lambda: now[0], portal_tryit_per_minute=2)
    request = TryItIn.parse({"api": "shop", "version": "v2", "path": "/v2"})
    for _ in range(2):
        await service.send(ANONYMOUS, request, requester="dev-1")
    with pytest.raises(ServiceError) as throttled:
        await service.send(ANONYMOUS, request, requester="dev-1")
    assert throttled.value.kind.status == 429
    assert throttled.value.headers["Retry-After"] == "60"
    await service.send(ANONYMOUS, request, requester="dev-2")
    now[0] = 180.0
    await service.send(ANONYMOUS, request, requester="dev-1")
    assert len(transport.sent) == 4
