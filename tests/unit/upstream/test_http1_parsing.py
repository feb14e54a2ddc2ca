"""Pure parts of the HTTP/1.1 pool: request heads, framing rules, and response parsing
driven byte by byte through a connection on a fake transport (no sockets)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portcullis.upstream.http1 import (
    Http1Transport,
    _Connection,
    body_ends_at_eof,
    build_request_head,
    head_keep_alive,
)
from portcullis.upstream.transport import (
    Origin,
    RemoteProtocolError,
    ResponseTooLarge,
    TransportTimeouts,
    UpstreamRequest,
)

ORIGIN = Origin("http", "backend", 8080)
TIMEOUTS = TransportTimeouts(connect=1.0, read=1.0, write=1.0)

# -- build_request_head ----------------------------------------------------------


def test_head_with_content_length_replaces_given_framing() -> None:
    head = build_request_head(
        "POST",
        b"/p?q=1",
        [
            (b"host", b"b"),
            (b"Content-Length", b"999"),
            (b"x", b"1"),
            (b"TRANSFER-ENCODING", b"gzip"),
        ],
        12,
        chunked=False,
    )
    assert head == b"POST /p?q=1 HTTP/1.1\r\nhost: b\r\nx: 1\r\ncontent-length: 12\r\n\r\n"


def test_head_chunked() -> None:
    head = build_request_head("PUT", b"/", [(b"host", b"b")], None, chunked=True)
    assert head == b"PUT / HTTP/1.1\r\nhost: b\r\ntransfer-encoding: chunked\r\n\r\n"


def test_head_without_body_has_no_framing() -> None:
    head = build_request_head(
        "GET", b"/", [(b"host", b"b"), (b"content-length", b"0")], None, False
    )
    assert head == b"GET / HTTP/1.1\r\nhost: b\r\n\r\n"


def test_head_keeps_header_order_case_and_duplicates() -> None:
    headers = [(b"host", b"b"), (b"X-A", b"1"), (b"x-b", b"2"), (b"X-A", b"3")]
    head = build_request_head("REPORT", b"/r", headers, None, False)
    assert head == b"REPORT /r HTTP/1.1\r\nhost: b\r\nX-A: 1\r\nx-b: 2\r\nX-A: 3\r\n\r\n"


def test_header_named_like_framing_but_longer_is_kept() -> None:
    head = build_request_head("GET", b"/", [(b"content-lengthy", b"1")], None, False)
    assert b"content-lengthy: 1\r\n" in head


# -- framing rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], True),
        ([(b"content-type", b"text/plain")], True),
        ([(b"content-length", b"5")], False),
        ([(b"transfer-encoding", b"chunked")], False),
        ([(b"transfer-encoding", b"gzip, Chunked ")], False),
        ([(b"transfer-encoding", b"gzip")], True),
    ],
)
def test_body_ends_at_eof(headers: list[tuple[bytes, bytes]], expected: bool) -> None:
    assert body_ends_at_eof(headers) is expected


@pytest.mark.parametrize(
    ("version", "headers", "expected"),
    [
        ("1.1", [], True),
        ("1.1", [(b"connection", b"close")], False),
        ("1.1", [(b"connection", b"Upgrade, CLOSE")], False),
        ("1.1", [(b"connection", b"keep-alive")], True),
        ("1.0", [], False),
        ("1.0", [(b"connection", b"Keep-Alive")], True),
        ("1.0", [(b"connection", b"keep-alive"), (b"connection", b"close")], False),
        ("0.9", [(b"connection", b"keep-alive")], False),
    ],
)
def test_head_keep_alive(version: str, headers: list[tuple[bytes, bytes]], expected: bool) -> None:
    assert head_keep_alive(version, headers) is expected


# -- response parsing on a fake transport ----------------------------------------


@dataclass
class FakeTransport:
    """Just enough of `asyncio.Transport` for a `_Connection` that is fed by hand."""

    written: list[bytes] = field(default_factory=list)
    paused: bool = False
    closed: bool = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.written.append(b"".join(parts))

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def abort(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True


@dataclass
class Outcome:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    pooled: bool
    sent: bytes


async def run_exchange(parts: list[bytes], *, method: str = "GET", eof: bool = False) -> Outcome:
    """Feed `parts` to a connection as the response to one request, then read it all."""
    pool = Http1Transport(max_header_bytes=4096)
    conn = _Connection(pool, ORIGIN, asyncio.get_running_loop())
    fake = FakeTransport()
    conn.connection_made(fake)  # type: ignore[arg-type]
    request = UpstreamRequest(method, b"/x", [(b"host", b"backend")])
    exchange = asyncio.create_task(conn.exchange(request, TIMEOUTS))
    await asyncio.sleep(0)
    for part in parts:
        conn.data_received(part)
    if eof:
        conn.connection_lost(None)
    try:
        await exchange
    except BaseException:
        await pool.aclose()
        raise
    resp = conn.response()
    body = b""
    try:
        async for chunk in resp.body:
            body += chunk
    finally:
        await resp.aclose()
    pooled = pool.idle_count(ORIGIN) == 1
    await pool.aclose()
    return Outcome(resp.status, resp.headers, body, pooled, b"".join(fake.written))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, i = b"", 0
    for size in sizes:
        piece = body[i : i + size]
        if not piece:
            break
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
        i += len(piece)
    if i < len(body):
        out += b"%x\r\n%s\r\n" % (len(body) - i, body[i:])
    return out + b"0\r\n\r\n"


bodies = st.binary(max_size=300)
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)


@settings(max_examples=150, deadline=None)
@given(body=bodies, cut=cuts, interim=st.booleans())
def test_content_length_response_any_split(body: bytes, cut: list[int], interim: bool) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-A: b\r\n\r\n%s" % (len(body), body)
    if interim:
        raw = b"HTTP/1.1 100 Continue\r\n\r\n" + raw
    out = asyncio.run(run_exchange(split(raw, cut)))
    assert (out.status, out.body, out.pooled) == (200, body, True)
    assert out.headers == [(b"content-length", b"%d" % len(body)), (b"x-a", b"b")]


@settings(max_examples=150, deadline=None)
@given(body=bodies, cut=cuts, sizes=st.lists(st.integers(min_value=1, max_value=64), max_size=8))
def test_chunked_response_any_split(body: bytes, cut: list[int], sizes: list[int]) -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, sizes)
    out = asyncio.run(run_exchange(split(raw, cut)))
    assert (out.status, out.body, out.pooled) == (200, body, True)


@settings(max_examples=100, deadline=None)
@given(body=bodies, cut=cuts)
def test_eof_delimited_response_any_split(body: bytes, cut: list[int]) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: x/y\r\n\r\n" + body
    out = asyncio.run(run_exchange(split(raw, cut), eof=True))
    assert (out.status, out.body, out.pooled) == (200, body, False)


def test_request_goes_out_in_one_write() -> None:
    out = asyncio.run(run_exchange([b"HTTP/1.1 204 No Content\r\n\r\n"]))
    assert out.sent == b"GET /x HTTP/1.1\r\nhost: backend\r\n\r\n"
    assert (out.status, out.body, out.pooled) == (204, b"", True)


def test_head_response_ignores_declared_length() -> None:
    out = asyncio.run(
        run_exchange([b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n"], method="HEAD")
    )
    assert (out.status, out.body, out.pooled) == (200, b"", True)


def test_connection_close_response_is_not_pooled() -> None:
    out = asyncio.run(
        run_exchange([b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"])
    )
    assert (out.body, out.pooled) == (b"ok", False)


def test_oversized_head_fails_before_it_completes() -> None:
    parts = [b"HTTP/1.1 200 OK\r\n"] + [b"x-pad: " + b"p" * 100 + b"\r\n"] * 50
    with pytest.raises(ResponseTooLarge):
        asyncio.run(run_exchange(parts))


def test_eof_inside_the_head_is_a_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        asyncio.run(run_exchange([b"HTTP/1.1 200 OK\r\ncontent-le"], eof=True))


def test_eof_inside_a_content_length_body_is_a_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        asyncio.run(run_exchange([b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc"], eof=True))


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx: a\x00b\r\n\r\n",
        b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok",
    ],
    ids=["cl-and-te", "differing-cl", "negative-cl", "nul-in-value", "bare-lf"],
)
def test_ambiguous_framing_is_rejected(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        asyncio.run(run_exchange([raw]))
