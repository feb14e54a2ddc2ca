"""Host and path tricks cannot walk around a protected route (issue 11, items 5-7).

A real gateway (`portcullis serve`, granian) sits in front of a raw recording
upstream that parses every request it receives. Open and key-auth routes go to the
same upstream, so a trick that works shows up as the upstream answering a protected
path, or being sent a different Host than the one routing used, without a key.
Requests are written on raw sockets: clients normalise paths and refuse duplicate
Host fields, which is exactly what must not be relied on.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import yaml

from portcullis.model.config import Consumer, GatewayConfig
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import create_engine
from support.raw_upstream import RawUpstream, ReceivedRequest, keep_alive_handler, response
from support.servers import Gateway, gateway


def _answer(req: ReceivedRequest) -> bytes:
    body = json.dumps(
        {
            "target": req.target.decode("latin-1"),
            "host": (req.header(b"host") or b"").decode("latin-1"),
            "custom_id": (req.header(b"x-consumer-custom-id") or b"").decode("latin-1"),
        }
    ).encode()
    return response(200, body, [(b"content-type", b"application/json")])


class RecordingUpstream:
    """A `RawUpstream` on its own event loop thread, for a gateway in another process."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = RawUpstream(keep_alive_handler(_answer))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> RecordingUpstream:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def requests(self) -> list[ReceivedRequest]:
        # Each request is recorded before it is answered, so by the time the
        # gateway's response is back the list holds it.
        return list(self.server.requests)


def config(port: int) -> dict[str, Any]:
    def route(name: str, paths: list[str], **extra: Any) -> dict[str, Any]:
        return {"name": name, "service": "rec", "paths": paths, "strip_path": False, **extra}

    return {
        "services": [{"name": "rec", "url": f"http://127.0.0.1:{port}"}],
        "routes": [
            route("public", ["/public"]),
            route("admin", ["/admin"]),
            route("keep", ["/keep"], encoded_slashes="keep"),
            route("decode", ["/decode"], encoded_slashes="decode"),
            route("open-host", ["/h"], hosts=["open.example"], preserve_host=True),
            route("secure-host", ["/h"], hosts=["secure.example"], preserve_host=True),
            route("anon", ["/anon"]),
        ],
        "consumers": [
            {"username": "alice", "custom_id": "crm-1"},
            {"username": "guest", "custom_id": "crm-guest"},
        ],
        "plugins": [
            {"name": "key-auth", "route": "admin", "config": {}},
            {"name": "key-auth", "route": "secure-host", "config": {}},
            {"name": "key-auth", "route": "anon", "config": {"anonymous": "guest"}},
        ],
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: RecordingUpstream) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("integrity")
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(config(upstream.port)))
    with gateway(tmp, cfg) as g:
        yield g


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    return gw.cli("keys", "create", "alice", "--name", "integrity").stdout.strip()


def raw_request(gw: Gateway, head: bytes) -> tuple[int, dict[str, Any] | None]:
    """Send one request head on a fresh connection; the status and the JSON body, if any."""
    with socket.create_connection(("127.0.0.1", gw.proxy_port), timeout=10) as s:
        s.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := s.recv(65536)):
            data += chunk
        head_part, _, body = data.partition(b"\r\n\r\n")
        fields = dict(
            line.lower().split(b": ", 1) for line in head_part.split(b"\r\n")[1:] if b": " in line
        )
        length = int(fields.get(b"content-length", b"0"))
        while len(body) < length and (chunk := s.recv(65536)):
            body += chunk
    status = int(head_part.split(b" ", 2)[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def get(gw: Gateway, target: bytes, *headers: bytes, version: bytes = b"HTTP/1.1") -> Any:
    lines = [b"GET " + target + b" " + version, *headers, b"connection: close", b"", b""]
    return raw_request(gw, b"\r\n".join(lines))


# -- item 6: dot-segments and encodings ----------------------------------------------

HOST = b"host: gw.example"

# Every variant resolves, by some reading, to the upstream's /admin. Each must be
# refused (400), or routed by the path it normalizes to, which needs the key (401).
TRAVERSALS: list[tuple[bytes, int]] = [
    (b"/public/../admin", 401),
    (b"/public/%2e%2e/admin", 401),
    (b"/public/%2E%2E/admin", 401),
    (b"/public/.%2e/admin", 401),
    (b"/public/%2e./admin", 401),
    (b"/public/./../admin", 401),
    (b"/public/%2e/%2e%2e/admin", 401),
    (b"/public/x/../../admin", 401),
    (b"/public/../admin/../admin/x", 401),
    (b"//admin", 401),
    (b"///admin", 401),
    (b"/%61dmin", 401),
    (b"/public/..%2fadmin", 400),
    (b"/public/..%2Fadmin", 400),
    (b"/public/%2e%2e%2fadmin", 400),
    (b"/public%2f..%2fadmin", 400),
    (b"/public/..%5cadmin", 400),
    (b"/public/..%5Cadmin", 400),
    (b"/public/..\\admin", 400),
    # "/public\\" is not the segment "/public": no route.
    (b"/public\\..\\admin", 404),
    (b"/public/..;/admin", 400),
    (b"/public/..;jsessionid=1/admin", 400),
    (b"/public/%2e%2e;/admin", 400),
    (b"/public/.;/../admin", 400),
    (b"/public/%00/../admin", 400),
    (b"/public/%0d%0a/../admin", 400),
    (b"/public/%zz/../admin", 400),
    (b"/decode/..%2fadmin", 401),
    (b"/decode/..%5cadmin", 401),
    (b"/decode/..\\admin", 401),
    (b"/decode/%2e%2e%2fadmin", 401),
]


@pytest.mark.parametrize(("target", "status"), TRAVERSALS)
def test_traversal_never_reaches_a_protected_path_without_a_key(
    gw: Gateway, upstream: RecordingUpstream, target: bytes, status: int
) -> None:
    before = len(upstream.requests)
    assert get(gw, target, HOST)[0] == status
    assert upstream.requests[before:] == []


@pytest.mark.parametrize(("target", "status"), [t for t in TRAVERSALS if t[1] == 401])
def test_with_the_key_the_upstream_gets_the_normalized_path(
    gw: Gateway, upstream: RecordingUpstream, key: str, target: bytes, status: int
) -> None:
    code, body = get(gw, target, HOST, b"x-api-key: " + key.encode())
    assert code == 200
    assert body is not None
    assert body["target"] in ("/admin", "/admin/x")
    assert upstream.requests[-1].target == body["target"].encode()


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        # An escaped "%" is data: decoded once for routing, never twice.
        (b"/public/%252e%252e/admin", b"/public/%252e%252e/admin"),
        (b"/public/a%2Db%7e%41", b"/public/a-b~A"),
        (b"/public/%c3%a9?q=%2e%2e", b"/public/%C3%A9?q=%2e%2e"),
        (b"/public/./x/../y/", b"/public/y/"),
        # RFC 3986: ".." removes the empty segment; slashes are merged after.
        (b"/public//../admin", b"/public/admin"),
        (b"/keep/a%2fb%5Cc", b"/keep/a%2Fb%5Cc"),
        (b"/keep/a\\b", b"/keep/a%5Cb"),
        (b"/decode/a%2fb%5Cc", b"/decode/a/b/c"),
    ],
)
def test_open_routes_forward_the_normalized_path(
    gw: Gateway, upstream: RecordingUpstream, target: bytes, forwarded: bytes
) -> None:
    assert get(gw, target, HOST)[0] == 200
    assert upstream.requests[-1].target == forwarded


def test_an_encoded_slash_is_a_problem_naming_the_cause(gw: Gateway) -> None:
    code, body = get(gw, b"/public/a%2Fb", HOST)
    assert code == 400
    assert body is not None
    assert body["type"] == "https://portcullis.dev/problems/bad-request"
    assert "encoded slash" in body["detail"]


# -- item 5: Host --------------------------------------------------------------------


