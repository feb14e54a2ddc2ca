"""Close client connections that never send a byte.

granian times out a request's headers only from their first byte (and a keep-alive
connection's idle time between requests): a connection that is opened and stays silent
is held forever, and each holds one of the worker's `max_connections_per_worker`
slots, so enough of them stop a worker from accepting anyone
(docs/decisions/005-silent-connections.md).

granian owns its sockets (in Rust); the ASGI app never sees a connection before a
request on it. The worker's own file-descriptor table does show them: a thread looks,
every `interval` seconds, at each TCP socket whose local port is the served port, asks
the kernel (TCP_INFO) how many bytes it ever received and how long ago it received
any, and shuts down those that received nothing for `timeout` seconds. `shutdown(2)`
on a duplicate descriptor acts on the socket, not on granian's descriptor: granian
reads end-of-file and closes the connection as if the client had left. A socket that
has received one byte is never silent again, so it is remembered and skipped.

Linux only (/proc/self/fd; tcpi_bytes_received needs Linux 4.1); elsewhere `start`
logs that it cannot and returns.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import sys
import threading
import time

import structlog

log = structlog.get_logger(__name__)

FD_DIR = "/proc/self/fd"
# struct tcp_info (linux/tcp.h): u32 tcpi_last_data_recv (ms) at 52, u64
# tcpi_bytes_received at 128; the struct is at least 136 bytes long since Linux 4.1.
TCP_INFO_LEN = 136
_LAST_DATA_RECV = struct.Struct("=I")
_BYTES_RECEIVED = struct.Struct("=Q")
TCP_ESTABLISHED = 1


def supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "TCP_INFO")


class SilentConnectionReaper:
    """Shuts down connections to `port` in this process that stayed silent for `timeout` s."""

    def __init__(self, port: int, timeout: float, *, interval: float | None = None) -> None:
        self.port = port
        self.timeout_ms = timeout * 1000
        # Closed between `timeout` and `timeout + interval` seconds after they connected.
        self.interval = interval if interval is not None else min(1.0, max(0.05, timeout / 4))
        self.closed_total = 0
        # By socket inode (unique per socket, unlike descriptor numbers): sockets never
        # to look at again (listeners, upstream connections, clients that spoke,
        # connections already shut down), and silent ones with the time they are due,
        # so each socket is inspected about twice in its life, not at every sweep.
        self._skip: set[int] = set()
        self._due: dict[int, float] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> int:
        """One pass over this process's descriptors; returns how many connections it closed."""
        try:
            names = os.listdir(FD_DIR)
        except OSError:
            return 0
        before = self.closed_total
        now = time.monotonic()
        present: set[int] = set()
        for name in names:
            fd = int(name)
            try:
                mode, inode = os.fstat(fd)[:2]
            except OSError:
                continue  # closed since the listing
            if not stat.S_ISSOCK(mode):
                continue
            present.add(inode)
            if inode in self._skip or now < self._due.get(inode, now):
                continue
            wait = self._inspect(fd)
            if wait is None:
                self._skip.add(inode)
                self._due.pop(inode, None)
            else:
                self._due[inode] = now + wait
        self._skip &= present
        for gone in self._due.keys() - present:
            del self._due[gone]
        return self.closed_total - before

    def _inspect(self, fd: int) -> float | None:
        """Seconds until the socket on `fd` is due for another look; None: never again."""
        try:
            dup = os.dup(fd)
        except OSError:
            return 0.0  # closed since the listing
        # Family, type and protocol given, so the socket module does not probe them;
        # a socket that is not TCP fails TCP_INFO below.
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno=dup)
        except OSError:
            os.close(dup)
            return None
        with sock:
            try:
                address = sock.getsockname()
                if not isinstance(address, tuple) or address[1] != self.port:
                    return None
                info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
            except OSError:
                return None
            if (
                len(info) < TCP_INFO_LEN
                or info[0] != TCP_ESTABLISHED  # a listener, or a connection on its way out
                or _BYTES_RECEIVED.unpack_from(info, 128)[0]
            ):
                return None
            silent_ms: int = _LAST_DATA_RECV.unpack_from(info, 52)[0]
            if silent_ms < self.timeout_ms:
                return (self.timeout_ms - silent_ms) / 1000
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                return None
        self.closed_total += 1
        # Never again: granian may not have dropped the descriptor yet.
        return None

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                closed = self.sweep()
            except Exception:
                log.exception("silent_connections.sweep_failed")
                continue
            if closed:
                log.info(
                    "silent_connections.closed",
                    count=closed,
                    after_seconds=self.timeout_ms / 1000,
                    port=self.port,
                )

    def start(self) -> None:
        if not supported():
            log.warning("silent_connections.unsupported", platform=sys.platform)
            return
        self._thread = threading.Thread(
            target=self._run, name="silent-connection-reaper", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
