"""Start real servers (granian, the portcullis CLI) as subprocesses on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from portcullis.settings import Settings
from portcullis.supervision.planes import control_plane_backpressure
from support.threaded_upstream import wait_until


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode} before listening:\n{out}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL) if _own_group(proc) else proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


def _own_group(proc: subprocess.Popen[bytes]) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return False


@contextmanager
def granian_app(
    target: str, *, env: dict[str, str] | None = None, workers: int = 1, timeout: float = 30.0
) -> Iterator[int]:
    """Serve an ASGI app factory with granian on a free port; yields the port."""
    with granian_process(target, env=env, workers=workers, timeout=timeout) as (port, _):
        yield port


@contextmanager
def granian_process(
    target: str,
    *,
    env: dict[str, str] | None = None,
    workers: int = 1,
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`granian_app` yielding the port and the granian main process as well (the leader
    of its own process group, with its workers); `extra_args` go to granian."""
    port = free_port()
    argv = [
        sys.executable, "-m", "granian", "--interface", "asgi", "--factory", target,
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--no-access-log", "--log-level", "warning", "--loop", "uvloop", *extra_args,
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port, proc, timeout)
        yield port, proc
    finally:
        stop_process(proc)


@dataclass
class Gateway:
    proxy_port: int
    admin_port: int
    database_url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `portcullis ARGS` against this gateway's store."""
        result = subprocess.run(
            [sys.executable, "-m", "portcullis", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"portcullis {' '.join(args)} failed:\n{result.stderr}")
        return result

    def wait_for_version(self, version: int, timeout: float = 10.0) -> float:
        """Poll the admin readiness endpoint until the store reports `version`; seconds taken."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            r = httpx.get(f"{self.admin_url}/health/ready", timeout=2)
            if r.status_code == 200 and r.json().get("config_version") == version:
                return time.monotonic() - start
            time.sleep(0.02)
        raise TimeoutError(f"store never reached config version {version}")

    def worker_versions(self) -> list[int]:
        """The config version each data-plane worker last reported in its heartbeat."""
        body = httpx.get(f"{self.admin_url}/health/ready", timeout=2).json()
        nodes = body["data_plane"]["nodes"] if "data_plane" in body else body.get("nodes", [])
        return [int(node["config_version"]) for node in nodes]

    def wait_for_workers_at(self, version: int, workers: int, timeout: float = 15.0) -> None:
        """Wait until `workers` heartbeats report config `version` (start the gateway with a
        short PORTCULLIS_HEARTBEAT_INTERVAL so this does not wait for the 2 s default)."""
        wait_until(lambda: self.worker_versions().count(version) >= workers, timeout)


@contextmanager
def gateway(
    tmp: Path,
    config_file: Path | None,
    *,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[Gateway]:
    """`portcullis serve` on free ports with its own SQLite store in `tmp`.

    Its readiness details are public, so tests can wait on the config version and
    workers it reports (`Gateway.wait_for_version`) without an admin credential.
    """
    proxy_port, admin_port = free_port(), free_port()
    db = f"sqlite+aiosqlite:///{tmp / 'gateway.db'}"
    env = {
        **os.environ,
        "PORTCULLIS_DATABASE_URL": db,
        "PORTCULLIS_LOG_LEVEL": "warning",
        "PORTCULLIS_SHUTDOWN_GRACE": "5",
        "PORTCULLIS_READINESS_DETAILS": "public",
        **(extra_env or {}),
    }
    argv = [
        sys.executable, "-m", "portcullis", "serve",
        "--proxy-port", str(proxy_port), "--admin-port", str(admin_port),
        "--workers", str(workers), *extra_args,
    ]  # fmt: skip
    if config_file is not None:
        argv += ["--config", str(config_file)]
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp
    )
    try:
        wait_for_port(proxy_port, proc, timeout=60)
        wait_for_port(admin_port, proc, timeout=60)
        yield Gateway(proxy_port, admin_port, db, proc, env)
    finally:
        stop_process(proc, timeout=30)


START_TIMEOUT = 120.0


@dataclass
class ControlPlane:
    port: int
    database_url: str
    # The granian main process (its process group holds the workers too).
    process: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """SIGKILL the whole control plane (granian and its workers): a node dies."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def control_plane(
    database_url: str, *, workers: int = 1, env: dict[str, str] | None = None
) -> Iterator[ControlPlane]:
    """The control plane alone (`portcullis.admin.app:create_app` under granian) on a store.

    The store must be migrated. Yields once `/health/live` answers, i.e. after the
    lifespan (signing key, bootstrap token) of a worker ran. Starting takes a while
    on a busy machine (each worker imports the whole admin app), hence the long deadline.
    """
    env = {
        "PORTCULLIS_DATABASE_URL": database_url,
        "PORTCULLIS_LOG_LEVEL": "warning",
        **(env or {}),
    }
    target = "portcullis.admin.app:create_app"
    # The request slots `portcullis serve` gives its control plane (live streams hold one).
    slots = ["--backpressure", str(control_plane_backpressure(Settings()))]
    with granian_process(
        target, env=env, workers=workers, timeout=START_TIMEOUT, extra_args=slots
    ) as (port, proc):

        def live() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2).is_success
            except httpx.TransportError:
                return False

        wait_until(live, timeout=START_TIMEOUT)
        yield ControlPlane(port, database_url, proc)


@contextmanager
def control_planes(
    database_url: str, count: int, *, env: dict[str, str] | None = None
) -> Iterator[list[ControlPlane]]:
    """`count` control-plane nodes on one store, started side by side (each start takes
    seconds of CPU: one after the other would add them up)."""
    with ExitStack() as stack, ThreadPoolExecutor(count) as pool:
        managers = [control_plane(database_url, env=env) for _ in range(count)]
        entered = [pool.submit(m.__enter__) for m in managers]
        for manager, future in zip(managers, entered, strict=True):
            if future.exception() is None:
                # Stopped on the way out, even when another node failed to start.
                stack.push(manager.__exit__)
        yield [future.result() for future in entered]
