"""Run `portcullis …` as a real process per command without paying interpreter start-up.

Each CLI test used to run `python -m portcullis …`: about 2-3 s of interpreter start and
imports per command on a busy 2-core machine, most of the CLI tests' time. A zygote
process imports the CLI and its heavy dependencies once, then forks one child per
command. The child is still a separate process running the real `portcullis.cli.main()`
(its own environment, working directory, exit code and stdout/stderr file descriptors,
no state shared with the test or with earlier commands); only the imports are inherited.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# The zygote: imports, then serves one JSON request per line; one JSON reply per line.
_ZYGOTE = r"""
import json, os, sys, tempfile

import portcullis.cli
import portcullis.commands.admin, portcullis.commands.config
import portcullis.commands.keys, portcullis.commands.serve
for name in (
    "portcullis.admin.app", "portcullis.services.keys", "portcullis.identity.key_admin",
    "portcullis.identity.key_repository", "portcullis.store.config_repository",
    "portcullis.store.migrations", "portcullis.store.engine", "aiosqlite", "asyncpg",
    "alembic.command", "yaml", "portcullis.commands.graphql_documents",
    "portcullis.services.graphql_documents", "portcullis.services.audit",
    "portcullis.graph.schema",
):
    try:
        __import__(name)
    except ImportError:
        pass  # a module renamed since this list was written only costs speed

reply = sys.stdout
for line in sys.stdin:
    request = json.loads(line)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                os.chdir(request["cwd"])
                os.environ.clear()
                os.environ.update(request["env"])
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.argv = ["portcullis", *request["args"]]
                try:
                    portcullis.cli.main()
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                    if isinstance(exc.code, str):
                        print(exc.code, file=sys.stderr)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 70
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        reply.write(json.dumps({
            "code": os.waitstatus_to_exitcode(status),
            "out": out.read().decode("utf-8", "replace"),
            "err": err.read().decode("utf-8", "replace"),
        }) + "\n")
        reply.flush()
"""


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


class CliProcesses:
    """Forks `portcullis` commands from one pre-imported zygote (see the module doc)."""

    def __init__(self, terminal: Mapping[str, str] | None = None) -> None:
        # Consoles created at import time read COLUMNS and NO_COLOR in the zygote, so the
        # terminal the commands print to is fixed here, not per command.
        self._terminal = dict(terminal or {"COLUMNS": "200", "NO_COLOR": "1"})
        self._zygote: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        if self._zygote is None or self._zygote.poll() is not None:
            self._zygote = subprocess.Popen(
                [sys.executable, "-c", _ZYGOTE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, **self._terminal},
                start_new_session=True,
            )
        return self._zygote

    def run(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        timeout: float = 120.0,
    ) -> CliResult:
        zygote = self._start()
        assert zygote.stdin is not None
        assert zygote.stdout is not None
        request = {"args": list(args), "cwd": str(cwd), "env": dict(env)}
        zygote.stdin.write(json.dumps(request) + "\n")
        zygote.stdin.flush()
        with selectors.DefaultSelector() as selector:
            selector.register(zygote.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                self.close()
                raise TimeoutError(f"portcullis {' '.join(args)} ran over {timeout} s")
        line = zygote.stdout.readline()
        if not line:
            raise RuntimeError(f"the CLI zygote died running portcullis {' '.join(args)}")
        reply = json.loads(line)
        return CliResult(reply["code"], reply["out"], reply["err"])

    def close(self) -> None:
        zygote, self._zygote = self._zygote, None
        if zygote is None:
            return
        if zygote.poll() is None:
            # Its own session: the group holds a child still running a command.
            os.killpg(zygote.pid, signal.SIGKILL)
        zygote.wait()
        for stream in (zygote.stdin, zygote.stdout):
            if stream is not None:
                stream.close()


@contextmanager
def cli_processes() -> Iterator[CliProcesses]:
    processes = CliProcesses()
    try:
        yield processes
    finally:
        processes.close()