@pytest.mark.parametrize(
    "hosts",
    [
        [b"host: open.example", b"host: secure.example"],
        [b"host: secure.example", b"host: open.example"],
        [b"host: open.example", b"Host: open.example"],
        [b"host: open.example", b"x-a: 1", b"HOST: secure.example"],
    ],
)
def test_more_than_one_host_is_refused(
    gw: Gateway, upstream: RecordingUpstream, hosts: list[bytes]
) -> None:
    before = len(upstream.requests)
    code, body = get(gw, b"/h", *hosts)
    assert code == 400
    assert body is not None
    assert "more than one Host" in body["detail"]
    assert upstream.requests[before:] == []


def test_routing_and_the_upstream_use_the_same_host(
    gw: Gateway, upstream: RecordingUpstream, key: str
) -> None:
    assert get(gw, b"/h", b"host: secure.example")[0] == 401
    code, body = get(gw, b"/h", b"host: open.example")
    assert (code, body and body["host"]) == (200, "open.example")
    code, body = get(gw, b"/h", b"host: secure.example", b"x-api-key: " + key.encode())
    assert (code, body and body["host"]) == (200, "secure.example")


def test_missing_host_is_refused_on_http_1_1(gw: Gateway) -> None:
    code, body = get(gw, b"/public")
    assert code == 400
    assert body is not None
    assert "Host" in body["detail"]
    assert get(gw, b"/public", b"host:")[0] == 400


def test_http_1_0_may_omit_host(gw: Gateway) -> None:
    assert get(gw, b"/public", version=b"HTTP/1.0")[0] == 200


@pytest.mark.parametrize(
    "host",
    [
        b"secure.example@open.example",
        b"open.example secure.example",
        b"open.example/x",
        b"open.example:80:80",
        b"open.example:http",
        b"[::1",
        b'"open.example"',
    ],
)
def test_invalid_host_is_refused(gw: Gateway, upstream: RecordingUpstream, host: bytes) -> None:
    before = len(upstream.requests)
    assert get(gw, b"/h", b"host: " + host)[0] == 400
    assert upstream.requests[before:] == []


def test_absolute_form_target_is_routed_by_its_authority(
    gw: Gateway, upstream: RecordingUpstream, key: str
) -> None:
    assert get(gw, b"http://secure.example/h")[0] == 401
    code, body = get(gw, b"http://secure.example/h", b"x-api-key: " + key.encode())
    assert (code, body and body["host"]) == (200, "secure.example")
    code, body = get(gw, b"http://gw.example/public/../admin")
    assert code == 401


def test_absolute_form_with_a_host_header_is_routed_and_sent_consistently(
    gw: Gateway, upstream: RecordingUpstream
) -> None:
    # granian keeps the Host field when the client sent one and does not expose
    # the target's authority then; what matters is that routing and the upstream
    # see the same one.
    code, body = get(gw, b"http://secure.example/h", b"host: open.example")
    assert (code, body and body["host"]) == (200, "open.example")


def test_http2_authority_is_the_host(gw: Gateway, key: str) -> None:
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        url = f"{gw.url}/h"
        r = client.get(url, headers={"host": "secure.example"})
        assert (r.http_version, r.status_code) == ("HTTP/2", 401)
        r = client.get(url, headers={"host": "secure.example", "x-api-key": key})
        assert r.status_code == 200
        assert r.json()["host"] == "secure.example"
        r = client.get(f"{gw.url}/public/%2e%2e/admin", headers={"host": "gw.example"})
        assert r.status_code == 401


def _h2_status(gw: Gateway, headers: list[tuple[bytes, bytes]]) -> int:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False
        )
    )
    with socket.create_connection(("127.0.0.1", gw.proxy_port), timeout=10) as s:
        conn.initiate_connection()
        conn.send_headers(1, headers, end_stream=True)
        s.sendall(conn.data_to_send())
        while True:
            data = s.recv(65536)
            assert data, "connection closed before a response"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    return int(dict(event.headers)[b":status"])
            s.sendall(conn.data_to_send())


def test_http2_duplicate_or_missing_host_is_refused(gw: Gateway) -> None:
    pseudo = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/h")]
    two = [*pseudo, (b"host", b"open.example"), (b"host", b"secure.example")]
    assert _h2_status(gw, two) == 400
    assert _h2_status(gw, pseudo) == 400
    assert _h2_status(gw, [*pseudo, (b":authority", b"open.example")]) == 200


def _ws_handshake(*hosts: bytes, target: bytes = b"/h") -> bytes:
    lines = [
        b"GET " + target + b" HTTP/1.1",
        *hosts,
        b"upgrade: websocket",
        b"connection: Upgrade",
        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
        b"sec-websocket-version: 13",
        b"",
        b"",
    ]
    return b"\r\n".join(lines)


def test_websocket_handshakes_are_routed_by_the_same_rules(
    gw: Gateway, upstream: RecordingUpstream
) -> None:
    # The recording upstream does not speak WebSocket, so every handshake fails in
    # the end; what matters is which ones the gateway forwarded, and with what.
    before = len(upstream.requests)
    for head in (
        _ws_handshake(b"host: open.example", b"host: secure.example"),
        _ws_handshake(),
        _ws_handshake(b"host: open.example", target=b"/h/..%2fadmin"),
        _ws_handshake(b"host: open.example", target=b"/h/..;/admin"),
    ):
        assert raw_request(gw, head)[0] != 101
    assert upstream.requests[before:] == []
    raw_request(gw, _ws_handshake(b"host: open.example", target=b"/public/x/../../h"))
    (seen,) = upstream.requests[before:]
    assert (seen.target, seen.header(b"host")) == (b"/h", b"open.example")


# -- item 7: a custom_id with CR LF --------------------------------------------------

SMUGGLING_ID = "crm-2\r\ncontent-length: 0\r\n\r\nGET /admin HTTP/1.1\r\nx-ignore: 1"


def test_a_config_file_with_a_crlf_custom_id_is_an_error_naming_the_field(
    gw: Gateway, tmp_path: Path
) -> None:
    doc = config(1)
    doc["consumers"][1]["custom_id"] = SMUGGLING_ID
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = gw.cli("config", "validate", str(path), check=False)
    assert result.returncode != 0
    assert "consumers[1].custom_id" in result.stdout
    assert "control character" in result.stdout


def wait_for_output(gw: Gateway, *needles: bytes, timeout: float = 15.0) -> None:
    """Read the gateway's log output until one read holds every needle."""
    assert gw.process.stdout is not None
    fd = gw.process.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        seen += chunk
        if all(n in seen for n in needles):
            return
    raise AssertionError(f"the gateway never logged {needles}: {seen[-2000:]!r}")


def store_config(gw: Gateway, doc: dict[str, Any]) -> int:
    """Write a config version straight into the gateway's store."""

    async def write() -> int:
        engine = create_engine(gw.database_url)
        try:
            stored = await ConfigRepository(engine).apply(
                GatewayConfig.model_validate(doc), author="test", comment="straight to the store"
            )
            return stored.version
        finally:
            await engine.dispose()

    return asyncio.run(write())


def test_a_custom_id_with_crlf_written_to_the_store_never_reaches_the_upstream(
    gw: Gateway, upstream: RecordingUpstream
) -> None:
    code, body = get(gw, b"/anon", HOST)
    assert (code, body and body["custom_id"]) == (200, "crm-guest")
    doc = config(upstream.port)
    # Not validated again: the bad consumer goes into the store as it is.
    doc["consumers"][1] = Consumer.model_construct(username="guest", custom_id=SMUGGLING_ID)
    store_config(gw, doc)
    try:
        wait_for_output(gw, b"config.refresh_failed", b"custom_id")
        before = len(upstream.requests)
        code, body = get(gw, b"/anon", HOST)
        assert (code, body and body["custom_id"]) == (200, "crm-guest")
        (seen,) = upstream.requests[before:]
        assert seen.target == b"/anon"
    finally:
        # A good version again, so the workers stop logging the refusal.
        good = config(upstream.port)
        good["consumers"][1]["custom_id"] = "crm-guest-2"
        gw.wait_for_version(store_config(gw, good))
