"""Every access plugin tried over every protocol its route accepts: HTTP/1.1, HTTP/2 (h2c)
and the WebSocket handshake.

For each route (one plugin each, see protocol_support.gateway_config) a short script
of attempts runs over one protocol: each refused attempt must get the plugin's
refusal status and leave no trace at the recording upstream; each allowed attempt
must pass and arrive. A protocol on which a plugin has nothing to check is left out
and named in PLUGINS (no body on a WebSocket handshake, no CORS preflight over one).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import pytest
from protocol_support import ALLOWED_ORIGIN, SIZE_LIMIT, Credentials, settle
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from support.h2_client import h2_request
from support.raw_client import RawClient
from support.raw_upstream import ReceivedRequest, response
from support.recording_upstream import RecordingUpstream, default_response
from support.servers import Gateway
from support.threaded_upstream import wait_until

PROTOCOLS = ("http1", "http2", "websocket")
OTHER_CLIENT = "127.0.0.2"


@dataclass
class Attempt:
    """One request: what to send and what must happen."""

    status: int
    headers: Callable[[Credentials], dict[str, str]] = lambda c: {}
    method: str = "GET"
    body: bytes | None = None
    # Send the body without a length (HTTP/1.1 chunked, HTTP/2 DATA without content-length):
    # the gateway may have streamed a prefix upstream before the limit showed, so a
    # refusal then only promises that no complete request arrived.
    stream_body: bool = False
    source: str = "127.0.0.1"
    # Whether the request reaches the upstream (None: it does exactly when allowed).
    reaches: bool | None = None
    check: Callable[[ReceivedRequest], None] | None = None
    response_check: Callable[[dict[str, str]], None] | None = None

    @property
    def arrives(self) -> bool:
        return self.status < 400 if self.reaches is None else self.reaches


@dataclass
class Plugin:
    attempts: list[Attempt]
    protocols: tuple[str, ...] = PROTOCOLS
    notes: list[str] = field(default_factory=list)
    # The route the attempts go to (default: the one named like the plugin).
    route: str | None = None


def key(who: str) -> Callable[[Credentials], dict[str, str]]:
    return lambda c: {"x-api-key": c.alice_key if who == "alice" else c.bob_key}


def bearer(c: Credentials) -> dict[str, str]:
    return {"authorization": f"Bearer {c.token()}"}


def forged_bearer(c: Credentials) -> dict[str, str]:
    forged = jwt.encode(
        {"sub": "alice", "exp": 4_000_000_000},
        "not-the-secret-0123456789abcdef0123456789",
        algorithm="HS256",
        headers={"kid": "hs-1"},
    )
    return {"authorization": f"Bearer {forged}"}


def bucket(
    extra: Callable[[Credentials], dict[str, str]] | None = None,
) -> Callable[[Credentials], dict[str, str]]:
    """A counter of its own for this test (the limits allow 1 per hour per bucket)."""
    name = uuid.uuid4().hex

    def headers(c: Credentials) -> dict[str, str]:
        return {"x-bucket": name, **(extra(c) if extra else {})}

    return headers


def transformed(req: ReceivedRequest) -> None:
    assert req.header(b"x-added") == b"yes", req.raw_head
    assert req.header(b"x-remove-me") is None, req.raw_head


def granted(headers: dict[str, str]) -> None:
    assert headers.get("access-control-allow-origin") == ALLOWED_ORIGIN, headers


def preflight(origin: str) -> Callable[[Credentials], dict[str, str]]:
    return lambda c: {"origin": origin, "access-control-request-method": "GET"}


def json_body(c: Credentials) -> dict[str, str]:
    return {"content-type": "application/json"}


def form_body(c: Credentials) -> dict[str, str]:
    return {"content-type": "application/x-www-form-urlencoded"}


def plugins() -> dict[str, Plugin]:
    limited = bucket()
    planned = bucket(key("alice"))
    return {
        "key-auth": Plugin(
            [
                Attempt(401),
                Attempt(401, lambda c: {"x-api-key": "pc_live_not_a_key"}),
                Attempt(200, key("alice")),
            ]
        ),
        "jwt-auth": Plugin([Attempt(401), Attempt(401, forged_bearer), Attempt(200, bearer)]),
        "basic-auth": Plugin(
            [
                Attempt(401),
                Attempt(401, lambda c: c.basic("wrong password")),
                Attempt(200, lambda c: c.basic()),
            ]
        ),
        "hmac-auth": Plugin(
            [
                Attempt(401),
                Attempt(401, lambda c: c.signed("not the secret")),
                Attempt(200, lambda c: c.signed()),
            ]
        ),
        "acl": Plugin([Attempt(401), Attempt(403, key("bob")), Attempt(200, key("alice"))]),
        "ip-restriction": Plugin(
            [
                Attempt(403, source=OTHER_CLIENT),
                # No trusted proxies: a claimed client address counts for nothing.
                Attempt(403, lambda c: {"x-forwarded-for": "127.0.0.1"}, source=OTHER_CLIENT),
                Attempt(200),
            ]
        ),
        "rate-limit": Plugin([Attempt(200, limited), Attempt(429, limited)]),
        "plan-limits": Plugin([Attempt(401), Attempt(200, planned), Attempt(429, planned)]),
        "request-size-limit": Plugin(
            [
                Attempt(413, method="POST", body=b"x" * (SIZE_LIMIT + 1)),
                Attempt(413, method="POST", body=b"x" * (SIZE_LIMIT + 1), stream_body=True),
                Attempt(200, method="POST", body=b"x" * SIZE_LIMIT),
            ],
            protocols=("http1", "http2"),
            notes=["a WebSocket handshake has no body"],
        ),
        "cors": Plugin(
            [
                Attempt(403, preflight("https://evil.example"), method="OPTIONS"),
                # Allowed preflights are answered at the gateway, too.
                Attempt(204, preflight(ALLOWED_ORIGIN), method="OPTIONS", reaches=False),
                Attempt(200, lambda c: {"origin": ALLOWED_ORIGIN}, response_check=granted),
            ],
            protocols=("http1", "http2"),
            notes=["CORS refuses preflights only, and a WebSocket handshake is never one"],
        ),
        "request-transformer": Plugin(
            [Attempt(200, lambda c: {"x-remove-me": "1"}, check=transformed)]
        ),
        "request-validator": Plugin(
            [
                Attempt(400),
                Attempt(400, lambda c: {"x-check": "no"}),
                Attempt(200, lambda c: {"x-check": "ok"}),
            ]
        ),
        "request-validator-body": Plugin(
            [
                Attempt(400, json_body, method="POST", body=b'{"name": 1}'),
                Attempt(400, json_body, method="POST", body=b'{"name": 1}', stream_body=True),
                Attempt(400, method="POST", body=b"name=a"),  # no Content-Type
                Attempt(415, form_body, method="POST", body=b"name=a"),
                Attempt(200, json_body, method="POST", body=b'{"name": "a"}'),
                Attempt(200, json_body, method="POST", body=b'{"name": "a"}', stream_body=True),
            ],
            protocols=("http1", "http2"),
            notes=["a WebSocket handshake has no body"],
            route="request-validator",
        ),
    }


CASES = [(name, proto) for name, plugin in plugins().items() for proto in plugin.protocols]


# ----------------------------------------------------------------------------- clients


@dataclass
class Outcome:
    status: int
    headers: dict[str, str]


def _http(gw: Gateway, proto: str, path: str, attempt: Attempt, creds: Credentials) -> Outcome:
    transport = httpx.HTTPTransport(
        http1=proto == "http1", http2=proto == "http2", local_address=attempt.source
    )
    headers = attempt.headers(creds)
    content: bytes | Iterator[bytes] | None = attempt.body
    if attempt.body is not None and attempt.stream_body:
        if proto == "http2":
            return _h2_streamed(gw, path, attempt, headers)
        body = attempt.body
        content = iter([body[: len(body) // 2], body[len(body) // 2 :]])
    with httpx.Client(transport=transport, base_url=gw.url, timeout=10) as client:
        r = client.request(attempt.method, path, headers=headers, content=content)
    assert r.http_version == ("HTTP/2" if proto == "http2" else "HTTP/1.1")
    return Outcome(r.status_code, dict(r.headers))


def _h2_streamed(gw: Gateway, path: str, attempt: Attempt, headers: dict[str, str]) -> Outcome:
    # httpx cannot send an HTTP/2 body without content-length; the raw client can.
    assert attempt.source == "127.0.0.1"
    assert attempt.body is not None
    pseudo = [
        (b":method", attempt.method.encode()),
        (b":scheme", b"http"),
        (b":authority", b"127.0.0.1:%d" % gw.proxy_port),
        (b":path", path.encode()),
    ]
    fields = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    half = len(attempt.body) // 2
    result = h2_request(gw.proxy_port, pseudo + fields, [attempt.body[:half], attempt.body[half:]])
    assert result.status is not None, result
    return Outcome(result.status, {n.decode(): v.decode() for n, v in result.headers})


def _websocket(gw: Gateway, path: str, attempt: Attempt, creds: Credentials) -> Outcome:
    url = f"ws://127.0.0.1:{gw.proxy_port}{path}"
    try:
        with connect(
            url,
            additional_headers=attempt.headers(creds),
            source_address=(attempt.source, 0),
            proxy=None,
            open_timeout=10,
        ) as ws:
            ws.send("ping through " + path)
            assert ws.recv(timeout=10) == "ping through " + path
            assert ws.response is not None
            return Outcome(ws.response.status_code, dict(ws.response.headers))
    except InvalidStatus as exc:
        return Outcome(exc.response.status_code, dict(exc.response.headers))


def attempt_once(
    gw: Gateway, proto: str, path: str, attempt: Attempt, creds: Credentials
) -> Outcome:
    if proto == "websocket":
        return _websocket(gw, path, attempt, creds)
    return _http(gw, proto, path, attempt, creds)


# ----------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize(("plugin", "proto"), CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_plugin_refuses_and_allows_over_every_protocol(
    gw: Gateway, up: RecordingUpstream, creds: Credentials, plugin: str, proto: str
) -> None:
    script = plugins()[plugin]
    for i, attempt in enumerate(script.attempts):
        token = uuid.uuid4().hex
        path = f"/{script.route or plugin}/{token}"
        outcome = attempt_once(gw, proto, path, attempt, creds)
        expected = 101 if proto == "websocket" and attempt.status == 200 else attempt.status
        assert outcome.status == expected, f"attempt {i} ({attempt}): got {outcome}"
        if attempt.response_check is not None:
            attempt.response_check(outcome.headers)
        if attempt.arrives:
            (seen,) = up.wait_for(token.encode())
            if attempt.check is not None:
                attempt.check(seen)
            if attempt.body is not None:
                assert seen.body == attempt.body
        else:
            settle(gw, up)
            arrived = up.seen(token.encode())
            if attempt.stream_body:
                arrived = [r for r in arrived if r.complete]
            assert arrived == [], f"attempt {i} reached the upstream"


# ----------------------------------------------------------------------------- log shipping


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_log_plugins_log_every_protocol(
    gw: Gateway, creds: Credentials, request_log: Path, proto: str
) -> None:
    # The same plugins run whatever the protocol: file-log gets the refused request and
    # the served one (a WebSocket handshake: its 101).
    token = uuid.uuid4().hex
    refused = attempt_once(gw, proto, f"/file-log/{token}/no", Attempt(401), creds)
    served = attempt_once(gw, proto, f"/file-log/{token}/yes", Attempt(200, key("alice")), creds)
    assert (refused.status, served.status) == (401, 101 if proto == "websocket" else 200)

    def logged() -> dict[str, dict[str, object]]:
        lines = request_log.read_text().splitlines() if request_log.exists() else []
        entries = (json.loads(line) for line in lines if token in line)
        return {str(e["path"]).rsplit("/", 1)[-1]: e for e in entries}

    wait_until(lambda: len(logged()) == 2)
    entries = logged()
    assert entries["no"]["status"] == 401
    assert entries["no"]["consumer"] is None
    assert entries["yes"]["status"] == served.status
    assert entries["yes"]["consumer"] == "alice"
    assert entries["yes"]["route"] == "file-log"
    assert creds.alice_key not in request_log.read_text()


# ----------------------------------------------------------------------------- walking around


TRAVERSALS = [b"/open/../key-auth/", b"/open/%2e%2e/key-auth/", b"/open/%2E%2E/key-auth/"]


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("prefix", TRAVERSALS, ids=["dots", "encoded-dots", "encoded-dots-upper"])
def test_dot_segments_cannot_walk_around_key_auth(
    gw: Gateway, up: RecordingUpstream, proto: str, prefix: bytes
) -> None:
    # Issue item 6, on every protocol: the path is normalised before routing, so these
    # land on the key-auth route (401) or are refused; never the open route's upstream.
    token = uuid.uuid4().hex.encode()
    path = prefix + token
    if proto == "http1":
        with RawClient(gw.proxy_port) as client:
            client.send(b"GET " + path + b" HTTP/1.1\r\nHost: gw.test\r\n\r\n")
            status = client.read_response().status
    elif proto == "http2":
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"gw.test"),
            (b":path", path),
        ]
        result = h2_request(gw.proxy_port, headers)
        assert result.status is not None, result
        status = result.status
    else:
        status = attempt_once(gw, proto, path.decode(), Attempt(401), Credentials("", "")).status
    assert status in (400, 401), status
    settle(gw, up)
    assert up.seen(token) == []


# ----------------------------------------------------------------------------- websocket


def test_websocket_handshake_reaches_the_upstream_cleanly(
    gw: Gateway, up: RecordingUpstream
) -> None:
    token = uuid.uuid4().hex
    with connect(
        f"ws://127.0.0.1:{gw.proxy_port}/open/{token}",
        additional_headers={
            "proxy-authorization": "Basic dXNlcjpwYXNz",
            "x-forwarded-for": "203.0.113.9",
            "x-kept": "yes",
        },
        proxy=None,
        open_timeout=10,
    ) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\x01")
        assert ws.recv(timeout=10) == b"\x00\x01"
    (seen,) = up.wait_for(token.encode())

    def values(name: bytes) -> list[bytes]:
        return [v for n, v in seen.headers if n == name]

    assert values(b"host") == [b"127.0.0.1:%d" % up.port]
    assert [v.lower() for v in values(b"upgrade")] == [b"websocket"]
    assert [v.lower() for v in values(b"connection")] == [b"upgrade"]
    assert len(values(b"sec-websocket-key")) == 1
    assert values(b"proxy-authorization") == []
    assert values(b"x-forwarded-for") == [b"127.0.0.1"]
    assert values(b"x-kept") == [b"yes"]
    assert len(values(b"via")) == 1
    assert up.ws_messages == [b"hello", b"\x00\x01"]


def ws_handshake(path: bytes, host_lines: bytes = b"Host: gw.test\r\n") -> bytes:
    return (
        b"GET " + path + b" HTTP/1.1\r\n" + host_lines
        + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )  # fmt: skip


@pytest.mark.parametrize("upstream_status", [200, 403, 426])
def test_a_refused_upgrade_opens_no_tunnel(
    gw: Gateway, up: RecordingUpstream, upstream_status: int
) -> None:
    # WebSocket smuggling: the upstream does not switch protocols. A proxy that opened a
    # raw tunnel anyway would let the client talk to the upstream directly, past routing
    # and plugins; what follows must still be HTTP to the gateway.
    token = uuid.uuid4().hex.encode()
    up.respond = lambda req: (
        response(upstream_status, b"no websocket here")
        if token in req.target
        else default_response(req)
    )
    with RawClient(gw.proxy_port) as client:
        client.send(ws_handshake(b"/open/" + token))
        assert client.read_response().status >= 400
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.send(b"GET /no-route/" + token + b" HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        if not client.closed_by_peer(timeout=1.0):
            assert client.read_response().status == 404
    settle(gw, up)
    assert [r.target for r in up.seen(token)] == [b"/open/" + token]


# ----------------------------------------------------------------------------- host confusion


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize(
    "hosts",
    [(b"public.example", b"admin.example"), (b"admin.example", b"public.example")],
    ids=["public-first", "admin-first"],
)
def test_a_second_host_cannot_walk_around_host_routing(
    gw: Gateway, up: RecordingUpstream, proto: str, hosts: tuple[bytes, bytes]
) -> None:
    # Issue item 5, on every protocol: /hosted is open on public.example and behind
    # key-auth on admin.example; with two Hosts the router and the upstream could each
    # believe a different one. RFC 9112 §3.2: 400.
    token = uuid.uuid4().hex.encode()
    path = b"/hosted/" + token
    if proto == "http2":
        headers = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", path)]
        result = h2_request(gw.proxy_port, headers + [(b"host", h) for h in hosts])
        status = result.status
    else:
        host_lines = b"".join(b"Host: " + h + b"\r\n" for h in hosts)
        raw = (
            ws_handshake(path, host_lines)
            if proto == "websocket"
            else b"GET " + path + b" HTTP/1.1\r\n" + host_lines + b"\r\n"
        )
        with RawClient(gw.proxy_port) as client:
            client.send(raw)
            status = client.read_response().status
    assert status == 400
    settle(gw, up)
    assert up.seen(token) == []
