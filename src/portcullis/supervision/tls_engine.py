"""Which server runs the proxy's TLS port, and switching it when the certificates change.

docs/decisions/028 (addendum). granian's own TLS is 3-6x faster than Python's TLS under
hypercorn but serves one certificate, cannot choose by SNI and gives the app no TLS
extension (which `mtls-auth` reads). So (`choose_engine`), with
`PORTCULLIS_PROXY_TLS_ENGINE`:

- `auto`: granian while the config serves exactly one certificate (one with server
  names; a SAN/wildcard certificate covering every hostname) and no client CA is set
  (`PORTCULLIS_PROXY_TLS_CLIENT_CA_FILE`), else hypercorn;
- `granian`: granian; a start with another number of certificates or a client CA is
  refused, naming the setting;
- `hypercorn`: always hypercorn.

The supervisor decides (`TlsControl`): a thread polls the store's config version (as
each data-plane worker's watcher does) and, when the served certificates change under
granian, or the engine must change, the supervisor's loop starts the new planes on the
port beside the old ones (SO_REUSEPORT), waits until every new socket listens (read
in /proc: a connect probe would reach the old planes too), then stops the old planes
gracefully (in-flight requests finish). granian reads its certificate only when a
worker starts, and a SIGHUP (granian's worker respawn) would not do: on Linux each
granian worker binds its own socket, so a respawn leaves the port without a listener
while the new worker starts. hypercorn picks up new certificates itself
(proxy/tls_server.py).

granian reads the certificate from a file: the key is unsealed into a private
directory (0700, in memory where /dev/shm exists), the file is 0600 and replaced
atomically, and the directory is removed when the gateway stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rich.console import Console

from portcullis.errors import UserError
from portcullis.model.certificates import Certificate
from portcullis.proxy.sni import Material, material_of
from portcullis.settings import Settings
from portcullis.supervision.planes import Plane, granian_tls_plane, tls_planes

if TYPE_CHECKING:
    from portcullis.supervision.supervisor import Supervisor

console = Console(stderr=True)
Engine = Literal["granian", "hypercorn"]
ENGINE_SETTING = "PORTCULLIS_PROXY_TLS_ENGINE"
_SHM = "/dev/shm"  # noqa: S108 (mkdtemp: a private 0700 directory)
LISTEN_TIMEOUT = 30.0


def granian_can_serve(served: int, client_ca: bool) -> bool:
    """granian's TLS serves one certificate to every client and requests no client one."""
    return served == 1 and not client_ca


def choose_engine(setting: str, served: int, client_ca: bool) -> Engine:
    """The TLS port's server for `served` certificates with server names.

    Forcing granian where it cannot serve is a `UserError` naming the setting."""
    if setting == "hypercorn":
        return "hypercorn"
    if granian_can_serve(served, client_ca):
        return "granian"
    if setting == "granian":
        why = (
            "PORTCULLIS_PROXY_TLS_CLIENT_CA_FILE is set (client certificates need hypercorn)"
            if client_ca
            else f"the config serves {served} certificates with server names"
        )
        raise UserError(
            f"{ENGINE_SETTING}=granian serves exactly one certificate and no client CA, "
            f"but {why}; set {ENGINE_SETTING}=auto or hypercorn"
        )
    return "hypercorn"


def served_material(certificates: Sequence[Certificate]) -> Material:
    return material_of(certificates)


def write_pem(directory: Path, material: Material) -> Path:
    """granian's certificate file (unsealed key, then the chain), replaced atomically."""
    from portcullis.store.sealing import unseal_key

    ((_, cert, key, _),) = material
    key = unseal_key(key)
    path = directory / "served.pem"
    fd, tmp = tempfile.mkstemp(prefix=".served-", dir=directory)  # 0600
    with os.fdopen(fd, "w") as fh:
        fh.write(key if key.endswith("\n") else key + "\n")
        fh.write(cert)
    os.replace(tmp, path)
    return path


def _process_tree(pid: int) -> list[int]:
    pids, i = [pid], 0
    while i < len(pids):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                with open(f"/proc/{pids[i]}/task/{task}/children") as fh:
                    pids += [int(c) for c in fh.read().split()]
        i += 1
    return pids


def listeners(pid: int, port: int) -> int:
    """How many listening TCP sockets on `port` process `pid` and its children hold
    (Linux: /proc). A connect probe cannot tell: with SO_REUSEPORT the old planes answer
    on the port too. granian's workers each bind their own socket on Linux."""
    inodes: set[str] = set()
    for each in _process_tree(pid):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{each}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{each}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    wanted = f":{port:04X}"
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                f = line.split()
                if f[1].endswith(wanted) and f[3] == "0A" and f[9] in inodes:
                    found.add(f[9])
    return len(found)


