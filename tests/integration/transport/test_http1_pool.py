"""Behaviour specific to `Http1Transport`'s pool, beyond the shared conformance suite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from portcullis.upstream.http1 import Http1Transport
from portcullis.upstream.transport import (
    ConnectError,
    RemoteProtocolError,
    ResponseTooLarge,
    TransportTimeouts,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
)
from support.raw_upstream import (
    Handler,
    RawConnection,
    RawUpstream,
    ReceivedRequest,
    keep_alive_handler,
    response,
)
from support.threaded_upstream import eventually

TIMEOUTS = TransportTimeouts(connect=2.0, read=5.0, write=5.0)
HOST = (b"host", b"upstream.test")
MiB = 1024 * 1024


def req(
    method: str = "GET",
    target: bytes = b"/",
    body: bytes | AsyncIterator[bytes] = b"",
    content_length: int | None = None,
) -> UpstreamRequest:
    return UpstreamRequest(method, target, [HOST], body, content_length)


async def read_all(resp: UpstreamResponse) -> bytes:
    try:
        return b"".join([chunk async for chunk in resp.body])
    finally:
        await resp.aclose()


async def fetch(pool: Http1Transport, up: RawUpstream, request: UpstreamRequest) -> bytes:
    return await read_all(await pool.send(up.origin, request, TIMEOUTS))


def index_handler(delays: dict[int, float] | None = None) -> Handler:
    """Answer each request with the index of the connection it came on."""

    async def handle(conn: RawConnection) -> None:
        while await conn.read_request() is not None:
            await asyncio.sleep((delays or {}).get(conn.index, 0.0))
            await conn.send(response(200, b"%d" % conn.index))

    return handle


async def test_idle_connection_expires_before_reuse() -> None:
    pool = Http1Transport(idle_timeout=0.2)
    try:
        async with RawUpstream(index_handler()) as up:
            assert await fetch(pool, up, req()) == b"0"
            assert pool.idle_count(up.origin) == 1
            await asyncio.sleep(0.4)  # idle for twice the idle timeout: the behaviour under test
            assert pool.idle_count(up.origin) == 0
            assert sorted(up.peer_closed) == [0]
            assert await fetch(pool, up, req()) == b"1"
    finally:
        await pool.aclose()


async def test_idle_expiry_is_checked_when_popping() -> None:
    # A large idle_timeout for the sweeper's schedule, then shrink it: only the pop check acts.
    pool = Http1Transport(idle_timeout=60.0)
    try:
        async with RawUpstream(index_handler()) as up:
            assert await fetch(pool, up, req()) == b"0"
            pool.idle_timeout = 0.05
            await asyncio.sleep(0.1)  # idle past the (shrunk) timeout: the behaviour under test
            assert await fetch(pool, up, req()) == b"1"
            assert up.accepts == 2
    finally:
        await pool.aclose()


async def test_idle_stack_is_lifo() -> None:
    pool = Http1Transport()
    try:
        # Connection 0 answers first, so it goes back to the pool first; 1 is the newest.
        async with RawUpstream(index_handler({0: 0.0, 1: 0.2})) as up:
            first, second = await asyncio.gather(fetch(pool, up, req()), fetch(pool, up, req()))
            assert sorted([first, second]) == [b"0", b"1"]
            assert await fetch(pool, up, req()) == b"1"
            assert await fetch(pool, up, req()) == b"1"
    finally:
        await pool.aclose()


async def test_max_idle_per_origin_closes_the_oldest() -> None:
    pool = Http1Transport(max_idle_per_origin=1)
    try:
        async with RawUpstream(index_handler({0: 0.0, 1: 0.2})) as up:
            await asyncio.gather(fetch(pool, up, req()), fetch(pool, up, req()))
            assert pool.idle_count(up.origin) == 1
            await eventually(lambda: up.peer_closed)  # the pool's close reached the upstream
            assert sorted(up.peer_closed) == [0]
            assert await fetch(pool, up, req()) == b"1"
    finally:
        await pool.aclose()


async def test_fresh_connection_closed_without_response_is_not_retried() -> None:
    async def hangs_up(conn: RawConnection) -> None:
        await conn.read_head()
        await conn.close()

    pool = Http1Transport()
    try:
        async with RawUpstream(hangs_up) as up:
            with pytest.raises(RemoteProtocolError):
                await pool.send(up.origin, req(), TIMEOUTS)
            assert up.accepts == 1
    finally:
        await pool.aclose()


async def test_head_size_limit_counts_all_headers() -> None:
    headers = [(b"x-h%d" % i, b"v" * 100) for i in range(200)]  # ~21 KiB, no header > 1 KiB
    pool = Http1Transport(max_header_bytes=16 * 1024)
    try:
        async with RawUpstream(keep_alive_handler(lambda r: response(200, b"", headers))) as up:
            with pytest.raises(ResponseTooLarge):
                await pool.send(up.origin, req(), TIMEOUTS)
    finally:
        await pool.aclose()


async def test_bytes_after_a_complete_response_drop_the_connection() -> None:
    def with_garbage(r: ReceivedRequest) -> bytes:
        return response(200, b"fine") + b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"

    pool = Http1Transport()
    try:
        async with RawUpstream(keep_alive_handler(with_garbage)) as up:
            assert await fetch(pool, up, req()) == b"fine"
            assert await fetch(pool, up, req()) == b"fine"
            assert up.accepts == 2
    finally:
        await pool.aclose()


async def test_head_response_followed_by_body_bytes_drops_the_connection() -> None:
    def bad_head(r: ReceivedRequest) -> bytes:
        return b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody"

    pool = Http1Transport()
    try:
        async with RawUpstream(keep_alive_handler(bad_head)) as up:
            resp = await pool.send(up.origin, req("HEAD"), TIMEOUTS)
            assert (resp.status, await read_all(resp)) == (200, b"")
            await pool.send(up.origin, req("HEAD"), TIMEOUTS)
            assert up.accepts == 2
    finally:
        await pool.aclose()


@pytest.mark.parametrize("streamed", [False, True], ids=["bytes", "stream"])
async def test_early_response_stops_the_upload(streamed: bool) -> None:
    async def rejects(conn: RawConnection) -> None:
        if conn.index == 0:
            await conn.read_head()
            await conn.send(response(413, b"too big"))
            await asyncio.sleep(30)
        else:
            await keep_alive_handler(lambda r: response(200, b"next"))(conn)

    async def big() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield bytes(MiB)

    body: bytes | AsyncIterator[bytes] = big() if streamed else bytes(64 * MiB)
    pool = Http1Transport()
    try:
        async with RawUpstream(rejects) as up:
            resp = await pool.send(
                up.origin, req("POST", body=body, content_length=64 * MiB), TIMEOUTS
            )
            assert (resp.status, await read_all(resp)) == (413, b"too big")
            assert await fetch(pool, up, req()) == b"next"
            assert up.accepts == 2
    finally:
        await pool.aclose()


@pytest.mark.parametrize(("declared", "parts"), [(5, [b"abc"]), (2, [b"abc"])])
async def test_declared_length_must_match_the_stream(declared: int, parts: list[bytes]) -> None:
    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    pool = Http1Transport()
    try:
        async with RawUpstream(keep_alive_handler(lambda r: response(200))) as up:
            with pytest.raises(UpstreamError) as info:
                await pool.send(
                    up.origin, req("POST", body=body(), content_length=declared), TIMEOUTS
                )
            assert info.value.request_sent
    finally:
        await pool.aclose()


async def test_switching_protocols_is_a_protocol_error() -> None:
    raw = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
    pool = Http1Transport()
    try:
        async with RawUpstream(keep_alive_handler(lambda r: raw)) as up:
            with pytest.raises(RemoteProtocolError):
                await pool.send(up.origin, req(), TIMEOUTS)
    finally:
        await pool.aclose()


async def test_unlisted_method_goes_on_the_wire() -> None:
    pool = Http1Transport()
    try:
        async with RawUpstream(keep_alive_handler(lambda r: response(207, b"multi"))) as up:
            resp = await pool.send(up.origin, req("PROPFIND", b"/dav"), TIMEOUTS)
            assert (resp.status, await read_all(resp)) == (207, b"multi")
            assert up.requests[0].raw_head.startswith(b"PROPFIND /dav HTTP/1.1\r\n")
    finally:
        await pool.aclose()


async def test_aclose_closes_connections_in_use_and_refuses_new_sends() -> None:
    async def endless(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (64 * MiB))
        await conn.send_stream(64 * MiB, bytes(65536))

    pool = Http1Transport()
    async with RawUpstream(endless) as up:
        resp = await pool.send(up.origin, req(), TIMEOUTS)
        assert await anext(resp.body)
        await pool.aclose()
        with pytest.raises(RemoteProtocolError):
            async for _ in resp.body:
                pass
        await resp.aclose()
        with pytest.raises(ConnectError):
            await pool.send(up.origin, req(), TIMEOUTS)
