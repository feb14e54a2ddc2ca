"""ProxyApp and the request inspector: a sampled request is tapped (bodies cut at 1 KiB,
credentials redacted, a refusal captured too); a request on a route without a capture,
or not sampled, gets no tap at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from portcullis.asgi import Message
from portcullis.model.config import GatewayConfig
from portcullis.proxy.app import ProxyApp
from portcullis.runtime.captures import BODY_LIMIT, REDACTED, CapturedExchange, CaptureSession
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import build_snapshot
from portcullis.settings import Settings
from portcullis.upstream.transport import (
    Origin,
    TransportTimeouts,
    UpstreamRequest,
    UpstreamResponse,
)
from support.clock import ManualClock


class _Echo:
    """A transport that answers 200 with the request body twice (and a cookie)."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def send(
        self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse:
        body = request.body
        data = body if isinstance(body, bytes) else b"".join([c async for c in body])
        self.received.append(data)

        async def chunks() -> AsyncIterator[bytes]:
            yield data
            yield data

        headers = [(b"content-length", str(2 * len(data)).encode()), (b"set-cookie", b"sid=9")]
        return UpstreamResponse(status=200, headers=headers, body=chunks())

    async def aclose(self) -> None:
        return None


def _app(transport: _Echo) -> ProxyApp:
    config = GatewayConfig.model_validate(
        {
            "services": [{"name": "svc", "url": "http://127.0.0.1:9"}],
            "routes": [
                {"name": "r", "service": "svc", "paths": ["/api"]},
                {"name": "quiet", "service": "svc", "paths": ["/quiet"]},
            ],
            "plugins": [
                {
                    "name": "request-termination",
                    "route": "quiet",
                    "config": {"status_code": 403, "message": "closed"},
                }
            ],
        }
    )
    # No observers, no log plugins: the capture alone makes the proxy record requests.
    return ProxyApp(Settings(), SnapshotHolder(build_snapshot(config, 1)), transport)


async def _post(app: ProxyApp, path: str, body: bytes, query: bytes = b"") -> list[Message]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("10.1.2.3", 5555),
        "headers": [
            (b"host", b"gw"),
            (b"authorization", b"Bearer top-secret"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    parts = [body[:700], body[700:]]
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _capture(app: ProxyApp, route: str, draws: list[float]) -> list[CapturedExchange]:
    taken: list[CapturedExchange] = []
    clock = ManualClock()
    session = CaptureSession(
        id="cap",
        route=route,
        ends_at=clock.now + 60,
        sample_rate=0.5,
        max_count=10,
        sink=taken.append,
        clock=clock,
        random=lambda: draws.pop(0),
    )
    app.holder.current.captures.install([session])
    return taken


async def test_a_sampled_request_is_captured_redacted_with_bodies_cut_at_1_kib() -> None:
    transport = _Echo()
    app = _app(transport)
    taken = _capture(app, "r", [0.1, 0.9])
    body = bytes(range(256)) * 6  # 1536 bytes, not UTF-8
    sent = await _post(app, "/api/x", body, b"a=1&token=t0k")
    assert sent[0]["status"] == 200
    assert transport.received == [body]  # the tap changes nothing on the way
    (exchange,) = taken
    assert exchange.route == "r"
    assert exchange.method == "POST"
    assert exchange.path == "/api/x"
    assert exchange.query == f"a=1&token={REDACTED}"
    assert ["authorization", f"Bearer {REDACTED}"] in exchange.request_headers
    assert ["set-cookie", REDACTED] in exchange.response_headers
    assert exchange.status == 200
    assert exchange.request_body == body[:BODY_LIMIT]
    assert exchange.request_body_size == len(body)
    assert exchange.response_body == body[:BODY_LIMIT]
    assert exchange.response_body_size == 2 * len(body)
    # The second request draws 0.9 >= 0.5: not sampled, nothing recorded.
    assert (await _post(app, "/api/y", b"small"))[0]["status"] == 200
    assert len(taken) == 1


async def test_a_refusal_is_captured_with_the_request_body_unread() -> None:
    app = _app(_Echo())
    taken = _capture(app, "quiet", [0.0])
    sent = await _post(app, "/quiet", b"never read")
    assert sent[0]["status"] == 403
    (exchange,) = taken
    assert exchange.status == 403
    assert exchange.request_body is None
    assert exchange.request_body_size is None
    assert exchange.response_body is not None
    assert b"closed" in exchange.response_body


async def test_routes_without_a_capture_get_no_tap() -> None:
    app = _app(_Echo())
    taken = _capture(app, "quiet", [])  # a capture elsewhere: "r" stays untouched
    assert (await _post(app, "/api/z", b"hello"))[0]["status"] == 200
    assert taken == []
