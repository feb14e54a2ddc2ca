"""The planes `portcullis serve` runs, and the one place granian's options are chosen."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from portcullis.settings import Settings

DATA_PLANE_TARGET = "portcullis.proxy.server:create_app"
TLS_PLANE_MODULE = "portcullis.supervision.tls_plane"
CONTROL_PLANE_TARGET = "portcullis.admin.app:create_app"
NODE_AGENT_MODULE = "portcullis.supervision.node_agent"


@dataclass
class Plane:
    """One granian server process, with what the supervisor knows of its history."""

    name: str
    argv: list[str]
    host: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    # Monotonic times of the restarts within the restart window (see `Supervisor`).
    restarts: list[float] = field(default_factory=list)
    restart_due: float | None = None
    # Environment this plane's process gets on top of the supervisor's.
    env: dict[str, str] = field(default_factory=dict)


# Requests the control plane serves beside its live streams (REST, GraphQL, /metrics).
CONTROL_PLANE_REQUEST_ROOM = 1024


def control_plane_backpressure(settings: Settings) -> int:
    """How many requests the control plane's worker takes at once (granian's backpressure).

    A live stream (SSE, WebSocket) is a request that lasts as long as the client stays:
    with only `max_connections_per_worker` (8,192) slots, 8,192 dashboards would leave no
    slot for any other admin request, and `stream_max_clients` (10,000) could never be
    reached — past the slots granian stops accepting, so a client waits in the listen
    backlog instead of getting the stream cap's 503. The control plane takes every stream
    the cap allows and still has room for its other requests.
    """
    return max(
        settings.max_connections_per_worker,
        settings.stream_max_clients + CONTROL_PLANE_REQUEST_ROOM,
    )


def granian_argv(
    target: str,
    host: str,
    port: int,
    workers: int,
    settings: Settings,
    *,
    grace: float | None = None,
    backpressure: int | None = None,
) -> list[str]:
    """The command line of a plane: granian (through `plane_process`) serving `target`;
    `backpressure`: requests per worker (default `max_connections_per_worker`)."""
    grace = settings.shutdown_grace if grace is None else grace
    if backpressure is None:
        backpressure = settings.max_connections_per_worker
    return [
        sys.executable, "-m", "portcullis.supervision.plane_process",
        "--interface", "asgi", "--factory", target,
        "--host", host, "--port", str(port), "--workers", str(workers),
        "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
        "--workers-kill-timeout", str(max(1, int(grace))),
        # A worker that dies is replaced at once (granian exits instead if the same
        # worker dies twice within 5.5 s; the supervisor then restarts the plane).
        "--respawn-failed-workers",
        "--backlog", str(settings.listen_backlog),
        "--backpressure", str(backpressure),
        "--http1-header-read-timeout", str(max(1, round(settings.client_header_timeout * 1000))),
    ]  # fmt: skip


def admin_tls_argv(settings: Settings) -> list[str]:
    """granian's TLS options for the control plane (one certificate from files)."""
    if settings.admin_tls_cert_file is None or settings.admin_tls_key_file is None:
        return []
    return [
        "--ssl-certificate", str(settings.admin_tls_cert_file),
        "--ssl-keyfile", str(settings.admin_tls_key_file),
        "--ssl-protocol-min", "tls1.2",
    ]  # fmt: skip


# The data plane's silent-connection reaper watches the plain port's sockets; on the TLS
# port the servers' own handshake and idle timeouts do that (proxy/tls_server.py).
TLS_PLANE_ENV = {"PORTCULLIS_CLIENT_FIRST_BYTE_TIMEOUT": "0"}


def granian_tls_plane(settings: Settings, pem: Path) -> Plane:
    """The proxy's TLS port on granian's own TLS (docs/decisions/028, addendum): one
    certificate, `pem` holding its key and chain (granian reads the key and the
    certificates of one file alike), HTTP/2 by ALPN (`--http auto`), TLS 1.2+ (rustls:
    AEAD suites with forward secrecy only). granian reads `pem` when a worker starts; a
    new certificate is a new plane (supervision/tls_engine.py)."""
    argv = granian_argv(
        DATA_PLANE_TARGET,
        settings.proxy_host,
        settings.proxy_tls_port,
        settings.workers,
        settings,
    )
    argv += [
        "--http", "auto",
        "--ssl-certificate", str(pem), "--ssl-keyfile", str(pem),
        "--ssl-protocol-min", "tls1.2",
    ]  # fmt: skip
    return Plane(
        "TLS data plane (granian)",
        argv,
        settings.proxy_host,
        settings.proxy_tls_port,
        env=dict(TLS_PLANE_ENV),
    )


def tls_planes(settings: Settings) -> list[Plane]:
    """The proxy's TLS port on hypercorn (proxy/tls_server.py; docs/decisions/028):
    `settings.workers` single-process planes sharing the port (SO_REUSEPORT), as
    granian's workers share the plain one; each is restarted on its own."""
    argv = [
        sys.executable, "-m", TLS_PLANE_MODULE,
        "--host", settings.proxy_host, "--port", str(settings.proxy_tls_port),
    ]  # fmt: skip
    return [
        Plane(
            "TLS data plane" + (f" {i + 1}" if settings.workers > 1 else ""),
            argv,
            settings.proxy_host,
            settings.proxy_tls_port,
        )
        for i in range(settings.workers)
    ]


def gateway_planes(settings: Settings, *, tls: bool = False) -> list[Plane]:
    """The data plane (`settings.workers` workers) and the control plane (one worker),
    and with `tls` the data plane's TLS port."""
    planes = [
        Plane(
            "data plane",
            granian_argv(
                DATA_PLANE_TARGET,
                settings.proxy_host,
                settings.proxy_port,
                settings.workers,
                settings,
            ),
            settings.proxy_host,
            settings.proxy_port,
        ),
        Plane(
            "control plane",
            granian_argv(
                CONTROL_PLANE_TARGET,
                settings.admin_host,
                settings.admin_port,
                1,
                settings,
                backpressure=control_plane_backpressure(settings),
            )
            + admin_tls_argv(settings),
            settings.admin_host,
            settings.admin_port,
        ),
    ]
    if tls:
        planes += tls_planes(settings)
    return planes


def role_planes(settings: Settings) -> list[Plane]:
    """The planes of `settings.role` (docs/hybrid.md): `all` is `gateway_planes`; a
    control plane runs only the admin API; a data-plane node runs the data plane and
    its node agent (the one connection to the control plane, readiness on the admin
    port)."""
    planes = gateway_planes(settings)
    if settings.role == "control-plane":
        return planes[1:]
    if settings.role == "data-plane":
        agent = Plane(
            "node agent",
            [sys.executable, "-m", NODE_AGENT_MODULE],
            settings.admin_host,
            settings.admin_port,
        )
        return [planes[0], agent]
    return planes
