"""The data plane end to end: real granian gateway, real granian upstreams, real sockets."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from support.servers import Gateway

PROBLEM = "application/problem+json"


@pytest.fixture
def client(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        yield c


def echo_headers(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return dict(response.json()["headers"])


def test_routes_to_upstream_and_adds_gateway_headers(client: httpx.Client) -> None:
    r = client.get("/demo/items")
    assert r.status_code == 200
    assert [i["name"] for i in r.json()][:2] == ["portcullis", "drawbridge"]
    assert r.headers["via"].endswith("1.1 portcullis")
    assert len(r.headers["x-request-id"]) == 32


def test_unknown_route_is_a_404_problem(client: httpx.Client) -> None:
    r = client.get("/nowhere", headers={"x-request-id": "abc-123"})
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["type"] == "https://portcullis.dev/problems/route-not-found"
    assert body["status"] == 404
    assert body["request_id"] == "abc-123"
    assert r.headers["x-request-id"] == "abc-123"


def test_strip_path_and_service_base_path(client: httpx.Client) -> None:
    assert client.get("/demo/echo").json()["path"] == "/echo"
    r = client.get("/v1/anything/here?x=1&y=%20")
    assert r.json()["path"] == "/echo/anything/here"
    assert r.json()["query"] == "x=1&y=%20"


def test_exact_and_regex_routes(client: httpx.Client) -> None:
    assert client.get("/echo").json()["path"] == "/echo"
    assert client.get("/echo/more").status_code == 404
    assert client.get("/items/2").json()["name"] == "drawbridge"
    assert client.get("/items/x").status_code == 404


def test_percent_encoding_is_preserved(client: httpx.Client) -> None:
    # Reserved and other characters stay encoded; escapes of unreserved ones are
    # decoded and hex is upper-cased (RFC 3986 §6.2.2); see proxy/target.py.
    body = client.get("/demo/echo/a%3Bb%20c%3f%7E%c3%a9").json()
    assert body["raw_path"] == "/echo/a%3Bb%20c%3F~%C3%A9"


def test_encoded_slashes_are_refused_by_default(client: httpx.Client) -> None:
    assert client.get("/demo/echo/a%2Fb").status_code == 400


def test_forwarding_headers(client: httpx.Client, gw: Gateway) -> None:
    h = echo_headers(client.get("/demo/echo", headers={"x-forwarded-for": "6.6.6.6"}))
    # The test client is not a trusted proxy: its X-Forwarded-For is replaced, not appended.
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"] == f"127.0.0.1:{gw.proxy_port}"
    assert h["forwarded"] == f'for=127.0.0.1;proto=http;host="127.0.0.1:{gw.proxy_port}"'
    assert h["via"] == "1.1 portcullis"
    assert h["host"] != f"127.0.0.1:{gw.proxy_port}"


def test_preserve_host(client: httpx.Client) -> None:
    h = echo_headers(client.get("/keep-host/echo", headers={"host": "api.example.test"}))
    assert h["host"] == "api.example.test"


def test_hop_by_hop_headers_are_stripped(client: httpx.Client) -> None:
    h = echo_headers(
        client.get(
            "/demo/echo",
            headers={
                "connection": "keep-alive, x-private",
                "x-private": "secret",
                "keep-alive": "timeout=5",
                "proxy-authorization": "Basic Zm9vOmJhcg==",
                "te": "trailers",
                "x-kept": "yes",
            },
        )
    )
    for name in ("x-private", "keep-alive", "proxy-authorization", "te"):
        assert name not in h
    assert h["x-kept"] == "yes"


def test_request_id_and_traceparent_propagate(client: httpx.Client) -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = client.get("/demo/echo", headers={"x-request-id": "req-42", "traceparent": tp})
    h = echo_headers(r)
    assert h["x-request-id"] == "req-42"
    assert r.headers["x-request-id"] == "req-42"
    assert h["traceparent"] == tp


def test_traceparent_generated_when_absent_or_invalid(client: httpx.Client) -> None:
    r = client.get("/demo/echo", headers={"traceparent": "garbage"})
    tp = echo_headers(r)["traceparent"]
    version, trace_id, span_id, flags = tp.split("-")
    assert (version, len(trace_id), len(span_id), flags) == ("00", 32, 16, "00")
    assert trace_id == r.headers["x-request-id"]


def test_head_204_304(client: httpx.Client) -> None:
    r = client.head("/demo/items")
    assert r.status_code == 200
    assert r.content == b""
    assert int(r.headers["content-length"]) == len(client.get("/demo/items").content)
    assert client.get("/demo/status/204").status_code == 204
    r = client.get("/demo/status/304")
    assert r.status_code == 304
    assert r.content == b""


def test_chunked_request_body_streams_through(client: httpx.Client) -> None:
    def gen() -> Iterator[bytes]:
        for _ in range(100):
            yield b"y" * 10_000

    r = client.post("/demo/sink", content=gen())
    assert r.json() == {"received": 1_000_000}


def test_content_length_body_and_post(client: httpx.Client) -> None:
    r = client.post("/demo/items", json={"name": "moat", "price": 3})
    assert r.status_code == 201
    assert r.json()["name"] == "moat"
    assert client.post("/demo/sink", content=b"z" * 200_000).json() == {"received": 200_000}


def test_streamed_response(client: httpx.Client) -> None:
    with client.stream("GET", "/demo/stream/50?size=65536") as r:
        total = sum(len(c) for c in r.iter_bytes())
    assert total == 50 * 65536


def test_request_size_limit_plugin(client: httpx.Client) -> None:
    r = client.post("/limited/sink", content=b"x" * 1001)
    assert r.status_code == 413
    assert r.json()["type"] == "https://portcullis.dev/problems/payload-too-large"
    assert client.post("/limited/sink", content=b"x" * 1000).json() == {"received": 1000}


def test_oversized_headers_431(client: httpx.Client) -> None:
    r = client.get("/demo/echo", headers={f"x-big-{i}": "v" * 1000 for i in range(20)})
    assert r.status_code == 431


def test_uri_too_long_414(client: httpx.Client) -> None:
    r = client.get("/demo/echo?q=" + "a" * 9000)
    assert r.status_code == 414


def test_content_length_with_chunked_cannot_desync(gw: Gateway) -> None:
    # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, the Content-Length is
    # dropped and the connection closed after the response, so no second request can hide
    # in the body. granian enforces this before the ASGI app sees the request.
    raw = (
        b"POST /demo/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        b"GET /demo/items HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gw.proxy_port), timeout=5) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in head.lower()
    echoed = json.loads(body)
    assert echoed["body_bytes"] == 0
    assert (
        "content-length" not in {k for k, _ in echoed["headers"]}
        or dict(echoed["headers"])["content-length"] == "0"
    )
    assert data.count(b"HTTP/1.1 ") == 1


def test_upstream_connect_failure_is_502_problem(client: httpx.Client) -> None:
    r = client.get("/dead-url/x")
    assert r.status_code == 502
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == "https://portcullis.dev/problems/upstream-connect-failed"


def test_upstream_timeout_is_504_problem(client: httpx.Client) -> None:
    r = client.get("/slow/delay/2")
    assert r.status_code == 504
    assert r.json()["type"] == "https://portcullis.dev/problems/upstream-timeout"


def test_retry_moves_to_a_live_target(client: httpx.Client) -> None:
    # One of the two targets refuses connections; every GET still succeeds via a retry.
    for _ in range(10):
        assert client.get("/retrying/items").status_code == 200


def test_circuit_opens_after_failures(client: httpx.Client) -> None:
    kinds = [client.get("/dead/x").json()["type"].rsplit("/", 1)[1] for _ in range(6)]
    assert kinds[0] == "upstream-connect-failed"
    assert kinds[-1] == "circuit-open"
    r = client.get("/dead/x")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"


def test_round_robin_across_targets(client: httpx.Client) -> None:
    seen = [client.get("/pair/health").headers["x-upstream-instance"] for _ in range(10)]
    assert seen.count("a") == 5
    assert seen.count("b") == 5


def test_upstream_errors_pass_through(client: httpx.Client) -> None:
    r = client.get("/demo/items/999")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert json.loads(r.content)["detail"] == "item 999 not found"
