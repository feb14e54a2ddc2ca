"""Helpers for tests and benchmarks of the live event streams (`GET /admin/v1/stream`):
record events as the platform does, sign an admin in, read the stream gauges the
control plane's `/metrics` serves, and open a stream on a raw socket."""

from __future__ import annotations

import asyncio
import socket
import struct

import httpx

from portcullis.events.bus import NewEvent
from portcullis.events.catalogue import EventType
from support import live_events
from support.events import sample

METRICS_TOKEN = "stream-metrics-scrape-token"
# A control plane serving thousands of stream requests from one address and caller
# (the admin rate limits would answer most of them 429) and letting the tests scrape.
PLANE_ENV = {
    "PORTCULLIS_METRICS_TOKEN": METRICS_TOKEN,
    "PORTCULLIS_ADMIN_RATE_LIMIT_PER_MINUTE": "100000000",
    "PORTCULLIS_ADMIN_RATE_LIMIT_BURST": "10000000",
    "PORTCULLIS_ADMIN_RATE_LIMIT_IP_PER_MINUTE": "100000000",
    "PORTCULLIS_ADMIN_RATE_LIMIT_IP_BURST": "10000000",
}


def key_created(i: int, organization_id: str | None = None) -> NewEvent:
    return NewEvent(
        EventType.KEY_CREATED,
        f"key:k{i}",
        sample(EventType.KEY_CREATED, key_id=f"k{i}"),
        organization_id,
    )


# One way to record events and sign in for every live-stream test (support/live_events.py).
publish = live_events.publish
signed_in = live_events.sign_in


async def stream_gauges(url: str) -> dict[str, float]:
    """The `portcullis_stream_*` and asyncio-task series of the process that answers
    `/metrics` (the control plane must run with PORTCULLIS_METRICS_TOKEN=METRICS_TOKEN)."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.get(
            "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}
        )
    assert response.status_code == 200, response.text
    values = {}
    for line in response.text.splitlines():
        if line.startswith(("portcullis_stream_", "portcullis_control_plane_")):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def request_bytes(
    port: int, token: str, query: str = "", last_event_id: str | None = None
) -> bytes:
    head = [
        f"GET /admin/v1/stream{query} HTTP/1.1",
        f"host: 127.0.0.1:{port}",
        f"authorization: Bearer {token}",
        "accept: text/event-stream",
    ]
    if last_event_id is not None:
        head.append(f"last-event-id: {last_event_id}")
    return ("\r\n".join(head) + "\r\n\r\n").encode()


async def open_raw(
    port: int, request: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Send a stream request on a raw socket; returns once the opening frame arrived
    (the status line and headers, and the `retry:` block), with what was read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        got = b""
        while b"stream open" not in got:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError(f"the server ended the stream: {got[:300]!r}")
            got += chunk
        if not got.startswith(b"HTTP/1.1 200"):
            raise AssertionError(got[:300])
    except BaseException:
        writer.close()
        raise
    return reader, writer, got


def abort(writer: asyncio.StreamWriter) -> None:
    """Close the socket abruptly: SO_LINGER 0 makes the kernel send RST, no FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def gauge_reaches(
    url: str, name: str, value: float, timeout: float = 30.0
) -> dict[str, float]:
    """Scrape until the series `name` reads `value` (AssertionError with the last
    reading after `timeout` seconds); returns that scrape."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        gauges = await stream_gauges(url)
        if gauges.get(name) == value:
            return gauges
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{name} is {gauges.get(name)}, not {value}, after {timeout} s")
        await asyncio.sleep(0.05)
