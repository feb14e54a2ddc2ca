"""The process tree of a gateway (`portcullis serve` → planes → granian workers)."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from typing import TypeVar

import psutil

from portcullis.supervision.planes import CONTROL_PLANE_TARGET, DATA_PLANE_TARGET
from support.servers import Gateway

T = TypeVar("T")


def plane_process(gw: Gateway, target: str) -> psutil.Process:
    """The granian main process of the plane serving `target` (a child of `portcullis serve`)."""
    for child in psutil.Process(gw.process.pid).children():
        if target in child.cmdline():
            return child
    raise LookupError(f"no plane serving {target}")


def data_plane(gw: Gateway) -> psutil.Process:
    return plane_process(gw, DATA_PLANE_TARGET)


def control_plane(gw: Gateway) -> psutil.Process:
    return plane_process(gw, CONTROL_PLANE_TARGET)


def listens_on(process: psutil.Process, port: int) -> bool:
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr.port == port
        for c in process.net_connections(kind="tcp")
    )


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    """Poll `probe` until it returns something truthy (errors count as not yet); that value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except (psutil.Error, LookupError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def wait_for_output(gw: Gateway, text: str, timeout: float = 60) -> str:
    """Read the gateway's output until `text` appears; what was read (the rest stays unread).

    The supervisor's banner says it is past start-up: a plane that dies before that
    counts as failing to start, not as a crash to restart.
    """
    stdout = gw.process.stdout
    assert stdout is not None
    fd = stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{text!r} not in the output within {timeout} s: {seen[-500:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError(f"the gateway exited before printing {text!r}: {seen[-500:]!r}")
            seen += chunk
    return seen.decode(errors="replace")
