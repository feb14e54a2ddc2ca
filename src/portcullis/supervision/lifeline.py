"""Processes that die with their parent, and the open-files limit they inherit.

`portcullis serve` → plane (granian main) → granian workers: a SIGKILL anywhere in
that chain must not leave the processes below it holding the ports. On Linux each
child asks the kernel for a signal when its parent dies (`prctl(PR_SET_PDEATHSIG)`);
elsewhere this is a no-op and the start-time port check (`ports`) is the safeguard.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG = 1
# How a plane learns the pid of the supervisor that started it (see `die_with_parent`).
SUPERVISOR_PID_ENV = "PORTCULLIS_SUPERVISOR_PID"


def die_with_parent(parent_pid: int | None, sig: int = signal.SIGTERM) -> None:
    """Have the kernel send `sig` to this process when its parent dies.

    SIGTERM by default: a plane then stops its workers gracefully (they drain and
    flush their request logs), as on a normal stop. `parent_pid` closes the race in
    which the parent died before the request was made (the kernel only signals a
    death that happens after it): this process then exits at once.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE (inherited by its children) to the hard limit.

    Every client connection, and every upstream connection it uses, is a file
    descriptor in a worker; the common soft default (1024) would stop a worker from
    accepting long before its connection cap. Returns the soft limit now in force;
    the caller warns when it is below `wanted`.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return sys.maxsize
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft
