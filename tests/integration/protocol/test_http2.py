"""HTTP/2 (h2c with prior knowledge, which granian's `--http auto` serves) into the gateway,
HTTP/1.1 out to the recording upstream (RFC 9113).

Well-formed requests go through httpx; malformed ones through the raw `h2` library
with validation off. granian (hyper) maps `:authority` to a `host` field when no
`host` was sent and passes a `host` field unchanged otherwise, so the gateway sees
`host` on both protocols. A malformed request (RFC 9113 §8.1.1, §8.2, §8.3) must be
refused, as a stream error or a 400, and must never reach the upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from protocol_support import MAX_REQUEST_BODY, assert_nothing_complete_reached, settle

from support.h2_client import h2_request
from support.raw_upstream import ReceivedRequest, response
from support.recording_upstream import RecordingUpstream, default_response
from support.servers import Gateway


@pytest.fixture
def h2(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, http1=False, http2=True, timeout=10) as client:
        yield client


def values(req: ReceivedRequest, name: bytes) -> list[bytes]:
    return [v for n, v in req.headers if n == name]


def request_headers(
    token: bytes, method: bytes = b"GET", authority: bytes = b"gw.test"
) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method),
        (b":scheme", b"http"),
        (b":authority", authority),
        (b":path", b"/rec/" + token),
    ]


# ----------------------------------------------------------------------------- well-formed


def test_h2_request_reaches_the_upstream_as_one_clean_http1_request(
    gw: Gateway, h2: httpx.Client, up: RecordingUpstream, token: bytes
) -> None:
    r = h2.get(f"/rec/{token.decode()}?q=1", headers={"x-a": "1", "te": "trailers"})
    assert r.http_version == "HTTP/2"
    assert r.status_code == 200
    (via,) = r.headers.get_list("via")
    assert via.endswith(" portcullis")
    settle(gw, up)
    (seen,) = up.seen(token)
    assert seen.version == b"HTTP/1.1"
    assert seen.target == b"/rec/" + token + b"?q=1"
    assert [n for n, _ in seen.headers if n.startswith(b":")] == []
    assert values(seen, b"host") == [b"127.0.0.1:%d" % up.port]
    assert values(seen, b"x-forwarded-host") == [b"127.0.0.1:%d" % gw.proxy_port]
    assert values(seen, b"x-forwarded-proto") == [b"http"]
    assert values(seen, b"x-a") == [b"1"]
    assert values(seen, b"te") == []


def test_h2_request_body_arrives_whole(
    gw: Gateway, h2: httpx.Client, up: RecordingUpstream, token: bytes
) -> None:
    body = bytes(range(256)) * 300
    r = h2.post(f"/rec/{token.decode()}", content=body)
    assert r.status_code == 200
    settle(gw, up)
    (seen,) = up.seen(token)
    assert seen.complete
    assert seen.body == body
    assert values(seen, b"content-length") == [b"%d" % len(body)]


def test_h2_body_without_content_length_arrives_whole(
    gw: Gateway, up: RecordingUpstream, token: bytes
) -> None:
    body = bytes(range(256)) * 300
    frames = [body[i : i + 7000] for i in range(0, len(body), 7000)]
    result = h2_request(gw.proxy_port, request_headers(token, b"POST"), frames)
    assert result.status == 200
    settle(gw, up)
    (seen,) = up.seen(token)
    assert seen.complete
    assert seen.body == body
    framing = [n for n, _ in seen.headers if n in (b"content-length", b"transfer-encoding")]
    assert len(framing) == 1, seen.raw_head


def test_h2_cookie_crumbs_are_joined_for_http1(
    gw: Gateway, up: RecordingUpstream, token: bytes
) -> None:
    # RFC 9113 §8.2.3: several cookie fields MUST be joined with "; " before being
    # passed into a non-HTTP/2 context such as an HTTP/1.1 connection.
    headers = [*request_headers(token), (b"cookie", b"a=1"), (b"cookie", b"b=2")]
    result = h2_request(gw.proxy_port, headers)
    assert result.status == 200
    settle(gw, up)
    (seen,) = up.seen(token)
    assert values(seen, b"cookie") == [b"a=1; b=2"]


@pytest.mark.parametrize("status", [204, 304])
def test_h2_bodyless_status_has_no_data(
    gw: Gateway, h2: httpx.Client, up: RecordingUpstream, token: bytes, status: int
) -> None:
    def by_path(req: ReceivedRequest) -> bytes:
        if req.target.endswith(b"/%d" % status):
            return response(status, headers=[(b"etag", b'"v1"')], length=False)
        return default_response(req)

    up.respond = by_path
    r = h2.get(f"/rec/{token.decode()}/{status}")
    assert r.status_code == status
    assert r.content == b""
    assert h2.get(f"/rec/{token.decode()}/after").text == f"seen GET /rec/{token.decode()}/after"


def test_h2_head_keeps_the_length_and_sends_no_data(
    h2: httpx.Client, up: RecordingUpstream, token: bytes
) -> None:
    r = h2.head(f"/rec/{token.decode()}")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == str(len(f"seen HEAD /rec/{token.decode()}"))


# ----------------------------------------------------------------------------- limits


def test_h2_oversized_headers_are_431(gw: Gateway, up: RecordingUpstream, token: bytes) -> None:
    result = h2_request(gw.proxy_port, [*request_headers(token), (b"x-big", b"a" * 40_000)])
    assert result.status == 431
    settle(gw, up)
    assert up.seen(token) == []


def test_h2_overlong_path_is_414(gw: Gateway, up: RecordingUpstream, token: bytes) -> None:
    headers = request_headers(token)
    headers[3] = (b":path", b"/rec/" + token + b"/" + b"a" * 9000)
    result = h2_request(gw.proxy_port, headers)
    assert result.status == 414
    settle(gw, up)
    assert up.seen(token) == []


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "no-length"])
def test_h2_body_over_the_limit_is_413(
    gw: Gateway, up: RecordingUpstream, token: bytes, declared: bool
) -> None:
    size = MAX_REQUEST_BODY + 1
    headers = request_headers(token, b"POST")
    if declared:
        headers.append((b"content-length", b"%d" % size))
    frames = [b"z" * 16_000] * (size // 16_000) + [b"z" * (size % 16_000)]
    result = h2_request(gw.proxy_port, headers, frames)
    assert result.status == 413
    settle(gw, up)
    assert_nothing_complete_reached(up, token)


# ----------------------------------------------------------------------------- malformed

Mutation = list[tuple[bytes, bytes]]


def _base(token: bytes) -> Mutation:
    return request_headers(token)


MALFORMED: dict[str, Callable[[bytes], Mutation]] = {
    # RFC 9113 §8.3: each pseudo-header once, all before regular fields, no others.
    "duplicate-path": lambda t: [*_base(t), (b":path", b"/rec/" + t + b"/other")],
    "conflicting-method": lambda t: [(b":method", b"POST"), *_base(t)],
    "duplicate-authority": lambda t: [*_base(t), (b":authority", b"other.test")],
    "pseudo-after-regular": lambda t: [*_base(t)[:2], (b"x-a", b"1"), *_base(t)[2:]],
    "unknown-pseudo": lambda t: [*_base(t), (b":protocol", b"websocket")],
    "missing-path": lambda t: _base(t)[:3],
    "empty-path": lambda t: [*_base(t)[:3], (b":path", b"")],
    "missing-method": lambda t: _base(t)[1:],
    "missing-scheme": lambda t: [_base(t)[0], *_base(t)[2:]],
    # RFC 9113 §8.2.2: connection-specific fields make the request malformed.
    "connection": lambda t: [*_base(t), (b"connection", b"keep-alive")],
    "keep-alive": lambda t: [*_base(t), (b"keep-alive", b"timeout=5")],
    "proxy-connection": lambda t: [*_base(t), (b"proxy-connection", b"keep-alive")],
    "transfer-encoding": lambda t: [*_base(t), (b"transfer-encoding", b"chunked")],
    "upgrade": lambda t: [*_base(t), (b"upgrade", b"websocket")],
    "te-not-trailers": lambda t: [*_base(t), (b"te", b"gzip")],
    # RFC 9113 §8.2.1: field names lowercase tokens; values without CR, LF, NUL.
    "uppercase-name": lambda t: [*_base(t), (b"X-Upper", b"1")],
    "space-in-name": lambda t: [*_base(t), (b"x a", b"1")],
    "colon-in-name": lambda t: [*_base(t), (b"x:a", b"1")],
    "crlf-in-value": lambda t: [*_base(t), (b"x-a", b"v\r\nx-injected: 1")],
    "lf-in-value": lambda t: [*_base(t), (b"x-a", b"v\nx-injected: 1")],
    "cr-in-value": lambda t: [*_base(t), (b"x-a", b"v\rx-injected: 1")],
    "nul-in-value": lambda t: [*_base(t), (b"x-a", b"v\x00w")],
    "leading-space-in-value": lambda t: [*_base(t), (b"x-a", b" v")],
    "trailing-tab-in-value": lambda t: [*_base(t), (b"x-a", b"v\t")],
    "crlf-in-path": lambda t: [
        *_base(t)[:3],
        (b":path", b"/rec/" + t + b" HTTP/1.1\r\nx-injected: 1\r\n\r\nGET /rec/" + t),
    ],
    # RFC 9112 §3.2 via RFC 9113 §8.3.1: one Host (issue item 5).
    "duplicate-host": lambda t: [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/rec/" + t),
        (b"host", b"gw.test"),
        (b"host", b"other.test"),
    ],
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_h2_request_is_refused_and_never_reaches_the_upstream(
    gw: Gateway, up: RecordingUpstream, token: bytes, case: str
) -> None:
    result = h2_request(gw.proxy_port, MALFORMED[case](token))
    assert result.refused or result.status == 400, result
    settle(gw, up)
    assert up.seen(token) == []
    assert up.errors == []


@pytest.mark.parametrize(
    ("declared", "frames"),
    [
        (b"10", [b"abc"]),
        (b"2", [b"abcdef"]),
        (b"3", [b"ab", b"cd"]),
        (b"abc", [b"abc"]),
        (b"-1", [b"abc"]),
        (b"0", [b"abc"]),
    ],
    ids=["fewer-bytes", "more-bytes", "more-bytes-split", "not-a-number", "negative", "zero"],
)
def test_h2_content_length_disagreeing_with_data_is_refused(
    gw: Gateway, up: RecordingUpstream, token: bytes, declared: bytes, frames: list[bytes]
) -> None:
    # RFC 9113 §8.1.1: a content-length that does not equal the sum of DATA lengths
    # makes the request malformed.
    headers = [*request_headers(token, b"POST"), (b"content-length", declared)]
    result = h2_request(gw.proxy_port, headers, frames)
    assert result.refused or result.status == 400, result
    settle(gw, up)
    assert_nothing_complete_reached(up, token)
