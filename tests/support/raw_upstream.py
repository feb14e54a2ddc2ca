"""A raw asyncio HTTP/1.1 test upstream whose every byte the test controls.

A test gives `RawUpstream` a handler coroutine that receives each accepted
connection as a `RawConnection`; the handler reads requests with the small
parser here and writes whatever bytes it wants (`response()` builds the common
cases). The server counts accepts and records every request head, and collects
handler exceptions so a test can assert the server side saw what it expected.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import SupportsIndex

from portcullis.upstream.transport import Origin

__all__ = [
    "Handler",
    "RawConnection",
    "RawUpstream",
    "ReceivedRequest",
    "blackhole_port",
    "keep_alive_handler",
    "refused_port",
    "response",
]

Handler = Callable[["RawConnection"], Awaitable[None]]

_READ_SIZE = 64 * 1024


@dataclass(slots=True)
class ReceivedRequest:
    """One request head as the upstream saw it; names lowercased, order kept."""

    method: str
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    raw_head: bytes
    body: bytes = b""
    body_size: int = 0
    chunk_sizes: list[int] = field(default_factory=list)
    # True once the body was read to its framed end (a cut-off body stays False).
    complete: bool = False
    # Which accepted connection (`RawConnection.index`) carried the request.
    connection: int = 0

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (lowercase), or None."""
        for n, v in self.headers:
            if n == name:
                return v
        return None

    @property
    def chunked(self) -> bool:
        te = self.header(b"transfer-encoding")
        return te is not None and te.lower().endswith(b"chunked")


def response(
    status: int = 200,
    body: bytes = b"",
    headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    reason: bytes | None = None,
    version: bytes = b"HTTP/1.1",
    length: bool = True,
) -> bytes:
    """Build a response; `length=False` leaves framing to the caller's `headers`."""
    reasons = {200: b"OK", 204: b"No Content", 304: b"Not Modified", 100: b"Continue"}
    lines = [b"%s %d %s" % (version, status, reason or reasons.get(status, b"Status"))]
    lines += [n + b": " + v for n, v in headers]
    if length:
        lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class RawConnection:
    """One accepted connection: parse requests from it, write raw bytes to it."""

    def __init__(
        self,
        upstream: RawUpstream,
        index: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.upstream = upstream
        self.index = index
        self.reader = reader
        self.writer = writer

    @property
    def received(self) -> bytes:
        """Every byte the peer sent on this connection so far, parsed or not."""
        return bytes(self.reader.received) if isinstance(self.reader, _TapReader) else b""

    async def read_head(self) -> ReceivedRequest | None:
        """Read one request head; None if the peer closed before sending a byte."""
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            self.upstream.peer_closed.append(self.index)
            return None
        except ConnectionResetError:
            self.upstream.peer_closed.append(self.index)
            return None
        lines = raw[:-4].split(b"\r\n")
        method, target, version = lines[0].split(b" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.strip().lower(), value.strip()))
        req = ReceivedRequest(
            method.decode("ascii"), target, version, headers, raw, connection=self.index
        )
        self.upstream.requests.append(req)
        return req

    async def read_body(self, req: ReceivedRequest, *, keep: bool = True) -> None:
        """Read `req`'s body by its framing; `keep=False` only counts the bytes."""
        parts: list[bytes] = []
        if req.chunked:
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while await self.reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    break
                req.chunk_sizes.append(size)
                await self._read_exact(size, parts if keep else None, req)
                if await self.reader.readexactly(2) != b"\r\n":
                    raise ValueError("chunk data not followed by CRLF")
        else:
            length = req.header(b"content-length")
            if length is not None:
                await self._read_exact(int(length), parts if keep else None, req)
        if keep:
            req.body = b"".join(parts)
        req.complete = True

    async def _read_exact(self, size: int, parts: list[bytes] | None, req: ReceivedRequest) -> None:
        while size:
            data = await self.reader.read(min(size, _READ_SIZE))
            if not data:
                raise asyncio.IncompleteReadError(b"", size)
            size -= len(data)
            req.body_size += len(data)
            if parts is not None:
                parts.append(data)

    async def read_request(self, *, keep_body: bool = True) -> ReceivedRequest | None:
        """Read one whole request; None at a clean end of the connection."""
        req = await self.read_head()
        if req is not None:
            await self.read_body(req, keep=keep_body)
        return req

    async def send(self, data: bytes) -> None:
        """Write `data` and wait until the transport's buffer drained."""
        self.writer.write(data)
        await self.writer.drain()

    async def send_stream(self, total: int, piece: bytes) -> None:
        """Write `total` bytes made of repeats of `piece`, draining as it goes."""
        view = memoryview(piece)
        while total > 0:
            n = min(total, len(view))
            self.writer.write(view[:n])
            await self.writer.drain()
            total -= n

    async def close(self) -> None:
        """Close the connection after flushing what was written."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0)."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        self.writer.transport.abort()

    async def wait_closed_by_peer(self) -> None:
        """Read and discard until the peer closes the connection."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(_READ_SIZE):
                pass


def keep_alive_handler(respond: Callable[[ReceivedRequest], bytes]) -> Handler:
    """A handler answering every request on a connection with `respond(request)`."""

    async def handle(conn: RawConnection) -> None:
        while (req := await conn.read_request()) is not None:
            await conn.send(respond(req))

    return handle


class _TapReader(asyncio.StreamReader):
    """A stream reader that also keeps every byte fed to it (what the peer sent)."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.received = bytearray()

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        self.received.extend(data)
        super().feed_data(data)


class RawUpstream:
    """An HTTP/1.1 test server on 127.0.0.1 driven by a per-connection handler."""

    def __init__(
        self, handler: Handler, *, tls: ssl.SSLContext | None = None, record_bytes: bool = False
    ) -> None:
        self._handler = handler
        self._tls = tls
        # Keep every received byte per connection (`RawConnection.received`); off for
        # tests that stream large bodies with bounded memory.
        self._record_bytes = record_bytes
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.connections: list[RawConnection] = []
        self.accepts = 0
        self.requests: list[ReceivedRequest] = []
        self.errors: list[BaseException] = []
        # Indexes of connections the client closed between requests (seen by read_head).
        self.peer_closed: list[int] = []
        self.port = 0

    @property
    def origin(self) -> Origin:
        return Origin("https" if self._tls is not None else "http", "127.0.0.1", self.port)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:
            # What asyncio.start_server does, with a reader that may record the raw bytes.
            reader = (
                _TapReader(2**16, loop) if self._record_bytes else asyncio.StreamReader(2**16, loop)
            )
            return asyncio.StreamReaderProtocol(reader, self._on_connect, loop=loop)

        self._server = await loop.create_server(protocol, "127.0.0.1", 0, ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, abort every connection and wait for the handlers to end."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        conn = RawConnection(self, self.accepts, reader, writer)
        self.connections.append(conn)
        self.accepts += 1
        try:
            await self._handler(conn)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, asyncio.IncompleteReadError):
            # The client went away mid-request; tests assert on the client's view.
            pass
        except Exception as exc:
            self.errors.append(exc)
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    async def __aenter__(self) -> RawUpstream:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def refused_port() -> int:
    """A 127.0.0.1 port with nothing listening on it (connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def blackhole_port() -> Iterator[int]:
    """A 127.0.0.1 port whose SYNs go unanswered, so connecting times out.

    A listener with backlog 0 that never accepts: once its accept queue is full
    (a few pending connections fill it) Linux drops further SYNs silently.
    """
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            fillers.append(filler)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        # The first filler's handshake completing means the accept queue is full.
        select.select([], [fillers[0]], [], 2.0)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
