"""A raw HTTP/2 (h2c, prior knowledge) client on the `h2` library with validation off.

For requests httpx would never send: duplicate or misplaced pseudo-headers,
connection-specific fields, CR/LF in values, DATA that disagrees with
content-length. `h2_request` sends one request on a new connection and reports what
the server did with it: a response, a stream reset, or a GOAWAY.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

__all__ = ["H2Result", "h2_request"]

Headers = Sequence[tuple[bytes, bytes]]


@dataclass
class H2Result:
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    # The RST_STREAM error code, if the server reset the stream.
    reset: int | None = None
    # The GOAWAY error code, if the server ended the connection.
    goaway: int | None = None

    @property
    def refused(self) -> bool:
        """The request was not answered with a response: reset or connection ended."""
        return self.status is None and (self.reset is not None or self.goaway is not None)

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None


def h2_request(
    port: int,
    headers: Headers,
    data: Sequence[bytes] = (),
    *,
    timeout: float = 10.0,
) -> H2Result:
    """Send HEADERS, then each of `data` as DATA (the last ending the stream), as flow
    control allows; stop at the response's end, a reset or a GOAWAY."""
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
        split_outbound_cookies=False,
    )
    conn = h2.connection.H2Connection(config)
    result = H2Result()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        conn.initiate_connection()
        conn.send_headers(1, list(headers), end_stream=not data)
        sock.sendall(conn.data_to_send())
        pending = [bytes(chunk) for chunk in data]
        body = bytearray()
        done = False
        while not done:
            # Send what flow control allows; the rest waits for WINDOW_UPDATE frames.
            while pending and not done:
                window = min(conn.local_flow_control_window(1), conn.max_outbound_frame_size)
                if window <= 0 and pending[0]:
                    break
                chunk = pending[0][:window]
                pending[0] = pending[0][len(chunk) :]
                last = not pending[0] and len(pending) == 1
                conn.send_data(1, chunk, end_stream=last)
                if not pending[0]:
                    pending.pop(0)
                sock.sendall(conn.data_to_send())
            try:
                received = sock.recv(65536)
            except ConnectionResetError:
                received = b""
            if not received:
                break
            for event in conn.receive_data(received):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
                    result.headers = [(bytes(n), bytes(v)) for n, v in event.headers]
                    status = result.header(b":status")
                    result.status = int(status) if status is not None else None
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == 1:
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == 1:
                    done = True
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == 1:
                    result.reset = int(event.error_code or 0)
                    done = True
                elif isinstance(event, h2.events.ConnectionTerminated):
                    result.goaway = int(event.error_code or 0)
                    done = True
            if not done:
                sock.sendall(conn.data_to_send())
        result.body = bytes(body)
    return result
