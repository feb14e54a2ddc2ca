"""Receivers for shipped request logs, each on a thread of its own: an HTTP collector
(aiohttp) and syslog over UDP and TCP, whose messages are parsed by an independent RFC
5424 parser (syslog-rfc5424-parser), with TCP framing split by RFC 6587 octet counting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from support.threaded_aiohttp import ThreadedAiohttpServer

with warnings.catch_warnings():
    # lark-parser (the parser's grammar engine) imports the deprecated sre_parse.
    warnings.simplefilter("ignore", DeprecationWarning)
    from syslog_rfc5424_parser import SyslogMessage

BOM = "\ufeff"


@dataclass
class Behaviour:
    """What the collector answers on one path: `fail` attempts get `status` (with a
    Retry-After of `retry_after` when set) before it accepts; `held` makes it wait for
    `release()` before answering."""

    fail: int = 0
    status: int = 503
    retry_after: str | None = None
    held: bool = False


@dataclass
class HttpCollector:
    """POST /<name> stores the batch (a JSON array or NDJSON) under `name`."""

    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    batches: dict[str, list[list[dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    attempts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    headers: dict[str, list[dict[str, str]]] = field(default_factory=lambda: defaultdict(list))
    server: ThreadedAiohttpServer | None = None
    _release: asyncio.Event | None = None

    def records(self, name: str) -> list[dict[str, Any]]:
        return [r for batch in list(self.batches[name]) for r in batch]

    def url(self, name: str) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}/{name}"

    def start(self) -> HttpCollector:
        self.server = ThreadedAiohttpServer(self._routes, name="http-log-collector")
        self.server.start()
        return self

    def stop(self) -> None:
        self.release()
        if self.server is not None:
            self.server.stop()

    def release(self) -> None:
        """Let held requests (and later ones) through."""
        server, event = self.server, self._release
        if server is not None and event is not None:
            server._loop.call_soon_threadsafe(event.set)

    def _routes(self, app: web.Application) -> None:
        self._release = asyncio.Event()
        app.router.add_post("/{name}", self._receive)

    async def _receive(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.attempts[name] += 1
        behaviour = self.behaviours.get(name, Behaviour())
        if behaviour.held:
            assert self._release is not None
            await self._release.wait()
        if self.attempts[name] <= behaviour.fail:
            headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else {}
            return web.Response(status=behaviour.status, headers=headers)
        text = await request.text()
        if request.content_type == "application/x-ndjson":
            batch = [json.loads(line) for line in text.splitlines()]
        else:
            batch = json.loads(text)
        self.headers[name].append(dict(request.headers))
        self.batches[name].append(batch)
        return web.Response(status=204)


def parse_syslog(message: str) -> tuple[SyslogMessage, dict[str, Any]]:
    """The parsed message and its MSG as JSON (the BOM RFC 5424 puts before UTF-8 dropped)."""
    parsed = SyslogMessage.parse(message)
    text = parsed.msg or ""
    return parsed, json.loads(text.removeprefix(BOM))


def split_octet_counted(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete `LEN SP MSG` frames (RFC 6587 §3.4.1) from `buffer`, and the rest."""
    frames: list[bytes] = []
    while True:
        space = buffer.find(b" ")
        if space <= 0:
            return frames, buffer
        length = int(buffer[:space])
        end = space + 1 + length
        if len(buffer) < end:
            return frames, buffer
        frames.append(buffer[space + 1 : end])
        buffer = buffer[end:]


class SyslogReceiver:
    """UDP and TCP syslog on 127.0.0.1 (threads of their own); `messages` in arrival order.

    `close_tcp()` closes the current TCP connections (the shipper must reconnect);
    `datagrams` keeps the raw UDP payloads (to check size caps)."""

    def __init__(self) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(0.2)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(16)
        self.tcp.settimeout(0.2)
        self.udp_port = self.udp.getsockname()[1]
        self.tcp_port = self.tcp.getsockname()[1]
        self.messages: dict[str, list[tuple[SyslogMessage, dict[str, Any]]]] = defaultdict(list)
        self.datagrams: list[bytes] = []
        self.connections = 0
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]

    def start(self) -> SyslogReceiver:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self.close_tcp()
        self.udp.close()
        self.tcp.close()

    def close_tcp(self) -> None:
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._open.clear()

    def _keep(self, transport: str, raw: bytes) -> None:
        parsed = parse_syslog(raw.decode("utf-8"))
        with self._lock:
            self.messages[transport].append(parsed)

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.udp.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.datagrams.append(data)
            self._keep("udp", data)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._open.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            frames, buffer = split_octet_counted(buffer + chunk)
            for frame in frames:
                self._keep("tcp", frame)
