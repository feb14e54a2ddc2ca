"""Run the planes, restart one that dies, and stop them all on SIGINT/SIGTERM.

Each plane is restarted on its own: the other keeps serving. A restart waits a
backoff (0.5 s, doubling up to 10 s); a plane that needed `plane_restart_limit`
restarts within `plane_restart_window` seconds is crash-looping, and the supervisor
then stops everything and exits 1 with a message that says so. A plane that dies
before every plane first listened is a start-up failure, not a crash: nothing is
restarted and the exit is immediate. Granian workers are respawned by granian itself
(`--respawn-failed-workers`); the supervisor only sees a plane die.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from rich.console import Console
from rich.panel import Panel

from portcullis.settings import Settings
from portcullis.supervision.lifeline import SUPERVISOR_PID_ENV, raise_open_files_limit
from portcullis.supervision.planes import Plane

if TYPE_CHECKING:
    from portcullis.supervision.tls_engine import TlsControl

console = Console(stderr=True)
POLL_INTERVAL = 0.1
FIRST_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 10.0
START_TIMEOUT = 30.0


def restart_delay(recent_restarts: int) -> float:
    """Seconds to wait before a restart, given the restarts already in the window."""
    return float(min(MAX_RESTART_DELAY, FIRST_RESTART_DELAY * 2**recent_restarts))


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Supervisor:
    """Keeps `planes` running until a stop signal or a crash loop; `run` returns the exit code."""

    def __init__(
        self,
        planes: list[Plane],
        settings: Settings,
        env: Mapping[str, str],
        tls: TlsControl | None = None,
    ) -> None:
        self.planes = planes + (tls.planes if tls else [])
        self.tls = tls
        self.settings = settings
        self.env = {**env, SUPERVISOR_PID_ENV: str(os.getpid())}
        self.stop_signal = 0

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop_signal = signum

    def _start(self, plane: Plane) -> None:
        # A new session so a terminal's Ctrl-C reaches only us; we forward it.
        env = {**self.env, **plane.env} if plane.env else self.env
        plane.process = subprocess.Popen(plane.argv, env=env, start_new_session=True)

    def start_plane(self, plane: Plane) -> None:
        self._start(plane)

    def stop_plane(self, plane: Plane) -> None:
        """Ask `plane` to stop gracefully (it is no longer watched or restarted)."""
        if plane.process is not None and plane.process.poll() is None:
            plane.process.send_signal(signal.SIGTERM)

    def replace_planes(self, old: list[Plane], new: list[Plane]) -> None:
        self.planes = [p for p in self.planes if p not in old] + new

    def _wait_until_listening(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while not all(_port_open(p.host, p.port) for p in self.planes):
            if self.stop_signal:
                return False
            for plane in self.planes:
                if plane.process is not None and plane.process.poll() is not None:
                    console.print(
                        f"[red]the {plane.name} {describe_exit(plane.process.returncode)} "
                        "while starting[/]"
                    )
                    return False
            if time.monotonic() > deadline:
                console.print("[red]timed out waiting for the servers to listen[/]")
                return False
            time.sleep(POLL_INTERVAL)
        return True

    def _check(self, plane: Plane, now: float) -> bool:
        """Restart `plane` if it died and may be restarted; False once it crash-loops."""
        process = plane.process
        if plane.restart_due is not None:
            if now >= plane.restart_due:
                plane.restart_due = None
                plane.restarts.append(now)
                self._start(plane)
                pid = plane.process.pid if plane.process else "?"
                console.print(f"[yellow]restarted the {plane.name} (pid {pid})[/]")
            return True
        if process is None or process.poll() is None:
            return True
        window = self.settings.plane_restart_window
        plane.restarts = [t for t in plane.restarts if now - t < window]
        how = describe_exit(process.returncode)
        if len(plane.restarts) >= self.settings.plane_restart_limit:
            times = "once" if len(plane.restarts) == 1 else f"{len(plane.restarts)} times"
            console.print(
                f"[red]the {plane.name} {how}; it was restarted {times} in the last "
                f"{window:g} s, so it is crash-looping: giving up "
                "(PORTCULLIS_PLANE_RESTART_LIMIT and _WINDOW set this)[/]"
            )
            return False
        delay = restart_delay(len(plane.restarts))
        plane.restart_due = now + delay
        console.print(f"[yellow]the {plane.name} {how}; restarting it in {delay:g} s[/]")
        return True

    def _stop_all(self) -> None:
        if self.tls is not None:
            for plane in self.tls.retiring:
                self.stop_plane(plane)
        for p in self.planes:
            if p.process and p.process.poll() is None:
                p.process.send_signal(signal.SIGTERM)
        grace_deadline = time.monotonic() + self.settings.shutdown_grace + 5
        for p in self.planes:
            if p.process is None:
                continue
            try:
                p.process.wait(timeout=max(0.1, grace_deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.process.kill()
                p.process.wait()

    def run(self, banner: str | None) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        wanted = 2 * self.settings.max_connections_per_worker + 1024
        limit = raise_open_files_limit(wanted)
        if limit < wanted:
            console.print(
                f"[yellow]the open-files limit is {limit}: a worker runs out of file "
                f"descriptors before PORTCULLIS_MAX_CONNECTIONS_PER_WORKER "
                f"({self.settings.max_connections_per_worker}) client connections and "
                "their upstream connections (raise `ulimit -Hn`)[/]"
            )
        for plane in self.planes:
            self._start(plane)
        exit_code = 0
        if self._wait_until_listening():
            if banner:
                console.print(
                    Panel.fit(banner, title="Portcullis is running", border_style="green")
                )
            if self.tls is not None:
                self.tls.start()
            while not self.stop_signal:
                now = time.monotonic()
                if not all(self._check(plane, now) for plane in self.planes):
                    exit_code = 1
                    break
                if self.tls is not None:
                    self.tls.tick(self)
                time.sleep(POLL_INTERVAL)
        elif not self.stop_signal:
            exit_code = 1
        self._stop_all()
        if self.tls is not None:
            self.tls.stop()
        return exit_code
