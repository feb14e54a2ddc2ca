"""HTTP/1.1 forwarding over raw client sockets: what exactly reaches the upstream, and
what exactly comes back (RFC 9110 §7.6, RFC 9112, RFC 7239, standards.md "HTTP proxying").

Hop-by-hop fields stripped both ways; one Host; Via and X-Forwarded-*/Forwarded set
from the connection, not from what an untrusted client claims; pipelined requests
answered in order; HEAD, 204 and 304 answered without a body, and stray upstream
bytes never becoming the next response; size limits answered 431, 414 and 413.
"""

from __future__ import annotations

import contextlib
import json

import pytest
from protocol_support import MAX_REQUEST_BODY, assert_nothing_complete_reached, settle

from support.raw_client import RawClient, one_response
from support.raw_upstream import ReceivedRequest, response
from support.recording_upstream import RecordingUpstream, default_response
from support.servers import Gateway

HOST = b"Host: gw.test\r\n"
HOP_BY_HOP = (
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"transfer-encoding",
    b"upgrade",
    b"proxy-authorization",
    b"proxy-authenticate",
    b"trailer",
)


def get(token: bytes, suffix: bytes = b"", *lines: bytes, method: bytes = b"GET") -> bytes:
    return method + b" /rec/" + token + suffix + b" HTTP/1.1\r\n" + HOST + b"".join(lines) + b"\r\n"


def names(req: ReceivedRequest) -> list[bytes]:
    return [n for n, _ in req.headers]


def values(req: ReceivedRequest, name: bytes) -> list[bytes]:
    return [v for n, v in req.headers if n == name]


# ----------------------------------------------------------------------------- request side


def test_hop_by_hop_request_fields_never_reach_the_upstream(
    gw: Gateway, up: RecordingUpstream, token: bytes
) -> None:
    raw = get(
        token,
        b"",
        b"Connection: keep-alive, X-Conn-Named\r\n",
        b"Connection: x-second-named\r\n",
        b"X-Conn-Named: secret\r\n",
        b"X-Second-Named: secret\r\n",
        b"Keep-Alive: timeout=5\r\n",
        b"Proxy-Connection: keep-alive\r\n",
        b"TE: trailers\r\n",
        b"Upgrade: example/1\r\n",
        b"Proxy-Authorization: Basic dXNlcjpwYXNz\r\n",
        b"X-Kept: yes\r\n",
    )
    resp = one_response(gw.proxy_port, raw)
    assert resp.status == 200
    settle(gw, up)
    (seen,) = up.seen(token)
    leaked = [n for n in names(seen) if n in HOP_BY_HOP or (n.startswith(b"x-") and b"named" in n)]
    assert leaked == [], seen.raw_head
    assert values(seen, b"x-kept") == [b"yes"]


def test_upstream_gets_one_host_and_forwarding_fields_from_the_connection(
    gw: Gateway, up: RecordingUpstream, token: bytes
) -> None:
    # The client is not a trusted proxy: what it claims about forwarding is replaced.
    raw = get(
        token,
        b"",
        b"X-Forwarded-For: 203.0.113.9\r\n",
        b"X-Forwarded-Host: evil.test\r\n",
        b"X-Forwarded-Proto: https\r\n",
        b"X-Forwarded-Port: 1\r\n",
        b"Forwarded: for=203.0.113.9;host=evil.test;proto=https\r\n",
        b"Via: 1.0 fred\r\n",
    )
    resp = one_response(gw.proxy_port, raw)
    assert resp.status == 200
    assert resp.header_list(b"via") == [b"1.1 portcullis"]
    assert resp.header(b"x-request-id")
    settle(gw, up)
    (seen,) = up.seen(token)
    assert values(seen, b"host") == [b"127.0.0.1:%d" % up.port]
    assert values(seen, b"x-forwarded-for") == [b"127.0.0.1"]
    assert values(seen, b"x-forwarded-proto") == [b"http"]
    assert values(seen, b"x-forwarded-host") == [b"gw.test"]
    assert values(seen, b"x-forwarded-port") == [b"%d" % gw.proxy_port]
    assert values(seen, b"forwarded") == [b'for=127.0.0.1;proto=http;host="gw.test"']
    # RFC 9110 §7.6.3: a proxy appends itself to Via.
    assert values(seen, b"via") == [b"1.0 fred, 1.1 portcullis"]
    assert len(values(seen, b"x-request-id")) == 1
    assert len(values(seen, b"traceparent")) == 1
    assert seen.version == b"HTTP/1.1"
    assert seen.target == b"/rec/" + token


