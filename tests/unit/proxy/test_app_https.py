"""ProxyApp: a route's https_redirect and hsts, driven at the ASGI level so the https
branch (scope scheme "https", which the TLS listener sets) is covered without a TLS
listener; the plain-HTTP side and h2c run through granian in
tests/integration/proxy/test_upstream_tls.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from portcullis.asgi import Message
from portcullis.model.config import GatewayConfig
from portcullis.proxy.app import ProxyApp, https_location
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import build_snapshot
from portcullis.settings import Settings
from portcullis.upstream.transport import (
    Origin,
    TlsError,
    TransportTimeouts,
    UpstreamRequest,
    UpstreamResponse,
)


class _Origin:
    """Answers 200 with the upstream's own Strict-Transport-Security (or fails)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Origin, UpstreamRequest]] = []
        self.fail: Exception | None = None

    async def send(
        self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse:
        self.sent.append((origin, request))
        if self.fail is not None:
            raise self.fail

        async def body() -> AsyncIterator[bytes]:
            yield b"ok"

        headers = [(b"content-length", b"2"), (b"strict-transport-security", b"max-age=1")]
        return UpstreamResponse(200, headers, body())

    async def aclose(self) -> None:
        return None


def _app(origin: _Origin, **settings: Any) -> ProxyApp:
    config = GatewayConfig.model_validate(
        {
            "services": [{"name": "s", "url": "https://origin.example", "tls_verify": False}],
            "routes": [
                {
                    "name": "secure",
                    "service": "s",
                    "paths": ["/secure"],
                    "https_redirect": True,
                    "https_redirect_status_code": 301,
                    "hsts": {"max_age": 100, "include_subdomains": True},
                },
                {"name": "open", "service": "s", "paths": ["/open"]},
            ],
        }
    )
    return ProxyApp(Settings(**settings), SnapshotHolder(build_snapshot(config, 1)), origin)


def _scope(
    path: str,
    scheme: str = "http",
    headers: list[tuple[bytes, bytes]] | None = None,
    client: str = "10.1.2.3",
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"a=1",
        "scheme": scheme,
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": (client, 5555),
        "headers": headers if headers is not None else [(b"host", b"API.example:8000")],
    }


async def _call(app: ProxyApp, scope: dict[str, Any]) -> tuple[int, dict[bytes, list[bytes]]]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    headers: dict[bytes, list[bytes]] = {}
    for name, value in start["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return start["status"], headers


async def test_plain_http_is_redirected_before_anything_goes_upstream() -> None:
    origin = _Origin()
    app = _app(origin, proxy_tls_port=8443, proxy_tls="on")
    status, headers = await _call(app, _scope("/secure/x"))
    assert status == 301
    assert headers[b"location"] == [b"https://api.example:8443/secure/x?a=1"]
    assert b"strict-transport-security" not in headers
    assert origin.sent == []


async def test_with_the_tls_port_off_the_redirect_goes_to_the_default_https_port() -> None:
    # TLS is then terminated in front of the gateway (a load balancer on 443).
    app = _app(_Origin(), proxy_tls_port=8443, proxy_tls="off")
    status, headers = await _call(app, _scope("/secure/x"))
    assert status == 301
    assert headers[b"location"] == [b"https://api.example/secure/x?a=1"]


async def test_a_tls_request_is_proxied_with_the_routes_hsts_only() -> None:
    origin = _Origin()
    status, headers = await _call(_app(origin), _scope("/secure/x", scheme="https"))
    assert status == 200
    # The route's policy replaces the origin's own.
    assert headers[b"strict-transport-security"] == [b"max-age=100; includeSubDomains"]
    sent_origin, _ = origin.sent[0]
    assert sent_origin.tls is not None  # the service's origin TLS rides on the origin


async def test_hsts_goes_on_the_gateways_own_answers_to_tls_requests_too() -> None:
    origin = _Origin()
    origin.fail = TlsError("origin.example: the origin's certificate was refused: expired")
    status, headers = await _call(_app(origin), _scope("/secure/x", scheme="https"))
    assert status == 502
    assert headers[b"strict-transport-security"] == [b"max-age=100; includeSubDomains"]


async def test_a_route_without_hsts_passes_the_origins_header_on() -> None:
    status, headers = await _call(_app(_Origin()), _scope("/open", scheme="https"))
    assert status == 200
    assert headers[b"strict-transport-security"] == [b"max-age=1"]


@pytest.mark.parametrize(("client", "redirected"), [("127.0.0.1", False), ("10.9.9.9", True)])
async def test_x_forwarded_proto_counts_only_from_trusted_proxies(
    client: str, redirected: bool
) -> None:
    app = _app(_Origin(), trusted_proxies=["127.0.0.1"])
    headers = [(b"host", b"api.example"), (b"x-forwarded-proto", b"https, http")]
    status, answer = await _call(app, _scope("/secure/x", headers=headers, client=client))
    assert (status == 301) is redirected
    assert (b"strict-transport-security" in answer) is not redirected


async def test_no_usable_host_is_a_400_not_a_redirect_elsewhere() -> None:
    headers = [(b"host", b"evil.example/@other")]
    status, _ = await _call(_app(_Origin()), _scope("/secure/x", headers=headers))
    assert status == 400


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        (b"api.example", None, b"https://api.example/p?a=1"),
        (b"api.example:8080", 443, b"https://api.example/p?a=1"),
        (b"api.example", 8443, b"https://api.example:8443/p?a=1"),
        (b"[::1]:8000", 8443, b"https://[::1]:8443/p?a=1"),
        (b"", None, None),
        (b"a b", None, None),
    ],
)
def test_https_location(host: bytes, port: int | None, expected: bytes | None) -> None:
    scope = _scope("/p", headers=[(b"host", host)] if host else [])
    assert https_location(scope, port) == expected


async def test_the_tls_error_detail_names_the_cause() -> None:
    import json

    origin = _Origin()
    origin.fail = TlsError("origin.example: the origin's certificate was refused: expired")
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await _app(origin)(_scope("/open", scheme="https"), receive, send)
    problem = json.loads(sent[1]["body"])
    assert problem["type"].endswith("/upstream-tls-failed")
    assert problem["detail"] == (
        "Service 's': origin.example: the origin's certificate was refused: expired"
    )


def test_a_websocket_handshake_is_sent_to_wss() -> None:
    scope = {**_scope("/ws", headers=[(b"host", b"api.example")]), "type": "websocket"}
    assert https_location(scope, 8443) == b"wss://api.example:8443/ws?a=1"
