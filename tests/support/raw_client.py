"""A raw-socket HTTP/1.1 client: send exactly these bytes, parse exactly what comes back.

For probes no well-behaved client library would send (smuggling, malformed framing,
pipelining): the test writes bytes, reads responses one by one (framed per RFC 9112
§6.3, knowing which requests were HEAD) and can ask whether the server closed the
connection afterwards.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

__all__ = ["RawClient", "RawResponse", "ServerClosed", "exchange", "one_response"]

_NO_BODY = frozenset({204, 304})


class ServerClosed(Exception):
    """The server closed the connection before a whole response arrived."""

    def __init__(self, partial: bytes) -> None:
        super().__init__(f"connection closed after {len(partial)} bytes: {partial[:200]!r}")
        self.partial = partial


@dataclass
class RawResponse:
    status: int
    reason: bytes
    # Names lowercased; order and duplicates kept.
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw_head: bytes
    # Interim (1xx) responses that came before this one, by status.
    interim: list[int] = field(default_factory=list)

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def header_list(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]

    def json(self) -> Any:
        return json.loads(self.body)


class RawClient:
    """One TCP connection to 127.0.0.1:`port`."""

    def __init__(self, port: int, *, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self._buf = b""
        self._eof = False

    def __enter__(self) -> RawClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        """Read more bytes into the buffer; False at end of stream."""
        if self._eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def _take_until(self, sep: bytes) -> bytes:
        while (i := self._buf.find(sep)) < 0:
            if not self._fill():
                raise ServerClosed(self._buf)
        out, self._buf = self._buf[:i], self._buf[i + len(sep) :]
        return out

    def _take(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill():
                raise ServerClosed(self._buf)
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def read_response(self, *, head: bool = False) -> RawResponse:
        """Read one final response; `head=True` when it answers a HEAD request."""
        interim: list[int] = []
        while True:
            raw_head = self._take_until(b"\r\n\r\n")
            lines = raw_head.split(b"\r\n")
            version, _, rest = lines[0].partition(b" ")
            code, _, reason = rest.partition(b" ")
            assert version == b"HTTP/1.1", f"status line {lines[0]!r}"
            status = int(code)
            headers = []
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                assert sep, f"response header line without a colon: {line!r}"
                assert name == name.strip(), f"whitespace around a response header name: {line!r}"
                headers.append((name.lower(), value.strip()))
            if 100 <= status < 200 and status != 101:
                interim.append(status)
                continue
            break
        resp = RawResponse(status, reason, headers, b"", raw_head, interim)
        if head or status in _NO_BODY or status == 101:
            return resp
        te = resp.header(b"transfer-encoding")
        length = resp.header(b"content-length")
        if te is not None:
            assert te.lower() == b"chunked", f"transfer-encoding {te!r}"
            parts = []
            while True:
                size = int(self._take_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    while self._take_until(b"\r\n"):
                        pass
                    break
                parts.append(self._take(size))
                assert self._take(2) == b"\r\n", "chunk data not followed by CRLF"
            resp.body = b"".join(parts)
        elif length is not None:
            resp.body = self._take(int(length))
        else:
            while self._fill():
                pass
            resp.body, self._buf = self._buf, b""
        return resp

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection (EOF/RST) within `timeout` and sent
        nothing more; False if it stays open or more bytes arrive."""
        if self._buf:
            return False
        self.sock.settimeout(timeout)
        try:
            return not self._fill()
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(self.timeout)

    @property
    def leftover(self) -> bytes:
        """Bytes received but not yet consumed by `read_response`."""
        return self._buf


def exchange(port: int, data: bytes, *, head: bool = False) -> tuple[RawResponse, bool]:
    """Send `data` on a new connection; the first response and whether the server then
    closed the connection (waiting up to 1 s for it)."""
    with RawClient(port) as client:
        client.send(data)
        resp = client.read_response(head=head)
        return resp, client.closed_by_peer(timeout=1.0)


def one_response(port: int, data: bytes, *, head: bool = False) -> RawResponse:
    """Send `data` on a new connection and read the first response."""
    with RawClient(port) as client:
        client.send(data)
        return client.read_response(head=head)
