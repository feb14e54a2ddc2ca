"""ProxyApp at the body edges: request bodies that stop or are coded, response bodies
that stream or break off.

The ASGI server is played by the test (what granian hands over on a bad chunk
is an `http.disconnect`), the upstream by a scripted transport; the same cases
against a real gateway are in tests/integration/proxy/test_upstream_failures.py
and test_streaming.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from portcullis.analytics.record import Flag
from portcullis.asgi import Message
from portcullis.model.config import GatewayConfig
from portcullis.proxy.app import ProxyApp
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import build_snapshot
from portcullis.settings import Settings
from portcullis.upstream.transport import (
    Origin,
    RemoteProtocolError,
    TransportTimeouts,
    UpstreamRequest,
    UpstreamResponse,
)
from support.records import RecordCollector

Body = Callable[[], AsyncIterator[bytes]]


class _Upstream:
    """Reads the request body like a transport would, then answers with `body()`."""

    def __init__(self, body: Body | None = None, headers: list[Any] | None = None) -> None:
        self.body = body
        self.headers = headers or []
        self.received: list[bytes] = []

    async def send(
        self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse:
        if not isinstance(request.body, bytes):
            async for chunk in request.body:
                self.received.append(chunk)
        else:
            self.received.append(request.body)
        assert self.body is not None
        return UpstreamResponse(200, list(self.headers), self.body())

    async def aclose(self) -> None:
        return None


def _app(upstream: _Upstream, *, body_plugin: bool = False) -> tuple[ProxyApp, RecordCollector]:
    doc: dict[str, Any] = {
        "services": [{"name": "svc", "url": "http://127.0.0.1:9"}],
        "routes": [{"name": "r", "service": "svc", "paths": ["/api"]}],
    }
    if body_plugin:
        doc["plugins"] = [
            {"name": "request-transformer", "route": "r", "config": {"body": {"set": {"a": 1}}}}
        ]
    snapshot = build_snapshot(GatewayConfig.model_validate(doc), 1)
    app = ProxyApp(Settings(), SnapshotHolder(snapshot), upstream)
    collect = RecordCollector()
    app.observers = (collect,)
    return app, collect


def _scope(method: str = "POST", headers: list[Any] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": "/api",
        "raw_path": b"/api",
        "query_string": b"",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("10.1.2.3", 5555),
        "headers": [(b"host", b"gw"), *(headers or [])],
    }


async def _call(
    app: ProxyApp,
    scope: dict[str, Any],
    messages: list[Message],
    on_send: Callable[[Message], Awaitable[None]] | None = None,
) -> list[Message]:
    sent: list[Message] = []
    pending = list(messages)

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if on_send is not None:
            await on_send(message)

    await app(scope, receive, send)
    return sent


def _piece(body: bytes, more: bool = True) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


DISCONNECT: Message = {"type": "http.disconnect"}
CHUNKED = [(b"transfer-encoding", b"chunked")]
JSON = [(b"content-type", b"application/json")]


async def _ok() -> AsyncIterator[bytes]:
    yield b"ok"


# -- request bodies that stop ------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body_plugin"),
    [
        ([(b"content-length", b"10")], False),
        (CHUNKED, False),
        ([*CHUNKED, *JSON], True),
    ],
    ids=["content-length", "chunked-streamed", "chunked-read-for-plugins"],
)
async def test_request_body_that_stops_is_a_400_that_closes(
    headers: list[Any], body_plugin: bool
) -> None:
    # What granian hands over for a bad chunk size or extension: a disconnect.
    upstream = _Upstream(_ok)
    app, collect = _app(upstream, body_plugin=body_plugin)
    sent = await _call(app, _scope(headers=headers), [_piece(b'{"b":'), DISCONNECT])
    start = sent[0]
    assert start["status"] == 400
    assert (b"connection", b"close") in start["headers"]
    problem = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert problem["type"].endswith("/invalid-request-body")
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    (record,) = collect.records
    assert record.error_kind == "invalid-request-body"
    # The upstream is not blamed for the client's body.
    (target,) = app.holder.current.pools["svc@url"].targets
    assert target.health._failures == 0
    assert target.active == 0


async def test_http2_answer_has_no_connection_header() -> None:
    app, _ = _app(_Upstream(_ok))
    scope = {**_scope(headers=CHUNKED), "http_version": "2"}
    sent = await _call(app, scope, [_piece(b"x"), DISCONNECT])
    assert sent[0]["status"] == 400
    assert all(name != b"connection" for name, _ in sent[0]["headers"])


# -- transfer codings --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codings", "status", "slug"),
    [
        ([b"gzip, chunked"], 501, "transfer-coding-not-implemented"),
        ([b"gzip", b"chunked"], 501, "transfer-coding-not-implemented"),
        ([b"chunked, chunked"], 400, "bad-request"),
        ([b"chunked, gzip"], 400, "bad-request"),
    ],
    ids=["gzip-chunked", "gzip-then-chunked-lines", "chunked-twice", "gzip-last"],
)
async def test_transfer_codings_other_than_chunked_are_refused(
    codings: list[bytes], status: int, slug: str
) -> None:
    upstream = _Upstream(_ok)
    app, _ = _app(upstream)
    headers = [(b"transfer-encoding", c) for c in codings]
    sent = await _call(app, _scope(headers=headers), [_piece(b"\x1f\x8b", more=False)])
    assert sent[0]["status"] == status
    assert (b"connection", b"close") in sent[0]["headers"]
    problem = json.loads(sent[1]["body"])
    assert problem["type"].endswith("/" + slug)
    assert upstream.received == []


# -- response bodies ---------------------------------------------------------------------


async def test_each_response_chunk_is_relayed_before_the_next_arrives() -> None:
    relayed = asyncio.Event()

    async def stream() -> AsyncIterator[bytes]:
        yield b"event: 1\n\n"
        # The upstream holds its second event until the client has the first.
        await asyncio.wait_for(relayed.wait(), 5.0)
        yield b"event: 2\n\n"

    async def on_send(message: Message) -> None:
        if message.get("body") == b"event: 1\n\n":
            relayed.set()

    app, _ = _app(_Upstream(stream))
    sent = await _call(app, _scope("GET"), [_piece(b"", more=False)], on_send)
    assert [m.get("body") for m in sent[1:]] == [b"event: 1\n\n", b"event: 2\n\n", b""]
    assert [m.get("more_body") for m in sent[1:]] == [True, True, False]


async def test_declared_length_ends_the_body_with_its_last_chunk() -> None:
    async def two() -> AsyncIterator[bytes]:
        yield b"he"
        yield b"llo"

    app, _ = _app(_Upstream(two, [(b"content-length", b"5")]))
    sent = await _call(app, _scope("GET"), [_piece(b"", more=False)])
    assert [(m.get("body"), m.get("more_body")) for m in sent[1:]] == [
        (b"he", True),
        (b"llo", False),
    ]


async def test_body_failing_before_its_first_byte_is_a_502() -> None:
    async def broken() -> AsyncIterator[bytes]:
        raise RemoteProtocolError("closed before the body", request_sent=True)
        yield b""  # pragma: no cover - makes this an async generator

    app, collect = _app(_Upstream(broken, [(b"content-length", b"100")]))
    sent = await _call(app, _scope("GET"), [_piece(b"", more=False)])
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 502
    assert json.loads(sent[1]["body"])["type"].endswith("/upstream-protocol-error")
    assert collect.records[0].error_kind == "upstream-protocol-error"


async def test_body_failing_after_its_first_byte_aborts_the_response() -> None:
    async def short() -> AsyncIterator[bytes]:
        yield b"only ten b"
        raise RemoteProtocolError("closed before the end", request_sent=True)

    app, collect = _app(_Upstream(short, [(b"content-length", b"100")]))
    sent: list[Message] = []
    with pytest.raises(RemoteProtocolError):
        await app(
            _scope("GET"),
            _receiver([_piece(b"", more=False)]),
            _appender(sent),
        )
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1] == {"type": "http.response.body", "body": b"only ten b", "more_body": True}
    (record,) = collect.records
    assert record.error_kind == "upstream-protocol-error"
    assert not record.flags & Flag.CLIENT_ABORTED


def _receiver(messages: list[Message]) -> Callable[[], Awaitable[Message]]:
    pending = list(messages)

    async def receive() -> Message:
        return pending.pop(0) if pending else DISCONNECT

    return receive


def _appender(sent: list[Message]) -> Callable[[Message], Awaitable[None]]:
    async def send(message: Message) -> None:
        sent.append(message)

    return send