def test_hop_by_hop_response_fields_never_reach_the_client(
    gw: Gateway, up: RecordingUpstream, token: bytes
) -> None:
    up.respond = lambda req: response(
        200,
        b"ok",
        [
            (b"Connection", b"X-Secret"),
            (b"X-Secret", b"internal"),
            (b"Keep-Alive", b"timeout=1"),
            (b"Proxy-Authenticate", b"Basic"),
            (b"Upgrade", b"example/1"),
            (b"X-Public", b"yes"),
            (b"Via", b"1.1 origin"),
        ],
    )
    resp = one_response(gw.proxy_port, get(token))
    assert resp.status == 200
    assert resp.body == b"ok"
    got = [n for n, _ in resp.headers]
    leaked = [
        n for n in got if n in (b"x-secret", b"keep-alive", b"proxy-authenticate", b"upgrade")
    ]
    assert leaked == [], resp.raw_head
    assert all(b"secret" not in v.lower() for v in resp.header_list(b"connection"))
    assert resp.header_list(b"x-public") == [b"yes"]
    assert resp.header_list(b"via") == [b"1.1 origin, 1.1 portcullis"]


# ----------------------------------------------------------------------------- pipelining


def test_pipelined_requests_are_answered_in_order(
    gw: Gateway, up: RecordingUpstream, token: bytes
) -> None:
    burst = (
        get(token, b"/1")
        + b"POST /rec/" + token + b"/2 HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\nabc"
        + get(token, b"/3", method=b"HEAD")
        + get(token, b"/4")
    )  # fmt: skip
    with RawClient(gw.proxy_port) as client:
        client.send(burst)
        first = client.read_response()
        second = client.read_response()
        third = client.read_response(head=True)
        fourth = client.read_response()
        assert client.leftover == b""
    assert first.body == b"seen GET /rec/" + token + b"/1"
    assert second.body == b"seen POST /rec/" + token + b"/2"
    assert third.status == 200
    assert third.header(b"content-length") == b"%d" % len(b"seen HEAD /rec/" + token + b"/3")
    assert fourth.body == b"seen GET /rec/" + token + b"/4"
    settle(gw, up)
    seen = up.seen(token)
    assert [r.target for r in seen] == [b"/rec/" + token + b"/%d" % i for i in (1, 2, 3, 4)]
    assert [r.body for r in seen] == [b"", b"abc", b"", b""]


# ----------------------------------------------------------------------------- no-body responses


def _status_by_path(req: ReceivedRequest) -> bytes:
    if req.target.endswith(b"/204"):
        return response(204, length=False)
    if req.target.endswith(b"/304"):
        return response(304, headers=[(b"etag", b'"v1"'), (b"content-length", b"50")], length=False)
    return default_response(req)


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_status_is_relayed_without_a_body(
    gw: Gateway, up: RecordingUpstream, token: bytes, status: int
) -> None:
    up.respond = _status_by_path
    with RawClient(gw.proxy_port) as client:
        client.send(get(token, b"/%d" % status) + get(token, b"/after"))
        first = client.read_response()
        after = client.read_response()
        assert client.leftover == b""
    assert first.status == status
    assert first.header(b"transfer-encoding") is None
    if status == 204:
        # RFC 9110 §8.6: no Content-Length in a 204.
        assert first.header(b"content-length") is None
    assert after.body == b"seen GET /rec/" + token + b"/after"


STRAY = {
    # A 204 followed by bytes that look like a whole response of their own.
    "after-204": b"HTTP/1.1 204 No Content\r\n\r\n"
    b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nspoofed",
    # A HEAD answered with a body the upstream should not have sent.
    "after-head": b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nspoofed",
    # More body bytes than the Content-Length announced.
    "past-content-length": b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"
    b"content-length: 7\r\n\r\nspoofed",
}


