"""A real, throw-away Redis server for tests.

`running_redis()` starts `redis-server` (PATH or /usr/bin) on a free loopback port
with its working directory in a temp dir and persistence off (no RDB snapshots, no
AOF), waits until it answers PING, and on exit stops it and removes the directory.
The server is a child in the test run's process group that also gets SIGTERM if
the test process dies. `RedisServer.stop()` / `.kill()` / `.start()` let a test
take it down and bring it back on the same port (an outage and a recovery).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 20.0


class RedisUnavailable(RuntimeError):
    """redis-server is not installed."""


def find_redis_server() -> str:
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if path is None:
        raise RedisUnavailable(
            "redis-server not found (PATH, /usr/bin); install the Debian package 'redis-server'"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """A redis-server child process; `url` for clients."""

    binary: str
    root: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.root / "redis.log"

    def start(self) -> None:
        """Start (or restart) on `port` and wait until it answers PING."""
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.root),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--logfile", str(self.log_file),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log_file.read_text() if self.log_file.exists() else ""
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{log}")
            if _ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING in {START_TIMEOUT}s")

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM); kill if it hangs."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def kill(self) -> None:
        """Crash it (SIGKILL): connections drop at once, nothing is saved."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def pause(self, seconds: float) -> None:
        """Make it unresponsive (CLIENT PAUSE ALL) for a while: a slow, not a dead, Redis."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(f"CLIENT PAUSE {int(seconds * 1000)} ALL\r\n".encode())
            if not sock.recv(16).startswith(b"+OK"):
                raise RuntimeError("CLIENT PAUSE failed")


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A private redis-server for the duration of the `with` block."""
    root = Path(tempfile.mkdtemp(prefix="portcullis-redis-"))
    server = RedisServer(find_redis_server(), root, free_port())
    stopper = functools.partial(_stop_quietly, server)  # unregisters only this server
    try:
        # A port can be taken between choosing and binding it: try a few.
        for attempt in range(3):
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                server.port = free_port()
        atexit.register(stopper)
        yield server
    finally:
        stopper()
        atexit.unregister(stopper)
        shutil.rmtree(root, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies (Linux)."""
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop_quietly(server: RedisServer) -> None:
    with contextlib.suppress(Exception):
        server.stop()
