"""One conformance suite for every `Transport`: the same tests run against each.

The upstream is `support.raw_upstream.RawUpstream`, so each test decides the
exact bytes on the wire and can count connections (`accepts`) to tell a reused
connection from a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from portcullis.upstream.aiohttp_transport import AiohttpTransport
from portcullis.upstream.http1 import Http1Transport
from portcullis.upstream.transport import (
    ConnectError,
    ConnectTimeout,
    Origin,
    ReadTimeout,
    RemoteProtocolError,
    ResponseTooLarge,
    Transport,
    TransportTimeouts,
    UpstreamRequest,
    UpstreamResponse,
    WriteTimeout,
)
from support.raw_upstream import (
    Handler,
    RawConnection,
    RawUpstream,
    ReceivedRequest,
    blackhole_port,
    keep_alive_handler,
    refused_port,
    response,
)

TRANSPORTS: dict[str, Callable[..., Transport]] = {
    "http1": Http1Transport,
    "aiohttp": AiohttpTransport,
}
MAX_HEADER = 16 * 1024
TIMEOUTS = TransportTimeouts(connect=2.0, read=5.0, write=5.0)
HOST = (b"host", b"upstream.test")
MiB = 1024 * 1024


@pytest.fixture(params=sorted(TRANSPORTS))
def transport_factory(request: pytest.FixtureRequest) -> Callable[..., Transport]:
    factory: Callable[..., Transport] = TRANSPORTS[request.param]
    return factory


@pytest.fixture
async def transport(transport_factory: Callable[..., Transport]) -> AsyncIterator[Transport]:
    t = transport_factory(idle_timeout=10.0, max_header_bytes=MAX_HEADER)
    yield t
    await t.aclose()


@contextlib.asynccontextmanager
async def serve(handler: Callable[[RawConnection], Awaitable[None]]) -> AsyncIterator[RawUpstream]:
    async with RawUpstream(handler) as upstream:
        yield upstream
    assert upstream.errors == []


def req(
    method: str = "GET",
    target: bytes = b"/",
    body: bytes | AsyncIterator[bytes] = b"",
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_length: int | None = None,
) -> UpstreamRequest:
    return UpstreamRequest(method, target, [HOST, *(headers or [])], body, content_length)


async def read_all(resp: UpstreamResponse) -> bytes:
    try:
        return b"".join([chunk async for chunk in resp.body])
    finally:
        await resp.aclose()


async def fetch(
    transport: Transport,
    origin: Origin,
    request: UpstreamRequest,
    timeouts: TransportTimeouts = TIMEOUTS,
) -> tuple[UpstreamResponse, bytes]:
    resp = await transport.send(origin, request, timeouts)
    return resp, await read_all(resp)


async def chunks(*parts: bytes, delay: float = 0.0) -> AsyncIterator[bytes]:
    """Yield `parts`; `delay` makes a slow client (the pause is the behaviour under test)."""
    for part in parts:
        if delay:
            await asyncio.sleep(delay)
        yield part


async def repeated(piece: bytes, count: int) -> AsyncIterator[bytes]:
    """Yield `count` fresh copies of `piece`, so buffering them would show in memory."""
    view = memoryview(piece)
    for _ in range(count):
        yield bytes(view)


def echo(r: ReceivedRequest) -> bytes:
    return response(200, b"%s %s %d" % (r.method.encode(), r.target, len(r.body)))


# -- keep-alive and connection management ---------------------------------------


async def test_keep_alive_reuses_one_connection(transport: Transport) -> None:
    async with serve(keep_alive_handler(echo)) as up:
        r1, b1 = await fetch(transport, up.origin, req(target=b"/one"))
        r2, b2 = await fetch(transport, up.origin, req(target=b"/two?x=1"))
    assert (r1.status, r1.reason, b1) == (200, b"OK", b"GET /one 0")
    assert (r2.status, b2) == (200, b"GET /two?x=1 0")
    assert up.accepts == 1


async def test_connection_close_from_upstream_is_not_reused(transport: Transport) -> None:
    # The server keeps the socket open: only the header tells the client not to reuse it.
    def close_each(r: ReceivedRequest) -> bytes:
        return response(200, b"bye", [(b"Connection", b"close")])

    async with serve(keep_alive_handler(close_each)) as up:
        _, b1 = await fetch(transport, up.origin, req())
        _, b2 = await fetch(transport, up.origin, req())
    assert b1 == b2 == b"bye"
    assert up.accepts == 2


async def test_http10_response_without_keep_alive_is_not_reused(transport: Transport) -> None:
    def http10(r: ReceivedRequest) -> bytes:
        return response(200, b"old", version=b"HTTP/1.0")

    async with serve(keep_alive_handler(http10)) as up:
        _, b1 = await fetch(transport, up.origin, req())
        _, b2 = await fetch(transport, up.origin, req())
    assert b1 == b2 == b"old"
    assert up.accepts == 2


async def test_http10_body_until_close(transport: Transport) -> None:
    async def handler(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nfirst ")
        await asyncio.sleep(0.02)  # a pause upstream: the body arrives in two reads
        await conn.send(b"second")
        await conn.close()

    async with serve(handler) as up:
        resp, body = await fetch(transport, up.origin, req())
    assert resp.status == 200
    assert body == b"first second"


async def test_idle_connection_closed_by_upstream_is_replaced(transport: Transport) -> None:
    closed = asyncio.Event()

    async def handler(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.send(response(200, b"once"))
        await conn.close()
        closed.set()

    async with serve(handler) as up:
        _, b1 = await fetch(transport, up.origin, req())
        # The upstream has closed the idle connection (its FIN may or may not have been
        # read yet: either way the pool must not fail the next request).
        await asyncio.wait_for(closed.wait(), 5.0)
        _, b2 = await fetch(transport, up.origin, req())
    assert b1 == b2 == b"once"
    assert up.accepts == 2


async def test_unread_but_complete_body_keeps_connection(transport: Transport) -> None:
    async with serve(keep_alive_handler(lambda r: response(200, b"small"))) as up:
        # Head and body leave the upstream in one write: the whole body has arrived with the
        # head, unread, when the response is closed.
        resp = await transport.send(up.origin, req(), TIMEOUTS)
        await resp.aclose()
        _, body = await fetch(transport, up.origin, req())
    assert body == b"small"
    assert up.accepts == 1


async def test_aclose_after_partial_read_does_not_reuse(transport: Transport) -> None:
    async def handler(conn: RawConnection) -> None:
        while (r := await conn.read_request()) is not None:
            if r.target == b"/big":
                await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (8 * MiB))
                await conn.send_stream(8 * MiB, b"b" * 65536)
            else:
                await conn.send(response(200, b"small"))

    async with serve(handler) as up:
        resp = await transport.send(up.origin, req(target=b"/big"), TIMEOUTS)
        first = await anext(resp.body)
        assert first
        await resp.aclose()
        _, body = await fetch(transport, up.origin, req(target=b"/small"))
    assert body == b"small"
    assert up.accepts == 2


# -- response framing ------------------------------------------------------------


async def test_content_length_response(transport: Transport) -> None:
    async with serve(keep_alive_handler(lambda r: response(200, b"x" * 100_000))) as up:
        _, body = await fetch(transport, up.origin, req())
        _, again = await fetch(transport, up.origin, req())
    assert body == again == b"x" * 100_000
    assert up.accepts == 1


async def test_chunked_response_with_extensions_and_trailers(transport: Transport) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"
    )
    async with serve(keep_alive_handler(lambda r: raw)) as up:
        resp, body = await fetch(transport, up.origin, req())
        _, again = await fetch(transport, up.origin, req())
    assert body == again == b"hello world"
    assert (b"transfer-encoding", b"chunked") in resp.headers
    assert up.accepts == 1


async def test_response_split_into_single_bytes(transport: Transport) -> None:
    raw = response(201, b"created", [(b"X-Slow", b"yes")])

    async def handler(conn: RawConnection) -> None:
        while await conn.read_request() is not None:
            for i in range(len(raw)):
                await conn.send(raw[i : i + 1])

    async with serve(handler) as up:
        resp, body = await fetch(transport, up.origin, req())
        _, again = await fetch(transport, up.origin, req())
    assert (resp.status, body, again) == (201, b"created", b"created")
    assert (b"x-slow", b"yes") in resp.headers
    assert up.accepts == 1


async def test_body_until_close_http11(transport: Transport) -> None:
    async def handler(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
        for part in (b"a" * 1000, b"b" * 1000, b"c"):
            await conn.send(part)
            await asyncio.sleep(0.01)  # a pause upstream: the body arrives in several reads
        await conn.close()

    async with serve(handler) as up:
        resp, body = await fetch(transport, up.origin, req())
    assert resp.status == 200
    assert body == b"a" * 1000 + b"b" * 1000 + b"c"


async def test_response_headers_lowercased_duplicates_kept(transport: Transport) -> None:
    headers = [(b"Set-Cookie", b"a=1"), (b"X-Mixed-Case", b"Value"), (b"set-cookie", b"b=2")]
    async with serve(keep_alive_handler(lambda r: response(200, b"", headers))) as up:
        resp, _ = await fetch(transport, up.origin, req())
    assert [h for h in resp.headers if h[0] != b"content-length"] == [
        (b"set-cookie", b"a=1"),
        (b"x-mixed-case", b"Value"),
        (b"set-cookie", b"b=2"),
    ]


async def test_head_response_has_no_body(transport: Transport) -> None:
    def handler_response(r: ReceivedRequest) -> bytes:
        if r.method == "HEAD" and r.target == b"/chunked":
            return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        if r.method == "HEAD":
            return b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"
        return response(200, b"after head")

    async with serve(keep_alive_handler(handler_response)) as up:
        resp, body = await fetch(transport, up.origin, req("HEAD"))
        assert (resp.status, body) == (200, b"")
        assert (b"content-length", b"1234") in resp.headers
        resp, body = await fetch(transport, up.origin, req("HEAD", b"/chunked"))
        assert (resp.status, body) == (200, b"")
        _, body = await fetch(transport, up.origin, req())
    assert body == b"after head"
    assert up.accepts == 1


async def test_interim_responses_are_skipped(transport: Transport) -> None:
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
        + response(200, b"final", [(b"x-final", b"1")])
    )
    async with serve(keep_alive_handler(lambda r: raw)) as up:
        resp, body = await fetch(transport, up.origin, req("POST", body=b"data"))
        _, again = await fetch(transport, up.origin, req())
    assert (resp.status, body, again) == (200, b"final", b"final")
    assert (b"x-final", b"1") in resp.headers
    assert all(name != b"link" for name, _ in resp.headers)
    assert up.accepts == 1


async def test_204_and_304_have_no_body(transport: Transport) -> None:
    def handler_response(r: ReceivedRequest) -> bytes:
        if r.target == b"/204":
            return b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n"
        if r.target == b"/304":
            return b'HTTP/1.1 304 Not Modified\r\netag: "v1"\r\ncontent-length: 10\r\n\r\n'
        return response(200, b"next")

    async with serve(keep_alive_handler(handler_response)) as up:
        r204, b204 = await fetch(transport, up.origin, req(target=b"/204"))
        r304, b304 = await fetch(transport, up.origin, req(target=b"/304"))
        _, body = await fetch(transport, up.origin, req())
    assert (r204.status, b204, r304.status, b304, body) == (204, b"", 304, b"", b"next")
    assert (b"etag", b'"v1"') in r304.headers
    assert up.accepts == 1


# -- bytes after a complete response ----------------------------------------------

SMUGGLED = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nEVIL!"
STRAY_CASES = {
    # (method of the first request, the first response's bytes)
    "content-length": ("GET", response(200, b"first") + SMUGGLED),
    "204": ("GET", b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nfirst" + SMUGGLED),
    "304": ("GET", b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\nfirst"),
    "head": ("HEAD", response(200, b"first") + SMUGGLED),
    "chunked": (
        "GET",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n" + SMUGGLED,
    ),
}


def stray_then_echo(first: bytes, late: asyncio.Event | None = None) -> Handler:
    """Connection 0 answers with `first` (bytes beyond a complete response); with
    `late`, the response is clean and the stray bytes follow once `late` is set."""

    async def handler(conn: RawConnection) -> None:
        if conn.index == 0:
            await conn.read_request()
            if late is None:
                await conn.send(first)
            else:
                await conn.send(response(200, b"first"))
                await late.wait()
                await conn.send(SMUGGLED)
            # A client that reuses this connection reads the stray bytes as its answer.
            await keep_alive_handler(lambda r: b"")(conn)
        else:
            await keep_alive_handler(echo)(conn)

    return handler


@pytest.mark.parametrize("case", sorted(STRAY_CASES))
async def test_bytes_after_a_complete_response_close_the_connection(
    transport: Transport, case: str
) -> None:
    method, first = STRAY_CASES[case]
    async with serve(stray_then_echo(first)) as up:
        try:
            resp, body = await fetch(transport, up.origin, req(method))
        except RemoteProtocolError:
            # aiohttp parses what follows a bodiless response in the same read
            # together with it, and fails both (see its module docstring).
            assert isinstance(transport, AiohttpTransport)
            assert case in {"204", "304", "head"}
        else:
            assert resp.status == {"204": 204, "304": 304}.get(case, 200)
            assert body == (b"first" if case in {"content-length", "chunked"} else b"")
        _, second = await fetch(transport, up.origin, req(target=b"/next"))
    assert second == b"GET /next 0"
    assert up.accepts == 2


async def test_bytes_arriving_on_an_idle_connection_close_it(transport: Transport) -> None:
    late = asyncio.Event()
    async with serve(stray_then_echo(b"", late)) as up:
        _, body = await fetch(transport, up.origin, req())
        late.set()

        async def closed_by_client() -> None:
            while 0 not in up.peer_closed:
                await asyncio.sleep(0.01)

        # The pool must drop the tainted connection as soon as the bytes arrive.
        await asyncio.wait_for(closed_by_client(), 5.0)
        _, second = await fetch(transport, up.origin, req(target=b"/next"))
    assert body == b"first"
    assert second == b"GET /next 0"
    assert up.accepts == 2


# -- request framing -------------------------------------------------------------


async def test_request_line_and_headers_go_as_given(transport: Transport) -> None:
    headers = [
        (b"x-one", b"1"),
        (b"X-Case", b"Kept"),
        (b"x-one", b"2"),
        (b"content-length", b"99"),
        (b"transfer-encoding", b"chunked"),
    ]
    async with serve(keep_alive_handler(echo)) as up:
        await fetch(transport, up.origin, req(target=b"/a/%7Eb?c=d%20e&f", headers=headers))
    (seen,) = up.requests
    assert (seen.method, seen.target, seen.version) == ("GET", b"/a/%7Eb?c=d%20e&f", b"HTTP/1.1")
    assert seen.headers == [HOST, (b"x-one", b"1"), (b"x-case", b"Kept"), (b"x-one", b"2")]
    assert b"X-Case: Kept" in seen.raw_head


async def test_request_bytes_body_with_content_length(transport: Transport) -> None:
    payload = bytes(range(256)) * 400
    async with serve(keep_alive_handler(echo)) as up:
        _, body = await fetch(transport, up.origin, req("POST", body=payload))
        _, empty = await fetch(transport, up.origin, req("POST"))
    first, second = up.requests
    assert (first.header(b"content-length"), first.body, first.chunked) == (
        b"102400",
        payload,
        False,
    )
    assert (second.header(b"content-length"), second.body) == (b"0", b"")
    assert (body, empty) == (b"POST / 102400", b"POST / 0")


async def test_request_stream_body_with_content_length(transport: Transport) -> None:
    async with serve(keep_alive_handler(echo)) as up:
        # A slow client: the body's parts reach the transport one by one.
        request = req("PUT", body=chunks(b"abc", b"", b"defg", delay=0.01), content_length=7)
        _, body = await fetch(transport, up.origin, request)
    (seen,) = up.requests
    assert (seen.header(b"content-length"), seen.chunked, seen.body) == (b"7", False, b"abcdefg")
    assert body == b"PUT / 7"


async def test_request_stream_body_chunked(transport: Transport) -> None:
    async with serve(keep_alive_handler(echo)) as up:
        _, body = await fetch(
            transport, up.origin, req("POST", body=chunks(b"hello", b" ", b"world"))
        )
        _, again = await fetch(transport, up.origin, req())
    first, _ = up.requests
    assert first.chunked
    assert first.header(b"content-length") is None
    assert first.body == b"hello world"
    assert (body, again) == (b"POST / 11", b"GET / 0")
    assert up.accepts == 1


# -- limits and errors -----------------------------------------------------------


async def test_oversized_response_head_is_rejected(transport: Transport) -> None:
    def big(r: ReceivedRequest) -> bytes:
        size = 8 * 1024 if r.target == b"/fits" else MAX_HEADER + 1024
        return response(200, b"ok", [(b"x-big", b"v" * size)])

    async with serve(keep_alive_handler(big)) as up:
        _, body = await fetch(transport, up.origin, req(target=b"/fits"))
        assert body == b"ok"
        with pytest.raises(ResponseTooLarge) as info:
            await transport.send(up.origin, req(target=b"/huge"), TIMEOUTS)
    assert info.value.request_sent
    assert info.value.kind == "response-header-too-large"


async def test_connect_refused(transport: Transport) -> None:
    with pytest.raises(ConnectError) as info:
        await transport.send(Origin("http", "127.0.0.1", refused_port()), req(), TIMEOUTS)
    assert not info.value.request_sent


async def test_connect_timeout(transport: Transport) -> None:
    timeouts = TransportTimeouts(connect=0.3, read=5.0, write=5.0)
    with blackhole_port() as port:
        started = time.monotonic()
        with pytest.raises(ConnectTimeout) as info:
            await transport.send(Origin("http", "127.0.0.1", port), req(), timeouts)
        elapsed = time.monotonic() - started
    assert not info.value.request_sent
    assert 0.25 < elapsed < 2.0


async def test_read_timeout_waiting_for_response(transport: Transport) -> None:
    async def silent(conn: RawConnection) -> None:
        await conn.read_request()
        await asyncio.sleep(30)  # a silent upstream (cancelled when the server stops)

    timeouts = TransportTimeouts(connect=2.0, read=0.3, write=5.0)
    async with serve(silent) as up:
        started = time.monotonic()
        with pytest.raises(ReadTimeout) as info:
            await transport.send(up.origin, req(), timeouts)
        elapsed = time.monotonic() - started
    assert info.value.request_sent
    assert 0.25 < elapsed < 2.0


async def test_read_timeout_in_the_body(transport: Transport) -> None:
    async def stalls(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await asyncio.sleep(30)  # the body stalls (cancelled when the server stops)

    timeouts = TransportTimeouts(connect=2.0, read=0.3, write=5.0)
    async with serve(stalls) as up:
        resp = await transport.send(up.origin, req(), timeouts)
        got = await anext(resp.body)
        with pytest.raises(ReadTimeout):
            await anext(resp.body)
        await resp.aclose()
    assert got == b"partial"


@pytest.mark.parametrize("streamed", [False, True], ids=["bytes", "stream"])
async def test_write_timeout(transport: Transport, streamed: bool) -> None:
    never_reads = asyncio.Event()

    async def handler(conn: RawConnection) -> None:
        await never_reads.wait()

    piece = b"w" * MiB
    body: bytes | AsyncIterator[bytes] = repeated(piece, 64) if streamed else piece * 64
    timeouts = TransportTimeouts(connect=2.0, read=5.0, write=0.3)
    async with serve(handler) as up:
        started = time.monotonic()
        with pytest.raises(WriteTimeout) as info:
            await transport.send(
                up.origin, req("POST", body=body, content_length=64 * MiB), timeouts
            )
        elapsed = time.monotonic() - started
    assert info.value.request_sent
    assert elapsed < 3.0


async def test_truncated_content_length_body(transport: Transport) -> None:
    async def truncates(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")
        await conn.close()

    async with serve(truncates) as up:
        resp = await transport.send(up.origin, req(), TIMEOUTS)
        with pytest.raises(RemoteProtocolError) as info:
            await read_all(resp)
    assert info.value.request_sent


async def test_truncated_chunked_body(transport: Transport) -> None:
    async def truncates(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel")
        await conn.close()

    async with serve(truncates) as up:
        resp = await transport.send(up.origin, req(), TIMEOUTS)
        with pytest.raises(RemoteProtocolError):
            await read_all(resp)


async def test_malformed_response(transport: Transport) -> None:
    async with serve(keep_alive_handler(lambda r: b"NOT HTTP AT ALL\r\n\r\n")) as up:
        with pytest.raises(RemoteProtocolError) as info:
            await transport.send(up.origin, req(), TIMEOUTS)
    assert info.value.request_sent


async def test_closed_without_response(transport: Transport) -> None:
    async def hangs_up(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.close()

    async with serve(hangs_up) as up:
        with pytest.raises(RemoteProtocolError) as info:
            await transport.send(up.origin, req(), TIMEOUTS)
    assert info.value.request_sent


# -- the keep-alive race ---------------------------------------------------------


def stale_after_first(
    then: Callable[[RawConnection], Awaitable[None]],
) -> Callable[[RawConnection], Awaitable[None]]:
    """Connection 0 answers one request, then acts as if its idle timer fired just as
    the next request arrived; later connections run `then`."""

    async def handler(conn: RawConnection) -> None:
        if conn.index == 0:
            await conn.read_request()
            await conn.send(response(200, b"first"))
            await conn.read_head()
            await conn.close()
        else:
            await then(conn)

    return handler


@pytest.mark.parametrize(
    ("method", "idempotent"),
    [("GET", None), ("PUT", None), ("POST", True)],
    ids=["GET", "PUT", "POST-opted-in"],
)
async def test_stale_keep_alive_connection_is_retried(
    transport: Transport, method: str, idempotent: bool | None
) -> None:
    async with serve(stale_after_first(keep_alive_handler(echo))) as up:
        _, first = await fetch(transport, up.origin, req())
        request = req(method, b"/again", b"payload")
        request.idempotent = idempotent
        _, second = await fetch(transport, up.origin, request)
    assert first == b"first"
    assert second == f"{method} /again 7".encode()
    assert up.accepts == 2
    assert [r.target for r in up.requests] == [b"/", b"/again", b"/again"]


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_sent_non_idempotent_request_is_not_resent(transport: Transport, method: str) -> None:
    # The upstream read the request before the connection died: it may have acted on it.
    async with serve(stale_after_first(keep_alive_handler(echo))) as up:
        await fetch(transport, up.origin, req())
        with pytest.raises(RemoteProtocolError) as info:
            await transport.send(up.origin, req(method, b"/once", b"payload"), TIMEOUTS)
    assert info.value.request_sent
    assert [r.target for r in up.requests] == [b"/", b"/once"]
    assert up.accepts == 1


async def test_retry_gate_decides_the_keep_alive_retry(transport: Transport) -> None:
    asked: list[bool] = []

    def gate() -> bool:
        asked.append(False)
        return False

    async with serve(stale_after_first(keep_alive_handler(echo))) as up:
        await fetch(transport, up.origin, req())
        request = req("GET", b"/gated")
        request.retry_gate = gate
        with pytest.raises(RemoteProtocolError) as info:
            await transport.send(up.origin, request, TIMEOUTS)
    assert info.value.request_sent
    assert asked == [False]
    assert [r.target for r in up.requests] == [b"/", b"/gated"]


async def test_resent_request_whose_connect_fails_is_reported_sent(transport: Transport) -> None:
    # The request went out on the dead connection, so the connect error is not "never sent".
    async def dies(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.send(response(200, b"first"))
        await conn.read_head()
        server = conn.upstream._server
        assert server is not None
        server.close()
        await conn.close()

    async with serve(dies) as up:
        await fetch(transport, up.origin, req())
        with pytest.raises(ConnectError) as info:
            await transport.send(up.origin, req("GET", b"/again"), TIMEOUTS)
    assert info.value.request_sent
    assert [r.target for r in up.requests] == [b"/", b"/again"]


async def test_retry_happens_at_most_once(transport: Transport) -> None:
    async def hangs_up(conn: RawConnection) -> None:
        await conn.read_head()
        await conn.close()

    async with serve(stale_after_first(hangs_up)) as up:
        await fetch(transport, up.origin, req())
        with pytest.raises(RemoteProtocolError) as info:
            await transport.send(up.origin, req("GET", b"/again"), TIMEOUTS)
    assert info.value.request_sent
    assert up.accepts == 2


async def test_streamed_body_is_not_retried_once_sent(transport: Transport) -> None:
    closed = asyncio.Event()

    async def handler(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.send(response(200, b"first"))
        await conn.read_head()
        await conn.reader.read(100)
        await conn.close()
        closed.set()

    async def body_cut_off_midway() -> AsyncIterator[bytes]:
        yield b"s" * 1024
        await asyncio.wait_for(closed.wait(), 5.0)  # the upstream hung up mid-body
        for _ in range(19):
            yield b"s" * 1024

    async with serve(handler) as up:
        await fetch(transport, up.origin, req())
        body = body_cut_off_midway()
        with pytest.raises(RemoteProtocolError) as info:
            await transport.send(up.origin, req("POST", b"/upload", body), TIMEOUTS)
    assert info.value.request_sent
    assert up.accepts == 1


# -- streaming with bounded memory -----------------------------------------------


async def test_large_response_streams_with_bounded_memory(transport: Transport) -> None:
    total = 64 * MiB

    async def handler(conn: RawConnection) -> None:
        while (r := await conn.read_request()) is not None:
            if r.target == b"/small":
                await conn.send(response(200, b"small"))
                continue
            await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
            await conn.send_stream(total, b"d" * 65536)

    async with serve(handler) as up:
        tracemalloc.start()
        try:
            resp = await transport.send(up.origin, req(), TIMEOUTS)
            received = 0
            async for chunk in resp.body:
                received += len(chunk)
            await resp.aclose()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        _, small = await fetch(transport, up.origin, req(target=b"/small"))
    assert received == total
    assert peak < 8 * MiB, f"peak traced memory {peak / MiB:.1f} MiB"
    assert small == b"small"
    assert up.accepts == 1


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_large_request_streams_with_bounded_memory(
    transport: Transport, declared: bool
) -> None:
    total = 64 * MiB

    async def handler(conn: RawConnection) -> None:
        while (r := await conn.read_request(keep_body=False)) is not None:
            await conn.send(response(200, b"%d" % r.body_size))

    piece = b"u" * (256 * 1024)
    async with serve(handler) as up:
        tracemalloc.start()
        try:
            request = req(
                "PUT",
                body=repeated(piece, total // len(piece)),
                content_length=total if declared else None,
            )
            _, body = await fetch(transport, up.origin, request)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert body == b"%d" % total
    assert up.requests[0].chunked is not declared
    assert peak < 8 * MiB, f"peak traced memory {peak / MiB:.1f} MiB"


# -- TLS -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: (server context, client context)."""
    workdir: Path = tmp_path_factory.mktemp("tls")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


async def test_https_origin(
    transport_factory: Callable[..., Transport], tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_ctx, client_ctx = tls_pair
    transport = transport_factory(ssl_context=client_ctx)
    try:
        async with RawUpstream(keep_alive_handler(echo), tls=server_ctx) as up:
            assert up.origin.scheme == "https"
            _, b1 = await fetch(transport, up.origin, req(target=b"/tls"))
            _, b2 = await fetch(transport, up.origin, req("POST", b"/tls", b"x" * 200_000))
        assert (b1, b2) == (b"GET /tls 0", b"POST /tls 200000")
        assert up.accepts == 1
        assert up.errors == []
    finally:
        await transport.aclose()


async def test_https_rejects_untrusted_certificate(
    transport_factory: Callable[..., Transport], tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_ctx, _ = tls_pair
    transport = transport_factory()  # the default context does not trust the test certificate
    try:
        async with RawUpstream(keep_alive_handler(echo), tls=server_ctx) as up:
            with pytest.raises(ConnectError):
                await transport.send(up.origin, req(), TIMEOUTS)
    finally:
        await transport.aclose()
