"""A real, throw-away PostgreSQL server for the test session.

`running_postgres()` finds the server binaries (the highest version under
/usr/lib/postgresql/*/bin, else on PATH), runs `initdb` into a temp dir, starts
the server on a free loopback port with its unix socket in that temp dir and
durability switched off (fsync, synchronous_commit, full_page_writes: the data
is thrown away), waits until it accepts connections, and on exit stops it and
removes the directory. The server is a child process in the test run's process
group that also gets SIGTERM if the test process dies, so a killed run does not
leave it behind. PostgreSQL refuses to run as root, so as root the
binaries run as the `postgres` system user (created by the Debian package)
through `runuser`, and the temp dir is handed to that user.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "portcullis"
START_TIMEOUT = 60


class PostgresUnavailable(RuntimeError):
    """The server binaries (or the user to run them as) are missing."""


def find_bin_dir() -> Path:
    """Directory holding initdb and postgres: the newest Debian version, else from PATH."""
    candidates = []
    for d in Path("/usr/lib/postgresql").glob("*/bin"):
        match = re.fullmatch(r"\d+(\.\d+)?", d.parent.name)
        if match and (d / "initdb").exists() and (d / "postgres").exists():
            candidates.append((tuple(int(p) for p in d.parent.name.split(".")), d))
    if candidates:
        return max(candidates)[1]
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).resolve().parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH); "
        "install the Debian package 'postgresql' (`./dev test` does)"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """A running server; `url(database)` gives an asyncpg SQLAlchemy URL."""

    bin_dir: Path
    root: Path
    port: int
    run_as: str | None
    process: subprocess.Popen[bytes] | None = None
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None, *, template: str | None = None) -> str:
        """Create a fresh database (a unique name unless given); returns its URL.

        With `template`, the new database is a copy of that one (which must have no open
        connections): a migrated template makes a migrated store in a fraction of the time.
        """
        name = name or f"test_{os.getpid()}_{next(self._names)}"
        copy = ["-T", template] if template is not None else []
        self._run(
            [
                str(self.bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                *copy,
                name,
            ],
            as_owner=False,
        )
        return self.url(name)

    def _run(self, argv: list[str], *, as_owner: bool = True) -> None:
        if as_owner and self.run_as is not None:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT)
        if result.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(
                f"{' '.join(argv)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n--- server log ---\n{log}"
            )

    def start(self) -> None:
        """Start `postgres` as a child process and wait until it accepts connections.

        Not through `pg_ctl start`, which detaches the server into its own session:
        as a plain child in our process group it also goes down with a test run that
        is killed before it could clean up.
        """
        argv = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=100",
        ]
        if self.run_as is not None:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.process.returncode}:\n{self.log_file.read_text()}"
                )
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postgres did not become ready in {START_TIMEOUT}s")

    def stop(self) -> None:
        """Immediate shutdown (SIGQUIT: no shutdown checkpoint); kill if it hangs.

        The data directory is thrown away next, so nothing needs to reach it: a fast
        shutdown's checkpoint after a session's hundreds of databases took up to 80 s
        at the end of each pytest worker (the suite's slowest "teardown").
        """
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        pid_file = self.data_dir / "postmaster.pid"
        try:
            server_pid = int(pid_file.read_text().split()[0])
            os.kill(server_pid, signal.SIGQUIT)  # root may signal the postgres user's process
        except (OSError, ValueError, IndexError):
            process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _owner_for_root() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "running as root, but there is no 'postgres' system user to run the server as "
            "(install the Debian package 'postgresql')"
        ) from None
    return "postgres"


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a private server for the duration of the `with` block."""
    bin_dir = find_bin_dir()
    run_as = _owner_for_root()
    root = Path(tempfile.mkdtemp(prefix="portcullis-pg-"))
    server = PostgresServer(bin_dir, root, free_port(), run_as)
    try:
        server.socket_dir.mkdir()
        if run_as is not None:
            user = pwd.getpwnam(run_as)
            for path in (root, server.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        server._run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(server.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        # A port can be taken between choosing and binding it: try a few.
        for attempt in range(3):
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                server.port = free_port()
        atexit.register(_stop_quietly, server)
        yield server
    finally:
        _stop_quietly(server)
        atexit.unregister(_stop_quietly)
        shutil.rmtree(root, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies (Linux).

    `runuser` passes the signal on to the server, which then shuts down.
    """
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop_quietly(server: PostgresServer) -> None:
    with contextlib.suppress(Exception):
        server.stop()
