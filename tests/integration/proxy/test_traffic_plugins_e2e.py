"""cors, ip-restriction, request/response-transformer and request-size-limit through a real
gateway (`portcullis serve`, granian) in front of an upstream that reflects whole requests.

Proves: preflights are answered at the gateway (never proxied, no credential needed) and
refused with 403 for a foreign origin; actual responses and a key-auth 401 carry the CORS
grant; the upstream's own Access-Control-* headers are replaced; ip-restriction sees the
client behind a trusted proxy and cannot be fooled by a prepended X-Forwarded-For hop; the
transformers rewrite headers, query and JSON bodies (chunked in, Content-Length out, with
the right length both ways); a chunked body over request-size-limit is refused with 413.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from support.servers import Gateway, gateway, granian_app

TESTS_DIR = str(Path(__file__).resolve().parents[2])
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with granian_app("support.body_echo:create_app", env={"PYTHONPATH": TESTS_DIR}) as port:
        yield port


def config(upstream: int) -> dict[str, Any]:
    def route(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "service": "echo", "paths": [f"/{name}"], **extra}

    return {
        "services": [
            {"name": "echo", "url": f"http://127.0.0.1:{upstream}"},
            {"name": "plain", "url": f"http://127.0.0.1:{upstream}"},
        ],
        "routes": [
            route("open", methods=["GET", "POST", "OPTIONS"]),
            route("keyed"),
            route("get-only", methods=["GET"]),
            {"name": "ip", "service": "plain", "paths": ["/ip"]},
            {"name": "transform", "service": "plain", "paths": ["/transform"]},
            {"name": "limited", "service": "plain", "paths": ["/limited"]},
        ],
        "plugins": [
            {
                "name": "cors",
                "service": "echo",
                "config": {
                    "origins": ["https://*.example.com"],
                    "headers": ["content-type", "x-api-key"],
                    "exposed_headers": ["x-request-id"],
                    "credentials": True,
                    "max_age": 600,
                },
            },
            {"name": "key-auth", "route": "keyed", "config": {}},
            {
                "name": "ip-restriction",
                "route": "ip",
                "config": {"allow": ["198.51.100.0/24"], "deny": ["198.51.100.66"]},
            },
            {
                "name": "request-transformer",
                "route": "transform",
                "config": {
                    "headers": {"remove": ["x-remove-me"], "add": {"x-added": "yes"}},
                    "query": {"rename": {"q": "search"}, "add": {"v": "2"}},
                    "body": {
                        "remove": ["password"],
                        "rename": {"user": "account.name"},
                        "set": {"meta.via": "gateway"},
                    },
                },
            },
            {
                "name": "response-transformer",
                "route": "transform",
                "config": {
                    "headers": {"remove": ["x-internal"], "add": {"x-transformed": "1"}},
                    "body": {"remove": ["internal"], "add": {"transformed": True}},
                },
            },
            {"name": "request-size-limit", "route": "limited", "config": {"max_bytes": 1000}},
        ],
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: int) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("traffic")
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(config(upstream)))
    # The test client (127.0.0.1) plays a trusted reverse proxy in front of the gateway.
    env = {"PORTCULLIS_TRUSTED_PROXIES": '["127.0.0.1/32"]'}
    with gateway(tmp, cfg, extra_env=env) as g:
        yield g


@pytest.fixture
async def client(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as c:
        yield c


def single(response: httpx.Response, name: str) -> str | None:
    values = response.headers.get_list(name)
    assert len(values) <= 1, f"{name}: {values}"
    return values[0] if values else None


async def test_preflight_is_answered_at_the_gateway_without_a_credential(
    client: httpx.AsyncClient,
) -> None:
    r = await client.options(
        "/keyed/things",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "PUT",
            "access-control-request-headers": "content-type,x-api-key",
        },
    )
    assert r.status_code == 204
    assert r.content == b""
    assert single(r, "access-control-allow-origin") == ORIGIN
    assert single(r, "access-control-allow-credentials") == "true"
    assert single(r, "access-control-allow-methods") == "GET, HEAD, PUT, PATCH, POST, DELETE"
    assert single(r, "access-control-allow-headers") == "content-type, x-api-key"
    assert single(r, "access-control-max-age") == "600"
    assert "Origin" in r.headers["vary"]
    # Answered here: the upstream (which always says x-internal) never saw it.
    assert "x-internal" not in r.headers


async def test_preflight_from_a_foreign_origin_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.options(
        "/open",
        headers={"origin": "https://example.com.evil.test", "access-control-request-method": "GET"},
    )
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert "access-control-allow-origin" not in r.headers
    assert "is not allowed" in r.json()["detail"]


async def test_a_route_without_options_cannot_be_preflighted(client: httpx.AsyncClient) -> None:
    # Documented: the router matches OPTIONS against the route's methods first.
    r = await client.options(
        "/get-only", headers={"origin": ORIGIN, "access-control-request-method": "GET"}
    )
    assert r.status_code == 404


async def test_actual_request_gets_the_grant_and_upstream_cors_is_replaced(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/open", headers={"origin": "https://a.b.example.com"})
    assert r.status_code == 200
    # The upstream said `*`; the gateway's policy (the origin, with credentials) replaces it.
    assert single(r, "access-control-allow-origin") == "https://a.b.example.com"
    assert single(r, "access-control-allow-credentials") == "true"
    assert single(r, "access-control-expose-headers") == "x-request-id"
    assert "Origin" in r.headers.get_list("vary")
    foreign = await client.get("/open", headers={"origin": "https://evil.test"})
    assert foreign.status_code == 200
    assert "access-control-allow-origin" not in foreign.headers


async def test_an_auth_refusal_carries_the_cors_grant(client: httpx.AsyncClient) -> None:
    r = await client.get("/keyed", headers={"origin": ORIGIN})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert single(r, "access-control-allow-origin") == ORIGIN
    assert single(r, "access-control-allow-credentials") == "true"
    assert single(r, "access-control-expose-headers") == "x-request-id"


@pytest.mark.parametrize(
    ("forwarded_for", "status"),
    [
        ("198.51.100.7", 200),
        ("198.51.100.66", 403),  # allowed network, denied address: deny wins
        ("203.0.113.9", 403),
        # A client prepending an allowed address: the rightmost untrusted hop counts.
        ("198.51.100.7, 203.0.113.9", 403),
        (None, 403),  # the trusted proxy itself (127.0.0.1) is not in the allow list
    ],
)
async def test_ip_restriction_sees_the_client_behind_a_trusted_proxy(
    client: httpx.AsyncClient, forwarded_for: str | None, status: int
) -> None:
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
    r = await client.get("/ip", headers=headers)
    assert r.status_code == status
    if status == 403:
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/forbidden")


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize("chunked", [False, True])
async def test_transformers_rewrite_headers_query_and_json_bodies(
    client: httpx.AsyncClient, chunked: bool
) -> None:
    sent = json.dumps({"user": "ada", "password": "hunter2", "note": "café"}).encode()
    body: Any = chunks(sent[:10], sent[10:]) if chunked else sent
    r = await client.post(
        "/transform?q=gate&x=1",
        content=body,
        headers={"content-type": "application/json", "x-remove-me": "1"},
    )
    assert r.status_code == 200
    # Response side: headers edited, JSON body edited, Content-Length matches the new body.
    assert "x-internal" not in r.headers
    assert r.headers["x-transformed"] == "1"
    assert int(r.headers["content-length"]) == len(r.content)
    seen = r.json()
    assert seen["transformed"] is True
    assert "internal" not in seen
    # Request side, as the upstream saw it: the edited body, framed by its own length.
    assert seen["query"] == "search=gate&x=1&v=2"
    received = json.loads(seen["body"])
    assert received == {"note": "café", "account": {"name": "ada"}, "meta": {"via": "gateway"}}
    upstream_headers = dict(seen["headers"])
    assert int(upstream_headers["content-length"]) == len(seen["body"].encode())
    assert "transfer-encoding" not in upstream_headers
    assert upstream_headers["x-added"] == "yes"
    assert "x-remove-me" not in upstream_headers


def raw_chunked_post(port: int, path: str, parts: list[bytes]) -> bytes:
    """POST a chunked body over a raw socket; the raw answer (the gateway may stop reading)."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # httpx gives up on a reply that arrives while it still sends: write it all at once.
        with contextlib.suppress(OSError):
            sock.sendall(head + framed)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and answer.startswith(b"HTTP/1.1 413"):
                    break
    return answer


async def test_chunked_bodies_count_against_request_size_limit(
    client: httpx.AsyncClient, gw: Gateway
) -> None:
    small = await client.post("/limited", content=chunks(b"a" * 400, b"b" * 400))
    assert small.status_code == 200
    assert len(small.json()["body"]) == 800
    big = raw_chunked_post(gw.proxy_port, "/limited", [b"x" * 400] * 10)
    status_line, _, rest = big.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Payload Too Large"
    assert b"content-type: application/problem+json" in rest.lower()
    declared = await client.post("/limited", content=b"y" * 1001)
    assert declared.status_code == 413
