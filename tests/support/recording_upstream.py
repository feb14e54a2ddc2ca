"""A recording upstream for protocol suites: `RawUpstream` on its own thread and loop.

The gateway under test is a subprocess and the tests are synchronous (raw sockets,
httpx, h2, the websockets sync client), so the upstream runs its asyncio loop in a
background thread and one instance can serve a whole module. It records every
request exactly as it arrived (head bytes, headers in order, body, which
connection, every raw byte per connection) and answers with `respond(request)`,
which a test may replace. By default a WebSocket upgrade is accepted (RFC 6455
handshake); after any 101 the connection echoes text and binary frames.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from support.raw_upstream import RawConnection, RawUpstream, ReceivedRequest, response

__all__ = ["RecordingUpstream", "default_response", "recording_upstream"]

Responder = Callable[[ReceivedRequest], bytes]

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def default_response(req: ReceivedRequest) -> bytes:
    """200 with a small body naming what arrived (HEAD: the same head, no body); a
    WebSocket upgrade is accepted with 101."""
    if _is_websocket(req):
        return _ws_accept(req)
    body = b"seen " + req.method.encode() + b" " + req.target
    if req.method == "HEAD":
        return response(200, headers=[(b"content-length", b"%d" % len(body))], length=False)
    return response(200, body, [(b"content-type", b"text/plain")])


def _is_websocket(req: ReceivedRequest) -> bool:
    upgrade = req.header(b"upgrade")
    return upgrade is not None and upgrade.lower() == b"websocket"


def _ws_accept(req: ReceivedRequest) -> bytes:
    key = req.header(b"sec-websocket-key") or b""
    accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
    headers = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", accept),
    ]
    protocols = req.header(b"sec-websocket-protocol")
    if protocols:
        headers.append((b"sec-websocket-protocol", protocols.split(b",")[0].strip()))
    return response(101, headers=headers, reason=b"Switching Protocols", length=False)


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        size = bytes([n])
    elif n < 65536:
        size = bytes([126]) + n.to_bytes(2, "big")
    else:
        size = bytes([127]) + n.to_bytes(8, "big")
    return bytes([0x80 | opcode]) + size + payload


class RecordingUpstream:
    """What the upstream received, and how it answers; safe to read from the test thread."""

    def __init__(self) -> None:
        self.respond: Responder = default_response
        # Text/binary WebSocket messages received (and echoed), in order.
        self.ws_messages: list[bytes] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server = RawUpstream(self._handle, record_bytes=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result(10)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    # ------------------------------------------------------------------ what it saw

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def requests(self) -> list[ReceivedRequest]:
        return list(self._server.requests)

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions from parsing or answering (a malformed head from the gateway...)."""
        return list(self._server.errors)

    def received(self) -> list[bytes]:
        """Every byte received, per accepted connection, in accept order."""
        return [conn.received for conn in list(self._server.connections)]

    def closed_by_peer(self, connection: int, timeout: float = 5.0) -> bool:
        """Wait until the gateway closed upstream connection `connection` between requests."""
        deadline = time.monotonic() + timeout
        while connection not in self._server.peer_closed:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def inject(self, connection: int, data: bytes) -> None:
        """Write `data` on connection `connection` now, outside any exchange."""
        conn = self._server.connections[connection]
        asyncio.run_coroutine_threadsafe(conn.send(data), self._loop).result(5)

    def clear(self) -> None:
        """Forget what was recorded and answer with `default_response` again."""
        self._server.requests.clear()
        self._server.errors.clear()
        self.ws_messages.clear()
        self.respond = default_response

    def seen(self, token: bytes) -> list[ReceivedRequest]:
        """The requests whose request-target contains `token`."""
        return [r for r in self.requests if token in r.target]

    def wait_for(
        self, token: bytes, count: int = 1, timeout: float = 10.0
    ) -> list[ReceivedRequest]:
        """Wait until `count` complete requests whose target contains `token` arrived."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.seen(token) if r.complete]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.01)

    # ------------------------------------------------------------------ serving

    async def _handle(self, conn: RawConnection) -> None:
        while (req := await conn.read_request()) is not None:
            reply = self.respond(req)
            await conn.send(reply)
            if reply.startswith(b"HTTP/1.1 101 "):
                await self._echo_frames(conn)
                return
            if (req.header(b"connection") or b"").lower() == b"close":
                return

    async def _echo_frames(self, conn: RawConnection) -> None:
        """Echo text/binary frames, answer pings, return the peer's close (RFC 6455 §5)."""
        read = conn.reader.readexactly
        while True:
            b0, b1 = await read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await read(2), "big")
            elif n == 127:
                n = int.from_bytes(await read(8), "big")
            mask = await read(4) if b1 & 0x80 else b"\x00\x00\x00\x00"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(await read(n)))
            if opcode == 0x8:
                await conn.send(_frame(0x8, payload))
                return
            if opcode == 0x9:
                await conn.send(_frame(0xA, payload))
            elif opcode in (0x1, 0x2):
                self.ws_messages.append(payload)
                await conn.send(_frame(opcode, payload))


@contextmanager
def recording_upstream() -> Iterator[RecordingUpstream]:
    upstream = RecordingUpstream()
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.stop()
