"""Broken bodies and failing upstreams through a real gateway, byte for byte.

`portcullis serve` runs in front of raw upstreams (tests/support/threaded_upstream.py)
that read requests and then misbehave exactly as told: close without answering,
never answer, cut a body short, die after reading a POST. Clients speak raw
sockets where the bytes matter (bad chunk framing). Proves:

- a request body with bad chunk framing is a 400 problem and the connection
  closes (granian's 500 before); `Transfer-Encoding: gzip, chunked` is a 501;
- a response body cut short is a 502 when nothing was sent yet, else an aborted
  client connection, never a 500 and never a clean-looking end;
- with a single target, connect refused / protocol error / read timeout are
  502 / 502 / 504 with their own problem types (not 503 no-healthy-target),
  and the request log says so;
- a POST whose bytes reached an upstream is sent exactly once, also when the
  connection was a reused one and when its target then died;
- 1,000 GETs against failing targets stay within the retry budget.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from portcullis.store.engine import sqlite_file
from support.raw_upstream import (
    RawConnection,
    RawUpstream,
    keep_alive_handler,
    refused_port,
    response,
)
from support.servers import Gateway, gateway
from support.threaded_upstream import threaded_upstream, wait_until

PROBLEMS = "https://portcullis.dev/problems/"
BUDGET_RATIO = 0.2
MIN_PER_SECOND = 10.0


async def closes_after_reading(conn: RawConnection) -> None:
    await conn.read_request()
    await conn.close()


async def never_answers(conn: RawConnection) -> None:
    await conn.read_request()
    await conn.wait_closed_by_peer()


async def short_bodies(conn: RawConnection) -> None:
    req = await conn.read_request()
    assert req is not None
    if req.target.endswith(b"/empty"):
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
    elif req.target.endswith(b"/partial"):
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")
    else:
        await conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
    await conn.close()


async def dies_on_second_request(conn: RawConnection) -> None:
    """Answers one request per connection; reads the next, then closes it unanswered."""
    await conn.read_request()
    await conn.send(response(200, b"warm"))
    await conn.read_request()
    await conn.close()


async def process_dies_on_second_request(conn: RawConnection) -> None:
    """Like `dies_on_second_request`, and the whole upstream stops listening too."""
    await conn.read_request()
    await conn.send(response(200, b"warm"))
    await conn.read_request()
    server = conn.upstream._server
    assert server is not None
    server.close()
    await conn.close()


def answer(status: int) -> Any:
    return keep_alive_handler(lambda r: response(status, b"%d" % len(r.body)))


UPSTREAMS = {
    "echo": answer(200),
    "closer": closes_after_reading,
    "silent": never_answers,
    "short": short_bodies,
    "flaky": dies_on_second_request,
    "dying": process_dies_on_second_request,
    "witness": answer(200),
    "failing-a": answer(503),
    "failing-b": answer(503),
}


NO_VERDICTS = {
    "healthchecks": {"passive": {"enabled": False}},
    "circuit_breaker": {"enabled": False},
}


def config(ports: dict[str, int], refused: int) -> dict[str, Any]:
    def url(name: str) -> str:
        return f"http://127.0.0.1:{ports[name]}"

    services: list[dict[str, Any]] = [
        {"name": "echo", "url": url("echo")},
        {"name": "refused", "url": f"http://127.0.0.1:{refused}"},
        {"name": "closer", "url": url("closer")},
        {"name": "silent", "url": url("silent"), "timeouts": {"read": 0.5}},
        {"name": "short", "url": url("short")},
        {"name": "flaky", "url": url("flaky")},
        {"name": "pair", "upstream": "pair"},
    ]
    return {
        "upstreams": [
            {
                "name": "pair",
                "algorithm": "round-robin",
                "targets": [{"target": f"127.0.0.1:{ports[n]}"} for n in ("dying", "witness")],
                **NO_VERDICTS,
            },
        ],
        "services": services,
        "routes": [
            {"name": s["name"], "service": s["name"], "paths": [f"/{s['name']}"]} for s in services
        ],
    }


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, RawUpstream]]:
    with (
        threaded_upstream(UPSTREAMS["echo"]) as echo,
        threaded_upstream(UPSTREAMS["closer"]) as closer,
        threaded_upstream(UPSTREAMS["silent"]) as silent,
        threaded_upstream(UPSTREAMS["short"]) as short,
        threaded_upstream(UPSTREAMS["flaky"]) as flaky,
        threaded_upstream(UPSTREAMS["dying"]) as dying,
        threaded_upstream(UPSTREAMS["witness"]) as witness,
        threaded_upstream(UPSTREAMS["failing-a"]) as failing_a,
        threaded_upstream(UPSTREAMS["failing-b"]) as failing_b,
    ):
        yield {
            "echo": echo,
            "closer": closer,
            "silent": silent,
            "short": short,
            "flaky": flaky,
            "dying": dying,
            "witness": witness,
            "failing-a": failing_a,
            "failing-b": failing_b,
        }


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, upstreams: dict[str, RawUpstream]
) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("failures")
    cfg = tmp / "gateway.yaml"
    ports = {name: up.port for name, up in upstreams.items()}
    cfg.write_text(yaml.safe_dump(config(ports, refused_port())))
    with gateway(tmp, cfg, extra_env={"PORTCULLIS_REQUEST_LOG_FLUSH_INTERVAL": "0.2"}) as g:
        yield g


def exchange(gw: Gateway, raw: bytes) -> tuple[bytes, bytes]:
    """Send `raw`, read until the gateway closes: (head, body). TimeoutError if it stays open."""
    with socket.create_connection(("127.0.0.1", gw.proxy_port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def problem_type(body: bytes) -> str:
    kind: str = json.loads(body)["type"]
    assert kind.startswith(PROBLEMS)
    return kind.removeprefix(PROBLEMS)


def log_rows(gw: Gateway, request_id: str) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(sqlite_file(gw.database_url))) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM request_log WHERE request_id = ?", (request_id,))
        return [dict(r) for r in rows]


# -- request bodies ------------------------------------------------------------------------

CHUNKED_POST = b"POST /echo/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "chunks",
    [
        b"-1\r\nab\r\n0\r\n\r\n",
        b"fffffffffffffffffffff\r\nab\r\n0\r\n\r\n",
        b"zz\r\nab\r\n0\r\n\r\n",
        b"2;" + b"e" * 100_000 + b"\r\nab\r\n0\r\n\r\n",
        b"2\r\nab\r\n0x3\r\nabc\r\n0\r\n\r\n",
    ],
    ids=["negative", "overflowing", "non-hex", "oversize-extension", "bad-second-chunk"],
)
def test_malformed_chunked_body_is_a_400_that_closes(gw: Gateway, chunks: bytes) -> None:
    head, body = exchange(gw, CHUNKED_POST + chunks)
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert b"connection: close" in head.lower()
    assert problem_type(body) == "invalid-request-body"


def test_gzip_transfer_coding_is_refused_not_dropped(
    gw: Gateway, upstreams: dict[str, RawUpstream]
) -> None:
    raw = (
        b"POST /echo/gzipped HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"2\r\n\x1f\x8b\r\n0\r\n\r\n"
    )
    head, body = exchange(gw, raw)
    assert head.startswith(b"HTTP/1.1 501 "), head
    assert problem_type(body) == "transfer-coding-not-implemented"
    # A marker request on the same upstream, sent after: everything before it has arrived.
    assert httpx.get(f"{gw.url}/echo/marker", timeout=10).status_code == 200
    targets = [req.target for req in upstreams["echo"].requests]
    assert b"/marker" in targets
    assert b"/gzipped" not in targets


def test_well_formed_chunked_body_still_goes_through(gw: Gateway) -> None:
    head, body = exchange(
        gw,
        b"POST /echo/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert body == b"5"


# -- response bodies cut short ---------------------------------------------------------------


def test_body_cut_before_its_first_byte_is_a_502(gw: Gateway) -> None:
    r = httpx.get(f"{gw.url}/short/empty", timeout=10)
    assert r.status_code == 502
    assert problem_type(r.content) == "upstream-protocol-error"


@pytest.mark.parametrize("path", ["/short/partial", "/short/chunked"])
def test_body_cut_midway_aborts_the_client_connection(gw: Gateway, path: str) -> None:
    head, body = exchange(gw, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    if b"content-length: 100" in head.lower():
        assert body == b"only ten b"
    else:
        # Chunked to the client too: the body must not end with the last-chunk marker.
        assert b"transfer-encoding: chunked" in head.lower()
        assert body == b"5\r\nhello\r\n"


# -- a single target: the real failure ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        ("/refused", 502, "upstream-connect-failed"),
        ("/closer", 502, "upstream-protocol-error"),
        ("/silent", 504, "upstream-timeout"),
    ],
)
def test_single_target_failure_is_answered_and_logged_as_itself(
    gw: Gateway, path: str, status: int, kind: str
) -> None:
    r = httpx.get(f"{gw.url}{path}/x", timeout=10)
    assert r.status_code == status
    assert "retry-after" not in r.headers
    assert problem_type(r.content) == kind
    rid = r.headers["x-request-id"]
    wait_until(lambda: bool(log_rows(gw, rid)))
    (row,) = log_rows(gw, rid)
    assert (row["status"], row["error_kind"]) == (status, kind)
    assert row["upstream_target"] is not None


# -- a POST that reached an upstream is sent once ---------------------------------------------


def test_post_on_a_reused_connection_that_dies_is_sent_once(
    gw: Gateway, upstreams: dict[str, RawUpstream]
) -> None:
    flaky = upstreams["flaky"]
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        assert client.get("/flaky/warm").status_code == 200
        r = client.post("/flaky/order", content=b"one order")
    assert r.status_code == 502
    assert problem_type(r.content) == "upstream-protocol-error"
    posts = [req for req in flaky.requests if req.method == "POST"]
    assert [(p.target, p.body) for p in posts] == [(b"/order", b"one order")]


def test_post_whose_target_died_is_not_sent_to_another(
    gw: Gateway, upstreams: dict[str, RawUpstream]
) -> None:
    dying, witness = upstreams["dying"], upstreams["witness"]
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        # Round-robin: one pooled connection to each target.
        assert client.get("/pair/warm").status_code == 200
        assert client.get("/pair/warm").status_code == 200
        assert dying.accepts == witness.accepts == 1
        r = client.post("/pair/order", content=b"one order")
    assert r.status_code == 502
    seen = [req.target for up in (dying, witness) for req in up.requests if req.method == "POST"]
    assert seen == [b"/order"]


# -- the retry budget ---------------------------------------------------------------------------


def test_retries_of_failing_gets_stay_within_the_budget(
    tmp_path: Path, upstreams: dict[str, RawUpstream]
) -> None:
    # Two workers, so the reserve must be the gateway's, not each worker's.
    targets = (upstreams["failing-a"], upstreams["failing-b"])
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "upstreams": [
                    {
                        "name": "failing",
                        "targets": [{"target": f"127.0.0.1:{up.port}"} for up in targets],
                        **NO_VERDICTS,
                    }
                ],
                "services": [
                    {
                        "name": "failing",
                        "upstream": "failing",
                        "retries": {
                            "budget_ratio": BUDGET_RATIO,
                            "min_per_second": MIN_PER_SECOND,
                        },
                    }
                ],
                "routes": [{"name": "failing", "service": "failing", "paths": ["/failing"]}],
            }
        )
    )
    requests = 1000
    with (
        gateway(tmp_path, cfg, workers=2) as gw,
        httpx.Client(base_url=gw.url, timeout=30, limits=httpx.Limits(max_connections=16)) as c,
    ):
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda _: c.get("/failing/x").status_code, range(requests)))
        elapsed = time.monotonic() - started
    assert statuses == [503] * requests
    attempts = sum(len(up.requests) for up in targets)
    # The ratio of the requests, plus min_per_second for each second (and one up front).
    allowed = requests * (1 + BUDGET_RATIO) + MIN_PER_SECOND * (elapsed + 1)
    assert requests * (1 + BUDGET_RATIO) <= attempts <= allowed, (attempts, elapsed)
