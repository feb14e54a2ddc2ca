"""proxy.websocket: the handshake responder, close codes, and the order of the relay's ends.

The relay is driven with a scripted upstream and an ASGI receive that, like
granian's, holds the connection until it is cancelled: the close must be sent
only after the pending receive was cancelled (granian sends nothing before).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from portcullis.asgi import Message
from portcullis.proxy.websocket import (
    UPSTREAM_LOST,
    WebSocketProxy,
    handshake_responder,
    one_line_per_name,
)


def test_repeated_fields_become_one_line_and_a_repeated_set_cookie_is_dropped() -> None:
    headers = [
        (b"www-authenticate", b'Bearer realm="a"'),
        (b"content-type", b"application/problem+json"),
        (b"WWW-Authenticate", b'Key realm="a"'),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
    assert one_line_per_name(headers) == [
        (b"www-authenticate", b'Bearer realm="a", Key realm="a"'),
        (b"content-type", b"application/problem+json"),
        (b"set-cookie", b"a=1"),
    ]


async def _through(scope: dict[str, Any], messages: list[Message]) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    respond = handshake_responder(scope, send)
    for message in messages:
        await respond(message)
    return sent


REFUSAL: list[Message] = [
    {
        "type": "http.response.start",
        "status": 401,
        "headers": [(b"www-authenticate", b"Bearer"), (b"www-authenticate", b"Key")],
    },
    {"type": "http.response.body", "body": b"{}", "more_body": False},
]


async def test_with_the_extension_the_refusal_is_an_http_response() -> None:
    sent = await _through({"extensions": {"websocket.http.response": {}}}, REFUSAL)
    assert sent == [
        {
            "type": "websocket.http.response.start",
            "status": 401,
            "headers": [(b"www-authenticate", b"Bearer, Key")],
        },
        {"type": "websocket.http.response.body", "body": b"{}", "more_body": False},
    ]


@pytest.mark.parametrize("scope", [{}, {"extensions": None}, {"extensions": {"other": {}}}])
async def test_without_the_extension_the_refusal_is_a_close_before_accepting(
    scope: dict[str, Any],
) -> None:
    assert await _through(scope, REFUSAL) == [{"type": "websocket.close", "code": 1008}]


def _msg(kind: aiohttp.WSMsgType, data: Any = None, extra: Any = None) -> aiohttp.WSMessage:
    return aiohttp.WSMessage(kind, data, extra)


class _Upstream:
    """Plays the upstream side of aiohttp's ClientWebSocketResponse from a script."""

    def __init__(self, script: list[aiohttp.WSMessage]) -> None:
        self.script: asyncio.Queue[aiohttp.WSMessage] = asyncio.Queue()
        for message in script:
            self.script.put_nowait(message)
        self.sent: list[Any] = []
        self.closed_with: list[tuple[int, bytes]] = []

    async def receive(self) -> aiohttp.WSMessage:
        return await self.script.get()

    async def send_str(self, data: str) -> None:
        self.sent.append(data)

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        if not self.closed_with:
            self.closed_with.append((code, message))
            # aiohttp wakes a pending receive with CLOSING when closed from another task.
            self.script.put_nowait(_msg(aiohttp.WSMsgType.CLOSING))
        return True


class _Client:
    """An ASGI receive/send pair; `receive` blocks (like granian's) unless fed."""

    def __init__(self, incoming: list[Message]) -> None:
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        for message in incoming:
            self.incoming.put_nowait(message)
        self.sent: list[Message] = []
        self.receive_pending = False
        self.cancelled_receives = 0

    async def receive(self) -> Message:
        self.receive_pending = True
        try:
            return await self.incoming.get()
        except asyncio.CancelledError:
            self.cancelled_receives += 1
            raise
        finally:
            self.receive_pending = False

    async def send(self, message: Message) -> None:
        if message["type"] == "websocket.close":
            # granian would block here until the client spoke: the test fails instead.
            assert not self.receive_pending, "close sent while a receive is pending"
        self.sent.append(message)


async def _relay(upstream: _Upstream, client: _Client) -> None:
    proxy = WebSocketProxy(None)  # type: ignore[arg-type]
    await asyncio.wait_for(proxy.relay(upstream, client.receive, client.send), 5)  # type: ignore[arg-type]


async def test_an_upstream_close_is_relayed_after_the_pending_receive_is_cancelled() -> None:
    upstream = _Upstream([])
    client = _Client([])
    relay = asyncio.create_task(_relay(upstream, client))
    while not client.receive_pending:
        await asyncio.sleep(0)
    upstream.script.put_nowait(_msg(aiohttp.WSMsgType.TEXT, "hello"))
    upstream.script.put_nowait(_msg(aiohttp.WSMsgType.CLOSE, 4000, "bye"))
    await relay
    assert client.sent == [
        {"type": "websocket.send", "text": "hello"},
        {"type": "websocket.close", "code": 4000, "reason": "bye"},
    ]
    assert client.cancelled_receives == 1


@pytest.mark.parametrize(
    ("ending", "code"),
    [
        (_msg(aiohttp.WSMsgType.CLOSED), UPSTREAM_LOST),  # aiohttp's EOF: no close frame
        (_msg(aiohttp.WSMsgType.ERROR, ValueError("bad frame")), UPSTREAM_LOST),
        (_msg(aiohttp.WSMsgType.CLOSE, 1005, ""), 1000),  # a close frame without a code
        (_msg(aiohttp.WSMsgType.CLOSE, 1006, ""), UPSTREAM_LOST),  # never sent on the wire
        (_msg(aiohttp.WSMsgType.CLOSE, 1001, "stopping"), 1001),
    ],
)
async def test_how_the_upstream_ended_decides_the_clients_close_code(
    ending: aiohttp.WSMessage, code: int
) -> None:
    client = _Client([])
    await _relay(_Upstream([ending]), client)
    assert client.sent[-1]["code"] == code


async def test_a_client_that_leaves_closes_the_upstream_with_its_code() -> None:
    upstream = _Upstream([])
    client = _Client(
        [
            {"type": "websocket.receive", "text": "hi"},
            {"type": "websocket.receive", "bytes": b"\x00"},
            {"type": "websocket.disconnect", "code": 4001},
        ]
    )
    await _relay(upstream, client)
    assert upstream.sent == ["hi", b"\x00"]
    assert upstream.closed_with == [(4001, b"")]
    assert client.sent == []  # nobody left to tell
    assert client.cancelled_receives == 0
