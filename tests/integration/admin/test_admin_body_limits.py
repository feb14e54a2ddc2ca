"""Request bodies in the admin API: nobody's body is read before a credential, none past a cap.

The in-process tests drive the ASGI app with a `receive` that counts what was pulled,
so "never read" and "stopped reading at the cap" are observed, not inferred. The
real-server tests send 100 MB to the control plane under granian and watch its RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi import FastAPI

from portcullis.admin.body_guard import DEFAULT_MAX_BODY_BYTES
from portcullis.admin.routers.config import MAX_DOCUMENT_BYTES
from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Permission, Role
from portcullis.store.engine import create_engine
from support.admin_session import TEST_PASSWORD_HASHER
from support.servers import free_port, stop_process, wait_for_port

PROBLEM = "application/problem+json"
MiB = 1024 * 1024


@dataclass
class Pulled:
    """What the app took from `receive`."""

    calls: int = 0
    bytes: int = 0


def counting_receive(total: int, chunk: int, pulled: Pulled) -> Any:
    """A `receive` that hands out `total` bytes of a JSON-ish body in `chunk`-sized parts."""
    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        pulled.calls += 1
        if sent >= total:
            return {"type": "http.disconnect"}
        size = min(chunk, total - sent)
        sent += size
        pulled.bytes += size
        return {"type": "http.request", "body": b" " * size, "more_body": sent < total}

    return receive


async def call_app(
    app: FastAPI,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    receive: Any,
    http_version: str = "1.1",
) -> tuple[int, dict[str, str], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": http_version,
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"admin"), *headers],
        "client": ("198.51.100.9", 40000),
        "server": ("admin", 80),
        "state": {},
    }
    status = 0
    response_headers: dict[str, str] = {}
    body = bytearray()

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers.update(
                (k.decode().lower(), v.decode()) for k, v in message.get("headers", [])
            )
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return status, response_headers, bytes(body)


async def test_anonymous_body_is_refused_without_being_read(app: FastAPI) -> None:
    for framing, version in (
        ([(b"content-length", str(100 * MiB).encode())], "1.1"),
        ([(b"transfer-encoding", b"chunked")], "1.1"),
        ([], "2"),  # an HTTP/2 stream need not announce its length
    ):
        pulled = Pulled()
        status, headers, body = await call_app(
            app,
            "POST",
            "/admin/v1/services",
            [(b"content-type", b"application/json"), *framing],
            counting_receive(100 * MiB, 64 * 1024, pulled),
            version,
        )
        assert status == 401, body
        assert headers["content-type"] == PROBLEM
        assert headers["www-authenticate"].startswith("Bearer")
        assert pulled.calls == 0


async def test_public_endpoints_still_read_their_bodies(anonymous: httpx.AsyncClient) -> None:
    login = await anonymous.post(
        "/admin/v1/auth/login", json={"email": "nobody@example.com", "password": "wrong"}
    )
    assert login.status_code == 401
    assert login.json()["detail"] == "invalid email or password"


async def test_authenticated_body_over_the_cap_is_413_naming_the_limit(
    app: FastAPI, owner: httpx.AsyncClient
) -> None:
    token = owner.headers["authorization"].encode()
    declared = [(b"content-length", str(DEFAULT_MAX_BODY_BYTES + 1).encode())]
    pulled = Pulled()
    status, headers, body = await call_app(
        app,
        "POST",
        "/admin/v1/services",
        [(b"authorization", token), (b"content-type", b"application/json"), *declared],
        counting_receive(DEFAULT_MAX_BODY_BYTES + 1, 64 * 1024, pulled),
    )
    assert status == 413
    assert headers["content-type"] == PROBLEM
    problem = json.loads(body)
    assert problem["max_body_bytes"] == DEFAULT_MAX_BODY_BYTES
    assert str(DEFAULT_MAX_BODY_BYTES) in problem["detail"]
    assert pulled.calls == 0  # a declared length over the cap is refused up front

    # Chunked: read while streaming, and stopped at the cap (not read to the end first).
    pulled = Pulled()
    status, headers, body = await call_app(
        app,
        "POST",
        "/admin/v1/services",
        [
            (b"authorization", token),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
        ],
        counting_receive(100 * MiB, 64 * 1024, pulled),
    )
    assert status == 413, body
    assert json.loads(body)["max_body_bytes"] == DEFAULT_MAX_BODY_BYTES
    assert pulled.bytes <= DEFAULT_MAX_BODY_BYTES + 64 * 1024

    pulled = Pulled()
    status, _, body = await call_app(
        app,
        "POST",
        "/admin/v1/services",
        [(b"authorization", token), (b"content-type", b"application/json")],
        counting_receive(100 * MiB, 64 * 1024, pulled),
        "2",
    )
    assert status == 413, body
    assert pulled.bytes <= DEFAULT_MAX_BODY_BYTES + 64 * 1024


async def test_idempotent_post_is_capped_too(app: FastAPI, owner: httpx.AsyncClient) -> None:
    # The Idempotency-Key middleware reads the body itself, before any endpoint does.
    pulled = Pulled()
    status, _, body = await call_app(
        app,
        "POST",
        "/admin/v1/services",
        [
            (b"authorization", owner.headers["authorization"].encode()),
            (b"content-type", b"application/json"),
            (b"idempotency-key", b"big-one"),
            (b"transfer-encoding", b"chunked"),
        ],
        counting_receive(100 * MiB, 64 * 1024, pulled),
    )
    assert status == 413, body
    assert pulled.bytes <= DEFAULT_MAX_BODY_BYTES + 64 * 1024


async def test_config_import_has_a_larger_cap(owner: httpx.AsyncClient) -> None:
    # Over the default cap, under the import's: accepted (and validated).
    services = [
        {"name": f"s{i}", "url": "http://127.0.0.1:9000", "tags": ["x" * 60] * 8}
        for i in range(2000)
    ]
    document = json.dumps({"services": services}).encode()
    assert DEFAULT_MAX_BODY_BYTES < len(document) < MAX_DOCUMENT_BYTES
    applied = await owner.put(
        "/admin/v1/config", content=document, headers={"content-type": "application/json"}
    )
    assert applied.status_code == 200, applied.text
    too_big = await owner.put(
        "/admin/v1/config",
        content=b" " * (MAX_DOCUMENT_BYTES + 1),
        headers={"content-type": "application/json"},
    )
    assert too_big.status_code == 413
    assert too_big.json()["max_body_bytes"] == MAX_DOCUMENT_BYTES


# ---------------------------------------------------------------------------- real server


@dataclass
class AdminServer:
    port: int
    process: subprocess.Popen[bytes]
    api_token: str

    def rss(self) -> int:
        """Resident memory of the granian workers (the processes that run the app)."""
        workers = psutil.Process(self.process.pid).children(recursive=True)
        assert workers, "granian has no worker process"
        return sum(p.memory_info().rss for p in workers)


@pytest.fixture
def admin_server(database_url: str, tmp_path: Path) -> Iterator[AdminServer]:
    async def prepare() -> str:
        engine = create_engine(database_url)
        try:
            auth = AuthService(engine, hasher=TEST_PASSWORD_HASHER)
            user = await auth.create_user("owner@example.com", "x" * 16, Role.OWNER)
            _, token = await auth.create_api_token(
                user.id, "limits", frozenset({Permission.CONFIG_WRITE}), None
            )
        finally:
            await engine.dispose()
        return token

    token = asyncio.run(prepare())
    port = free_port()
    argv = [
        sys.executable, "-m", "granian", "--interface", "asgi", "--factory",
        "portcullis.admin.app:create_app", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--no-access-log", "--log-level", "warning", "--loop", "uvloop",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PORTCULLIS_DATABASE_URL": database_url,
        "PORTCULLIS_SECRET_KEY_FILE": str(tmp_path / "secret.key"),
        "PORTCULLIS_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port, proc, timeout=90)
        assert httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=5).status_code == 200
        yield AdminServer(port, proc, token)
    finally:
        stop_process(proc)
        # A worker whose main process was stopped while starting up outlives it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def send_big_body(
    port: int, headers: dict[str, str], size: int, *, chunked: bool, deadline: float
) -> tuple[int, float]:
    """POST `size` bytes; stop sending once the server answers or hangs up.

    Returns the response status and the seconds it took to arrive.
    """
    head = ["POST /admin/v1/services HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    piece = b'{"name": "' + b"x" * (256 * 1024) + b'"}'
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=deadline) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sent = 0
        answer = b""
        while not answer.startswith(b"HTTP/1.1 ") or b"\r\n" not in answer:
            assert time.monotonic() - start < deadline, f"no answer after sending {sent} bytes"
            readable, writable, _ = select.select([sock], [sock] if sent < size else [], [], 1)
            if readable:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
                continue
            if writable:
                part = piece[: size - sent]
                frame = f"{len(part):x}\r\n".encode() + part + b"\r\n" if chunked else part
                if sent + len(part) >= size and chunked:
                    frame += b"0\r\n\r\n"
                try:
                    sock.sendall(frame)
                except (BrokenPipeError, ConnectionResetError):
                    # The server answered and closed; the answer is waiting to be read.
                    sent = size
                    continue
                sent += len(part)
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1]), time.monotonic() - start


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_anonymous_100_mb_bodies_do_not_grow_the_control_plane(
    admin_server: AdminServer, chunked: bool
) -> None:
    before = admin_server.rss()
    for _ in range(3):
        status, took = send_big_body(
            admin_server.port,
            {"Content-Type": "application/json"},
            100 * MiB,
            chunked=chunked,
            deadline=30,
        )
        assert status == 401
        assert took < 5
    grown = admin_server.rss() - before
    assert grown < 50 * MiB, f"RSS grew by {grown / MiB:.0f} MiB"


def test_authenticated_100_mb_body_is_413_and_does_not_grow_the_control_plane(
    admin_server: AdminServer,
) -> None:
    before = admin_server.rss()
    for chunked in (False, True):
        status, took = send_big_body(
            admin_server.port,
            {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {admin_server.api_token}",
            },
            100 * MiB,
            chunked=chunked,
            deadline=30,
        )
        assert status == 413
        assert took < 5
    grown = admin_server.rss() - before
    assert grown < 50 * MiB, f"RSS grew by {grown / MiB:.0f} MiB"
