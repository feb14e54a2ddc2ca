"""A WebSocket test upstream (the `websockets` sync server) that records every handshake.

It echoes text and binary frames. Two text commands make it end the connection the
way a test needs, after which the client must not send anything more:

- `close:<code>:<reason>`: a clean close handshake with that code and reason;
- `drop`: the TCP connection is cut without a close frame (a crash, as seen by a peer).

In a test, `ws_upstream()` runs it in a thread of the test process, so the test can
read `handshakes` (the request headers of every handshake that reached it). Run as
`python -m support.ws_upstream PORT` it serves in its own process, for tests that
kill it.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve


class WsUpstream:
    """The server and what it saw; `handshakes` is appended to by connection threads."""

    def __init__(self) -> None:
        self.handshakes: list[Headers] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()

    def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        with self._lock:
            self.handshakes.append(ws.request.headers)
            self.paths.append(ws.request.path)
        try:
            for message in ws:
                if isinstance(message, str) and message.startswith("close:"):
                    _, code, reason = message.split(":", 2)
                    ws.close(int(code), reason)
                    return
                if message == "drop":
                    ws.socket.shutdown(socket.SHUT_RDWR)
                    ws.socket.close()
                    return
                ws.send(message)
        except ConnectionClosed:
            return

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.handshakes)


def _serve(upstream: WsUpstream, port: int = 0) -> Server:
    return serve(upstream.handle, "127.0.0.1", port, subprotocols=None, compression=None)


@contextmanager
def ws_upstream() -> Iterator[tuple[WsUpstream, int]]:
    """A `WsUpstream` serving in a thread; yields it and its port."""
    upstream = WsUpstream()
    server = _serve(upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield upstream, int(server.socket.getsockname()[1])
    finally:
        server.shutdown()
        thread.join(timeout=10)


if __name__ == "__main__":
    with _serve(WsUpstream(), int(sys.argv[1])) as main_server:
        main_server.serve_forever()
