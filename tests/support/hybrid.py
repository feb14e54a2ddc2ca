"""Hybrid mode under test: `portcullis serve --role control-plane` and `--role data-plane`
nodes as real processes (the supervisor, granian, the node agent) on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.servers import Gateway, free_port, stop_process, wait_for_port

# 32 characters or more: the control plane refuses a shorter token.
CLUSTER_TOKEN = "test-cluster-token-0123456789abcdef"


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "PORTCULLIS_LOG_LEVEL": "warning",
        "PORTCULLIS_SHUTDOWN_GRACE": "2",
        "PORTCULLIS_CLUSTER_TOKEN": CLUSTER_TOKEN,
        **extra,
    }


@dataclass
class Node(Gateway):
    """A `portcullis serve` process in one role (a control plane has no proxy port: 0);
    `log`: where its output goes, when not to a pipe."""

    log: Path | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log is not None else ""

    def ready(self) -> httpx.Response:
        return httpx.get(f"{self.admin_url}/health/ready", timeout=5)

    def stop(self) -> None:
        stop_process(self.process, timeout=30)


def _start(
    argv: list[str], env: dict[str, str], cwd: Path, log: Path | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "ab") if log is not None else contextlib.nullcontext() as out:
        return subprocess.Popen(
            [sys.executable, "-m", "portcullis", "serve", *argv],
            env=env,
            stdout=out if out is not None else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )


@contextmanager
def cluster_control_plane(
    tmp: Path,
    config_file: Path | None,
    extra_env: dict[str, str] | None = None,
    *,
    admin_port: int | None = None,
) -> Iterator[Node]:
    """`portcullis serve --role control-plane [--config FILE]` on the SQLite store in
    `tmp` (`admin_port`: the port of an earlier one, to start it again)."""
    admin_port = admin_port or free_port()
    env = _env(
        {
            "PORTCULLIS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'cp.db'}",
            "PORTCULLIS_READINESS_DETAILS": "public",
            "PORTCULLIS_METRICS_PUBLIC": "true",
            **(extra_env or {}),
        }
    )
    argv = ["--role", "control-plane", "--admin-port", str(admin_port)]
    if config_file is not None:
        argv += ["-c", str(config_file)]
    node = Node(0, admin_port, env["PORTCULLIS_DATABASE_URL"], _start(argv, env, tmp), env)
    try:
        wait_for_port(admin_port, node.process, timeout=120)
        yield node
    finally:
        node.stop()


@contextmanager
def data_plane_node(
    tmp: Path,
    control_plane_url: str,
    lkg_dir: Path,
    *,
    token: str = CLUSTER_TOKEN,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Node]:
    """`portcullis serve --role data-plane` (no database) taking its config from
    `control_plane_url`; yields once its proxy and status ports listen."""
    proxy_port, admin_port = free_port(), free_port()
    env = _env(
        {
            "PORTCULLIS_CONTROL_PLANE_URL": control_plane_url,
            "PORTCULLIS_CLUSTER_TOKEN": token,
            "PORTCULLIS_LKG_DIR": str(lkg_dir),
            # Nothing here may reach a database: point at one that cannot exist.
            "PORTCULLIS_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:9/none",
            "PORTCULLIS_CLUSTER_RECONNECT_MAX": "1",
            **(extra_env or {}),
        }
    )
    argv = [
        "--role", "data-plane", "--proxy-port", str(proxy_port),
        "--admin-port", str(admin_port), "--workers", str(workers),
    ]  # fmt: skip
    log = tmp / f"node-{proxy_port}.log"
    node = Node(proxy_port, admin_port, "", _start(argv, env, tmp, log), env, log)
    try:
        wait_for_port(proxy_port, node.process, timeout=120)
        wait_for_port(admin_port, node.process, timeout=120)
        yield node
    finally:
        node.stop()


def served(url: str, status: int = 200) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == status
    except httpx.TransportError:
        return False


def wait_served(url: str, status: int = 200, timeout: float = 30.0) -> float:
    """Poll `url` until it answers `status`; the seconds it took."""
    start = time.monotonic()
    while not served(url, status):
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{url} did not answer {status} within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - start
