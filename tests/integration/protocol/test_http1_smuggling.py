"""HTTP/1.1 request smuggling and framing over raw client sockets (RFC 9112 §2-§7).

Every ambiguous or malformed message is answered 400 and the connection is closed
(standards.md "HTTP proxying": smuggling → 400 and close), and the recording
upstream proves what got through: never a second (smuggled) request, never a
complete request built from a malformed one.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from protocol_support import assert_nothing_complete_reached, settle

from support.raw_client import RawClient, exchange, one_response
from support.recording_upstream import RecordingUpstream
from support.servers import Gateway

HOST = b"Host: gw.test\r\n"


def post(token: bytes, *lines: bytes) -> bytes:
    return b"POST /rec/" + token + b" HTTP/1.1\r\n" + HOST + b"".join(lines)


# Each case: a message whose framing or header syntax is ambiguous or invalid.
SMUGGLING: dict[str, Callable[[bytes], bytes]] = {
    # RFC 9112 §6.3 (5): differing Content-Length values → unrecoverable error.
    "duplicate-differing-content-length": lambda t: post(
        t, b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"
    ),
    "content-length-list-differing": lambda t: post(t, b"Content-Length: 3, 5\r\n\r\nabcde"),
    "content-length-negative": lambda t: post(t, b"Content-Length: -1\r\n\r\n"),
    "content-length-plus-sign": lambda t: post(t, b"Content-Length: +3\r\n\r\nabc"),
    "content-length-hex": lambda t: post(t, b"Content-Length: 0x3\r\n\r\nabc"),
    # RFC 9112 §6.3 (4): a request whose final coding is not chunked → 400 and close.
    "te-not-ending-in-chunked": lambda t: post(
        t, b"Transfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "te-gzip-only": lambda t: post(t, b"Transfer-Encoding: gzip\r\n\r\nabc"),
    "te-unknown-token": lambda t: post(
        t, b"Transfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "te-second-header-identity": lambda t: post(
        t,
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ),
    "te-on-http-1.0": lambda t: (
        b"POST /rec/%s HTTP/1.0\r\n%sTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        % (t, HOST)
    ),
    # RFC 9112 §5.2: obs-fold in a request → 400.
    "obs-fold-space": lambda t: post(t, b"X-A: one\r\n two\r\nContent-Length: 0\r\n\r\n"),
    "obs-fold-tab": lambda t: post(t, b"X-A: one\r\n\ttwo\r\nContent-Length: 0\r\n\r\n"),
    "obs-fold-transfer-encoding": lambda t: post(
        t, b"Transfer-Encoding:\r\n chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    # RFC 9112 §2.2: a bare CR outside the line terminator → reject.
    "bare-cr-in-header": lambda t: post(t, b"X-A: 1\rX-B: 2\r\nContent-Length: 0\r\n\r\n"),
    # RFC 9112 §5.1: whitespace between field name and colon → 400.
    "space-before-colon": lambda t: post(t, b"X-A : 1\r\nContent-Length: 0\r\n\r\n"),
    "space-before-colon-content-length": lambda t: post(t, b"Content-Length : 3\r\n\r\nabc"),
    "space-before-colon-transfer-encoding": lambda t: post(
        t, b"Transfer-Encoding : chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "tab-before-colon": lambda t: post(t, b"Content-Length\t: 3\r\n\r\nabc"),
    # RFC 9112 §2.2: whitespace before the first field line → reject.
    "leading-whitespace-first-line": lambda t: (
        b"POST /rec/" + t + b" HTTP/1.1\r\n X-A: 1\r\n" + HOST + b"Content-Length: 0\r\n\r\n"
    ),
    "nul-in-header-value": lambda t: post(t, b"X-A: a\x00b\r\nContent-Length: 0\r\n\r\n"),
    "empty-header-name": lambda t: post(t, b": v\r\nContent-Length: 0\r\n\r\n"),
    "space-in-request-target": lambda t: b"GET /rec/" + t + b" x HTTP/1.1\r\n" + HOST + b"\r\n",
    # RFC 9112 §7.1: chunk-size is 1*HEXDIG; anything else is a framing error (issue item 8).
    "chunk-size-negative": lambda t: post(
        t, b"Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n"
    ),
    "chunk-size-not-hex": lambda t: post(
        t, b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    ),
    "chunk-size-overflow": lambda t: post(
        t, b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff3\r\nabc\r\n0\r\n\r\n"
    ),
    "chunk-size-0x-prefix": lambda t: post(
        t, b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n"
    ),
    "chunk-size-plus-sign": lambda t: post(
        t, b"Transfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n"
    ),
    "chunk-extension-oversized": lambda t: post(
        t, b"Transfer-Encoding: chunked\r\n\r\n3;" + b"x" * 100_000 + b"\r\nabc\r\n0\r\n\r\n"
    ),
    "chunk-data-without-crlf": lambda t: post(
        t, b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n"
    ),
    "chunk-size-line-bare-lf": lambda t: post(
        t, b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("case", list(SMUGGLING))
def test_ambiguous_or_malformed_request_is_refused_and_the_connection_closed(
    gw: Gateway, up: RecordingUpstream, token: bytes, case: str
) -> None:
    resp, closed = exchange(gw.proxy_port, SMUGGLING[case](token))
    assert resp.status == 400, resp.raw_head
    assert closed, "the connection stayed open after a 400 for a malformed message"
    settle(gw, up)
    assert_nothing_complete_reached(up, token)
    assert up.seen(token + b"/smuggled") == []


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n",
    ],
    ids=["content-length-first", "chunked-first"],
)
def test_content_length_with_chunked_never_smuggles(
    gw: Gateway, up: RecordingUpstream, token: bytes, framing: bytes
) -> None:
    # RFC 9112 §6.1: a server MAY reject a message with both framings or process it by
    # Transfer-Encoding alone; either way it MUST close the connection afterwards.
    # (standards.md asks for 400, but granian drops the Content-Length before the
    # application sees the request, so the gateway cannot tell; it gets the RFC's
    # other choice, which is just as safe.) Nothing after the chunked body may be
    # taken as a request, and the upstream never sees both framings.
    smuggled = b"GET /rec/" + token + b"/smuggled HTTP/1.1\r\n" + HOST + b"\r\n"
    resp, closed = exchange(gw.proxy_port, post(token, framing, b"0\r\n\r\n" + smuggled))
    assert resp.status in (200, 400), resp.raw_head
    assert closed, "the connection stayed open after a message with both framings"
    settle(gw, up)
    assert up.seen(token + b"/smuggled") == []
    for seen in up.seen(token):
        framings = [n for n, _ in seen.headers if n in (b"content-length", b"transfer-encoding")]
        assert len(framings) <= 1, seen.raw_head
        assert seen.body == b""


HOST_CASES: dict[str, Callable[[bytes], bytes]] = {
    "duplicate-host": lambda t: (
        b"GET /rec/" + t + b" HTTP/1.1\r\nHost: gw.test\r\nHost: other.test\r\n\r\n"
    ),
    "duplicate-host-same-value": lambda t: (
        b"GET /rec/" + t + b" HTTP/1.1\r\nHost: gw.test\r\nHost: gw.test\r\n\r\n"
    ),
    "missing-host": lambda t: b"GET /rec/" + t + b" HTTP/1.1\r\n\r\n",
    "empty-host": lambda t: b"GET /rec/" + t + b" HTTP/1.1\r\nHost:\r\n\r\n",
    "invalid-host": lambda t: b"GET /rec/" + t + b" HTTP/1.1\r\nHost: a b/c\r\n\r\n",
    "host-with-userinfo": lambda t: b"GET /rec/" + t + b" HTTP/1.1\r\nHost: u@gw.test\r\n\r\n",
}


@pytest.mark.parametrize("case", list(HOST_CASES))
def test_host_that_is_not_exactly_one_valid_authority_is_400(
    gw: Gateway, up: RecordingUpstream, token: bytes, case: str
) -> None:
    # RFC 9112 §3.2 (issue item 5): a missing Host, more than one, or an invalid one → 400.
    # (granian turns a missing Host into an empty one, so both read as missing.)
    resp = one_response(gw.proxy_port, HOST_CASES[case](token))
    assert resp.status == 400, resp.raw_head
    assert resp.header(b"content-type") == b"application/problem+json"
    settle(gw, up)
    assert up.seen(token) == []


def test_pipelined_request_behind_a_refused_one_is_never_processed(
    gw: Gateway, up: RecordingUpstream, token: bytes
) -> None:
    # After a framing error the rest of the stream cannot be trusted (RFC 9112 §9.3.2).
    bad = post(token, b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde")
    follow = b"GET /rec/" + token + b"/smuggled HTTP/1.1\r\n" + HOST + b"\r\n"
    with RawClient(gw.proxy_port) as client:
        client.send(bad + follow)
        assert client.read_response().status == 400
        assert client.closed_by_peer()
    settle(gw, up)
    assert up.seen(token) == []


def test_a_request_inside_a_body_stays_body(
    gw: Gateway, up: RecordingUpstream, token: bytes
) -> None:
    inner = b"GET /rec/" + token + b"/smuggled HTTP/1.1\r\n" + HOST + b"\r\n"
    raw = post(token, b"Content-Length: %d\r\n\r\n" % len(inner), inner)
    with RawClient(gw.proxy_port) as client:
        client.send(raw)
        assert client.read_response().status == 200
    settle(gw, up)
    (seen,) = up.seen(token)
    assert seen.target == b"/rec/" + token
    assert seen.body == inner
    assert seen.header(b"content-length") == b"%d" % len(inner)


def test_chunked_body_is_forwarded_exactly(
    gw: Gateway, up: RecordingUpstream, token: bytes
) -> None:
    raw = post(
        token,
        b"Transfer-Encoding: chunked\r\n\r\n",
        b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: 1\r\n\r\n",
    )
    with RawClient(gw.proxy_port) as client:
        client.send(raw)
        assert client.read_response().status == 200
    settle(gw, up)
    (seen,) = up.seen(token)
    assert seen.complete
    assert seen.body == b"hello world"
    # One framing only: chunked or a length, never both.
    framing = [n for n, _ in seen.headers if n in (b"content-length", b"transfer-encoding")]
    assert len(framing) == 1, seen.raw_head


def test_identical_duplicate_content_length_is_one_length(
    gw: Gateway, up: RecordingUpstream, token: bytes
) -> None:
    # RFC 9110 §8.6: identical values may be accepted as one; the upstream sees one.
    raw = post(token, b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc")
    with RawClient(gw.proxy_port) as client:
        client.send(raw)
        status = client.read_response().status
    settle(gw, up)
    if status == 400:
        assert_nothing_complete_reached(up, token)
        return
    assert status == 200
    (seen,) = up.seen(token)
    assert seen.body == b"abc"
    assert [v for n, v in seen.headers if n == b"content-length"] == [b"3"]


def test_transfer_coding_before_chunked_is_not_dropped(
    gw: Gateway, up: RecordingUpstream, token: bytes
) -> None:
    # Issue item 8: `gzip, chunked` must not reach the upstream as a plain body. Either
    # refused (501, RFC 9112 §6.1: a coding the server does not understand) or
    # forwarded with the gzip coding still declared.
    raw = post(token, b"Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    with RawClient(gw.proxy_port) as client:
        client.send(raw)
        status = client.read_response().status
    settle(gw, up)
    if status in (400, 501):
        assert_nothing_complete_reached(up, token)
        return
    (seen,) = up.seen(token)
    te = (seen.header(b"transfer-encoding") or b"").lower()
    assert b"gzip" in te, f"gzip coding dropped: {seen.raw_head!r}"


def test_bare_lf_line_ends_never_reach_the_upstream(
    gw: Gateway, up: RecordingUpstream, token: bytes
) -> None:
    # RFC 9112 §2.2 lets a recipient accept a bare LF as a line end; then it must be
    # one for everybody: the upstream gets separate CRLF-terminated fields.
    raw = b"GET /rec/" + token + b" HTTP/1.1\nHost: gw.test\nX-A: 1\nX-B: 2\n\n"
    with RawClient(gw.proxy_port) as client:
        client.send(raw)
        status = client.read_response().status
    settle(gw, up)
    if status == 400:
        assert up.seen(token) == []
        return
    assert status == 200
    (seen,) = up.seen(token)
    assert b"\n" not in seen.raw_head.replace(b"\r\n", b"")
    assert seen.header(b"x-a") == b"1"
    assert seen.header(b"x-b") == b"2"