def listening(plane: Plane, sockets: int) -> bool:
    if plane.process is None:
        return False
    if not sys.platform.startswith("linux"):
        return True
    return listeners(plane.process.pid, plane.port) >= sockets


class TlsControl:
    """The TLS port's planes, switched by the supervisor's loop (`tick`)."""

    def __init__(self, settings: Settings, certificates: Sequence[Certificate]) -> None:
        self.settings = settings
        self.client_ca = settings.proxy_tls_client_ca_file is not None
        self.material = served_material(certificates)
        self.engine = choose_engine(settings.proxy_tls_engine, len(self.material), self.client_ca)
        self.directory = Path(
            tempfile.mkdtemp(prefix="portcullis-tls-", dir=_SHM if os.path.isdir(_SHM) else None)
        )
        try:
            self.planes = self._planes(self.engine)
        except (ValueError, OSError) as exc:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise UserError(f"the TLS port's certificate cannot be served: {exc}") from None
        self.retiring: list[Plane] = []
        self._latest: Material | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _planes(self, engine: Engine) -> list[Plane]:
        if engine == "granian":
            return [granian_tls_plane(self.settings, write_pem(self.directory, self.material))]
        return tls_planes(self.settings)

    # --- the watcher thread -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="tls-engine", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        asyncio.run(self._poll())

    async def _poll(self) -> None:
        from portcullis.store.config_repository import ConfigRepository
        from portcullis.store.engine import create_engine

        engine = create_engine(self.settings.database_url)
        repo = ConfigRepository(engine, keep_versions=self.settings.config_history_keep)
        seen, failing = -1, False
        try:
            while not self._stop.is_set():
                try:
                    version = await repo.current_version()
                    if version != seen:
                        current = await repo.current()
                        if current is not None:
                            self._latest = served_material(current.config.certificates)
                        seen = version
                    failing = False
                except Exception as exc:  # a store outage: keep serving, try again
                    if not failing:  # once per outage
                        console.print(f"[yellow]TLS port: reading the config failed: {exc}[/]")
                    failing = True
                await asyncio.sleep(self.settings.config_poll_interval)
        finally:
            await engine.dispose()

    # --- the supervisor's loop ----------------------------------------------------------

    def tick(self, supervisor: Supervisor) -> None:
        """Follow the latest served certificates (called from the supervisor's loop)."""
        self.retiring = [p for p in self.retiring if p.process and p.process.poll() is None]
        latest = self._latest
        if latest is None or latest == self.material:
            return
        try:
            engine = choose_engine(self.settings.proxy_tls_engine, len(latest), self.client_ca)
        except UserError as exc:
            console.print(f"[red]{exc}: the TLS port keeps its current certificate[/]")
            self.material = latest
            return
        self.material = latest
        if engine != self.engine or engine == "granian":
            # granian reads its certificate when a worker starts: a new certificate is a
            # new granian beside the old one, as a new engine is.
            try:
                self._switch(supervisor, engine)
            except (ValueError, OSError) as exc:  # a key sealed under another secret
                console.print(f"[red]TLS port: cannot serve the new certificate ({exc})[/]")

    def _switch(self, supervisor: Supervisor, engine: Engine) -> None:
        new = self._planes(engine)
        for plane in new:
            supervisor.start_plane(plane)
        deadline = time.monotonic() + LISTEN_TIMEOUT
        sockets = self.settings.workers if engine == "granian" else 1
        while not all(listening(p, sockets) for p in new):
            if (
                supervisor.stop_signal
                or time.monotonic() > deadline
                or any(p.process is not None and p.process.poll() is not None for p in new)
            ):
                console.print(f"[red]TLS port: {engine} did not start; keeping {self.engine}[/]")
                for plane in new:
                    supervisor.stop_plane(plane)
                self.retiring += new
                return
            time.sleep(0.05)
        old, self.planes = self.planes, new
        supervisor.replace_planes(old, new)
        for plane in old:
            supervisor.stop_plane(plane)
        self.retiring += old
        console.print(f"[green]TLS port: now served by {engine} (was {self.engine})[/]")
        self.engine = engine
        if engine == "hypercorn":
            (self.directory / "served.pem").unlink(missing_ok=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for plane in self.retiring:
            if plane.process is not None:
                with contextlib.suppress(Exception):
                    plane.process.wait(timeout=self.settings.shutdown_grace + 5)
        shutil.rmtree(self.directory, ignore_errors=True)
