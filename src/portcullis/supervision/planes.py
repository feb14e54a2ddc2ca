"""The planes `portcullis serve` runs, and the one place granian's options are chosen."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

from portcullis.settings import Settings

DATA_PLANE_TARGET = "portcullis.proxy.server:create_app"
CONTROL_PLANE_TARGET = "portcullis.admin.app:create_app"


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


def granian_argv(
    target: str,
    host: str,
    port: int,
    workers: int,
    settings: Settings,
    *,
    grace: float | None = None,
) -> list[str]:
    """The command line of a plane: granian (through `plane_process`) serving `target`."""
    grace = settings.shutdown_grace if grace is None else grace
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
        "--backpressure", str(settings.max_connections_per_worker),
        "--http1-header-read-timeout", str(max(1, round(settings.client_header_timeout * 1000))),
    ]  # fmt: skip


def gateway_planes(settings: Settings) -> list[Plane]:
    """The data plane (`settings.workers` workers) and the control plane (one worker)."""
    return [
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
                CONTROL_PLANE_TARGET, settings.admin_host, settings.admin_port, 1, settings
            ),
            settings.admin_host,
            settings.admin_port,
        ),
    ]
