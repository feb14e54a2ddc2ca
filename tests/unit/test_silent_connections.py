"""The silent-connection reaper, on real sockets accepted by this process.

The reaper looks at this process's descriptors: the accepted ends of the connections
below are exactly what granian holds in a worker.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from portcullis.silent_connections import SilentConnectionReaper
from support.servers import free_port

TIMEOUT = 0.3


@pytest.fixture
def server() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock


def connect(server: socket.socket, stack: ExitStack) -> tuple[socket.socket, socket.socket]:
    """A client socket and the server's accepted end, both closed with `stack`."""
    client = stack.enter_context(socket.create_connection(server.getsockname()))
    accepted = stack.enter_context(server.accept()[0])
    return client, accepted


def closed_by_server(client: socket.socket) -> bool:
    readable, _, _ = select.select([client], [], [], 0)
    if not readable:
        return False
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        return True


def sweep_until(reaper: SilentConnectionReaper, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, "condition not reached"
        reaper.sweep()
        time.sleep(0.02)


def test_only_connections_silent_past_the_timeout_are_closed(server: socket.socket) -> None:
    port = server.getsockname()[1]
    reaper = SilentConnectionReaper(port, TIMEOUT)
    with ExitStack() as stack:
        opened = time.monotonic()
        silent = [connect(server, stack) for _ in range(5)]
        talker, talker_accepted = connect(server, stack)
        talker.sendall(b"G")
        assert talker_accepted.recv(1) == b"G"
        sweep_until(reaper, lambda: all(closed_by_server(c) for c, _ in silent))
        # The kernel counts silence from the handshake: never closed before the timeout.
        assert time.monotonic() - opened >= TIMEOUT
        # A connection that spoke once is left alone however long it idles since.
        young_client, _ = connect(server, stack)
        reaper.sweep()
        assert not closed_by_server(talker)
        assert not closed_by_server(young_client)
        assert reaper.closed_total == len(silent)
        # The listener and the client ends (other local ports) are untouched.
        assert server.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


def test_connections_to_another_port_are_not_its_business(server: socket.socket) -> None:
    reaper = SilentConnectionReaper(free_port(), TIMEOUT)
    with ExitStack() as stack:
        client, _ = connect(server, stack)
        deadline = time.monotonic() + TIMEOUT * 2
        while time.monotonic() < deadline:
            assert reaper.sweep() == 0
            time.sleep(0.05)
        assert not closed_by_server(client)


def test_the_thread_closes_them_and_stops(server: socket.socket) -> None:
    reaper = SilentConnectionReaper(server.getsockname()[1], TIMEOUT, interval=0.05)
    reaper.start()
    try:
        with ExitStack() as stack:
            client, _ = connect(server, stack)
            deadline = time.monotonic() + 10
            while not closed_by_server(client):
                assert time.monotonic() < deadline
                time.sleep(0.02)
    finally:
        reaper.stop()
    assert reaper._thread is not None
    reaper._thread.join(timeout=5)
    assert not reaper._thread.is_alive()
