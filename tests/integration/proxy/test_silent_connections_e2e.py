"""Connections that never send a byte: 2,000 of them held open do not keep other
clients out of a one-worker gateway, and they are closed after
PORTCULLIS_CLIENT_FIRST_BYTE_TIMEOUT while connections that spoke are left alone.

Before: granian's backpressure (1024 connections per worker by default) was spent
on silent connections, after which the worker stopped accepting and every new client
waited; granian's header timeout only starts at the first byte, so they never closed.
"""

from __future__ import annotations

import http.client
import resource
import select
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import yaml

from support.servers import gateway

SILENT = 2000


def config(tmp: Path, upstream: int) -> Path:
    cfg = tmp / "gateway.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "services": [{"name": "demo", "url": f"http://127.0.0.1:{upstream}"}],
                "routes": [{"name": "demo", "service": "demo", "paths": ["/demo"]}],
            }
        )
    )
    return cfg


@contextmanager
def open_files(needed: int) -> Iterator[None]:
    """Let this process hold `needed` more descriptors for the duration."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard >= needed, f"ulimit -Hn below {needed}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def closed_by_server(socks: Iterable[socket.socket], wait: float = 0) -> set[socket.socket]:
    """Those of `socks` the server closed, waiting up to `wait` s for the first to close."""
    poller = select.poll()
    by_fd = {}
    for sock in socks:
        poller.register(sock, select.POLLIN)
        by_fd[sock.fileno()] = sock
    closed = set()
    for fd, _ in poller.poll(wait * 1000):
        sock = by_fd[fd]
        try:
            if sock.recv(1) == b"":
                closed.add(sock)
        except ConnectionResetError:
            closed.add(sock)
    return closed


def get(conn: http.client.HTTPConnection) -> int:
    conn.request("GET", "/demo/health")
    response = conn.getresponse()
    response.read()
    return response.status


def silent_connections(port: int, stack: ExitStack, count: int) -> list[socket.socket]:
    return [
        stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        for _ in range(count)
    ]


def test_two_thousand_silent_connections_do_not_keep_clients_out(
    tmp_path: Path, upstream_a: int
) -> None:
    # Long enough that none is closed by the timeout while the test runs.
    quiet = {"PORTCULLIS_CLIENT_FIRST_BYTE_TIMEOUT": "600"}
    with (
        open_files(SILENT + 512),
        gateway(tmp_path, config(tmp_path, upstream_a), extra_env=quiet) as gw,
        ExitStack() as stack,
    ):
        silent = silent_connections(gw.proxy_port, stack, SILENT)
        for _ in range(20):
            # A new connection each time: each must be accepted beside the silent ones.
            r = httpx.get(f"{gw.url}/demo/health", timeout=10)
            assert r.status_code == 200
        assert closed_by_server(silent) == set()


def test_silent_connections_are_closed_after_the_first_byte_timeout(
    tmp_path: Path, upstream_a: int
) -> None:
    timeout = 1.0
    env = {"PORTCULLIS_CLIENT_FIRST_BYTE_TIMEOUT": str(timeout)}
    with (
        open_files(SILENT + 512),
        gateway(tmp_path, config(tmp_path, upstream_a), extra_env=env) as gw,
        ExitStack() as stack,
    ):
        # A keep-alive connection that spoke once, then idles like the silent ones.
        talker = http.client.HTTPConnection("127.0.0.1", gw.proxy_port, timeout=10)
        stack.callback(talker.close)
        assert get(talker) == 200
        talker_socket = talker.sock
        assert isinstance(talker_socket, socket.socket)
        connected = time.monotonic()
        silent = silent_connections(gw.proxy_port, stack, SILENT)
        open_ = set(silent)
        deadline = time.monotonic() + 60
        while open_:
            assert time.monotonic() < deadline, f"{len(open_)} silent connections still open"
            open_ -= closed_by_server(open_, wait=0.2)
        # Closed by the server after the timeout, counted from each one's handshake.
        assert time.monotonic() - connected >= timeout
        # The talker idled as long and is still open, and served on the same connection.
        assert closed_by_server([talker_socket]) == set()
        assert get(talker) == 200
        assert talker.sock is talker_socket
