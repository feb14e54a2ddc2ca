"""Parent-death signals (Linux) and the open-files limit."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap

import psutil

from portcullis.supervision.lifeline import raise_open_files_limit

# A middle process starts a grandchild that asks to die with it, prints the
# grandchild's pid, and waits to be killed.
MIDDLE = textwrap.dedent(
    """
    import os, subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())])
    print(grandchild.pid, flush=True)
    time.sleep(60)
    """
)
GRANDCHILD = textwrap.dedent(
    """
    import sys, time
    from portcullis.supervision.lifeline import die_with_parent
    die_with_parent(int(sys.argv[1]))
    print("armed", flush=True)
    time.sleep(60)
    """
)


def test_a_child_dies_with_its_parent() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", MIDDLE, GRANDCHILD], stdout=subprocess.PIPE, text=True
    ) as middle:
        assert middle.stdout is not None
        # The middle process prints the pid, the grandchild "armed" (same pipe, any order).
        lines = {middle.stdout.readline().strip(), middle.stdout.readline().strip()}
        assert "armed" in lines
        grandchild = psutil.Process(int((lines - {"armed"}).pop()))
        middle.kill()
        middle.wait()
        _gone, alive = psutil.wait_procs([grandchild], timeout=10)
        for orphan in alive:
            orphan.kill()
        assert alive == []


def test_a_child_whose_parent_already_died_exits_at_once() -> None:
    script = (
        "from portcullis.supervision.lifeline import die_with_parent\n"
        "die_with_parent(1)\n"  # not our parent: as if it had died and we were reparented
        "raise SystemExit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=30, check=False)
    assert done.returncode == 1


def test_armed_in_this_process_it_keeps_running_while_the_parent_lives() -> None:
    script = (
        "import os\n"
        "from portcullis.supervision.lifeline import die_with_parent\n"
        "die_with_parent(os.getppid())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=30, check=False)
    assert done.returncode == 0


def test_the_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(256, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        now = raise_open_files_limit(wanted=10_000)
        expected = hard if hard != resource.RLIM_INFINITY else max(lowered, 10_000)
        assert now == expected
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == expected
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
