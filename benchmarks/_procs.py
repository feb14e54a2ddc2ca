"""Process helpers for the benchmarks: free ports, readiness waits, nginx, clean teardown.

Every server a benchmark starts runs in its own session (process group) so that a
terminal's Ctrl-C reaches only the harness, which then stops everything in order.
Supervisors such as `portcullis serve` put their own children into further
sessions, so stopping a process also remembers and stops its whole process tree.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"


class StartupError(RuntimeError):
    """A server did not come up (exited, never listened, or never answered correctly)."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def http_get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, bytes]:
    """One plain GET to 127.0.0.1:port; returns (status, body)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def find_executable(name: str, fallback: str) -> str:
    """`name` on PATH, else the usual Debian location `fallback` (root's PATH may lack sbin)."""
    found = shutil.which(name)
    if found:
        return found
    if Path(fallback).is_file():
        return fallback
    raise StartupError(f"{name} not found on PATH or at {fallback}")


class ManagedProcess:
    """A child process in its own session whose whole process tree can be stopped.

    Output goes to `log_path` so a failed start can show why. `stop()` is safe to
    call more than once and when the process never started or already exited.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self._tree: dict[int, psutil.Process] = {}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def remember_tree(self) -> None:
        """Record the current descendants, so they are stopped even if they get orphaned."""
        if not self.alive() or self._proc is None:
            return
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self._proc.pid).children(recursive=True):
                self._tree[child.pid] = child

    def processes(self) -> list[psutil.Process]:
        """The process and all its current descendants (empty if it is not running)."""
        if not self.alive() or self._proc is None:
            return []
        try:
            leader = psutil.Process(self._proc.pid)
            return [leader, *leader.children(recursive=True)]
        except psutil.Error:
            return []

    def stop(self, grace: float = 8.0) -> None:
        """SIGTERM the process group, wait up to `grace` s, then SIGKILL whatever is left."""
        proc = self._proc
        if proc is None:
            return
        self.remember_tree()
        deadline = time.monotonic() + grace
        if proc.poll() is None:
            # The leader is unreaped, so its pid is still its process-group id.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # psutil.Process checks creation time, so a reused pid is never signalled.
        tree = list(self._tree.values())
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(tree, timeout=max(0.5, deadline - time.monotonic()))
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        self._tree.clear()


def wait_until_ready(
    proc: ManagedProcess,
    port: int,
    *,
    timeout: float = 30.0,
    expect_body: bytes | None = None,
) -> None:
    """Wait for `port` to listen and a GET / through it to return 200 (and `expect_body`).

    Raises StartupError with the process's log tail if it exits or the deadline passes.
    """
    deadline = time.monotonic() + timeout
    last = "nothing listening"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StartupError(
                f"{proc.name} exited with status {proc.returncode()} before it was ready\n"
                f"{proc.log_tail()}"
            )
        if port_open(port):
            try:
                status, body = http_get(port)
            except (OSError, http.client.HTTPException) as exc:
                last = f"GET / failed: {type(exc).__name__}: {exc}"
            else:
                if status == 200 and (expect_body is None or body == expect_body):
                    return
                last = f"GET / returned {status}: {body[:200]!r}"
        time.sleep(0.1)
    raise StartupError(f"{proc.name} not ready after {timeout:.0f}s ({last})\n{proc.log_tail()}")


_NGINX_MAIN = """\
user root;
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    default_type application/json;
{http}
}}
"""

_NGINX_ORIGIN = """\
    server {{
        listen {host}:{port};
        location / {{
            return 200 '{body}';
        }}
    }}
"""

_NGINX_PROXY = """\
    upstream origin {{
        server {host}:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""


def nginx_origin_conf(prefix: Path, port: int, body: str) -> str:
    """nginx.conf for an origin answering every request with 200 and `body` (JSON)."""
    http = _NGINX_ORIGIN.format(host=LOOPBACK, port=port, body=body)
    return _NGINX_MAIN.format(dir=prefix, http=http)


def nginx_proxy_conf(prefix: Path, port: int, upstream_port: int) -> str:
    """nginx.conf for a keep-alive reverse proxy in front of 127.0.0.1:upstream_port."""
    http = _NGINX_PROXY.format(host=LOOPBACK, port=port, upstream_port=upstream_port)
    return _NGINX_MAIN.format(dir=prefix, http=http)


def nginx_process(name: str, prefix: Path, conf: str) -> ManagedProcess:
    """An nginx (1 worker, foreground master) confined to the temp prefix dir `prefix`."""
    prefix.mkdir(parents=True, exist_ok=True)
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(conf)
    nginx = find_executable("nginx", "/usr/sbin/nginx")
    # -e: nginx would otherwise open its compiled-in error log before reading the conf.
    argv = [nginx, "-p", f"{prefix}/", "-c", str(conf_path), "-e", str(prefix / "error.log")]
    return ManagedProcess(name, argv, log_path=prefix / "stdout.log")
