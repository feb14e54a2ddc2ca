"""The process of one plane: granian's command line, tied to the life of the supervisor.

`python -m portcullis.supervision.plane_process <granian options> <target>` is what
`portcullis serve` starts for each plane (see `planes.granian_argv`). Before handing
over to granian it asks to die with the supervisor, and arranges for every worker
granian forks to die with this process: granian itself leaves its workers running,
still serving the port, when its main process is killed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys

from portcullis.supervision.lifeline import SUPERVISOR_PID_ENV, die_with_parent


def main() -> None:
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    die_with_parent(int(supervisor) if supervisor else None)
    if sys.platform.startswith("linux"):
        plane = os.getpid()
        # SIGKILL: until a worker has set up its own handlers it runs with granian's
        # main-process handler, which would swallow a SIGTERM and leave the worker
        # serving, orphaned. Only a plane that was itself killed leaves its workers to
        # this: a stopping plane stops its workers gracefully first.
        os.register_at_fork(after_in_child=lambda: die_with_parent(plane, signal.SIGKILL))
        # The fork hook above only runs in forked workers; granian uses the default
        # start method, which is "fork" on Linux only up to Python 3.13.
        multiprocessing.set_start_method("fork", force=True)
    from granian.cli import entrypoint

    entrypoint()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