@pytest.mark.parametrize("case", list(STRAY))
def test_stray_upstream_bytes_never_become_the_next_response(
    gw: Gateway, up: RecordingUpstream, token: bytes, case: str
) -> None:
    # Issue item 8: bytes after a complete response close that pooled connection.
    stray = STRAY[case]
    up.respond = lambda req: stray if req.target.endswith(b"/first") else default_response(req)
    method = b"HEAD" if case == "after-head" else b"GET"
    with RawClient(gw.proxy_port) as client:
        client.send(get(token, b"/first", method=method))
        client.read_response(head=method == b"HEAD")
    (first,) = up.seen(token)
    assert up.closed_by_peer(first.connection), (
        "the gateway kept a connection that sent stray bytes"
    )
    for i in range(3):
        resp = one_response(gw.proxy_port, get(token, b"/next%d" % i))
        assert resp.status == 200, resp.raw_head
        assert resp.body == b"seen GET /rec/" + token + b"/next%d" % i


def test_bytes_from_an_idle_upstream_connection_retire_it(
    gw: Gateway, up: RecordingUpstream, token: bytes
) -> None:
    # A pooled connection that speaks out of turn is closed, before any reuse could
    # take its bytes for the next response.
    assert one_response(gw.proxy_port, get(token, b"/first")).status == 200
    (first,) = up.seen(token)
    up.inject(first.connection, b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nspoofed")
    assert up.closed_by_peer(first.connection), (
        "the gateway kept a connection that sent stray bytes"
    )
    resp = one_response(gw.proxy_port, get(token, b"/next"))
    assert resp.body == b"seen GET /rec/" + token + b"/next"
    (after,) = up.seen(token + b"/next")
    assert after.connection != first.connection


# ----------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    "headers",
    [
        [b"X-Big: " + b"a" * 40_000 + b"\r\n"],
        [b"X-Many-%d: %s\r\n" % (i, b"v" * 100) for i in range(400)],
        # Past granian's own read buffer, too.
        [b"X-Huge: " + b"a" * 500_000 + b"\r\n"],
    ],
    ids=["one-big-field", "many-fields", "past-the-server-buffer"],
)
def test_oversized_header_section_is_431(
    gw: Gateway, up: RecordingUpstream, token: bytes, headers: list[bytes]
) -> None:
    with RawClient(gw.proxy_port) as client:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.send(get(token, b"", *headers))
        resp = client.read_response()
    assert resp.status == 431, resp.raw_head
    settle(gw, up)
    assert up.seen(token) == []


def test_overlong_request_target_is_414(gw: Gateway, up: RecordingUpstream, token: bytes) -> None:
    resp = one_response(gw.proxy_port, get(token, b"/" + b"a" * 9000))
    assert resp.status == 414, resp.raw_head
    assert resp.header(b"content-type") == b"application/problem+json"
    settle(gw, up)
    assert up.seen(token) == []


def test_declared_body_over_the_limit_is_413_and_its_bytes_stay_body(
    gw: Gateway, up: RecordingUpstream, token: bytes
) -> None:
    size = MAX_REQUEST_BODY + 1
    inner = b"GET /rec/" + token + b"/smuggled HTTP/1.1\r\n" + HOST + b"\r\n"
    body = inner + b"x" * (size - len(inner))
    raw = b"POST /rec/" + token + b" HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % size
    with RawClient(gw.proxy_port) as client:
        client.send(raw)
        resp = client.read_response()
        assert resp.status == 413, resp.raw_head
        assert json.loads(resp.body)["status"] == 413
        # Whatever the server does with the unread body, it is never a request.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.send(body + get(token, b"/after"))
        if not client.closed_by_peer(timeout=1.0):
            assert client.read_response().body == b"seen GET /rec/" + token + b"/after"
    settle(gw, up)
    assert [r.target for r in up.seen(token)] in ([], [b"/rec/" + token + b"/after"])


def test_chunked_body_over_the_limit_is_413(
    gw: Gateway, up: RecordingUpstream, token: bytes
) -> None:
    chunk = b"y" * 10_000
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(15)) + b"0\r\n\r\n"
    raw = b"POST /rec/" + token + b" HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
    with RawClient(gw.proxy_port) as client:
        client.send(raw)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.send(chunks)
        resp = client.read_response()
    assert resp.status == 413, resp.raw_head
    settle(gw, up)
    assert_nothing_complete_reached(up, token)
