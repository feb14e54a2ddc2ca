"""The process of a data-plane node's agent (hybrid/node.py), tied to the supervisor's
life like every plane (`plane_process`): a SIGKILL of `portcullis serve` must not leave
the agent holding the status port and the connection to the control plane."""

from __future__ import annotations

import os

from portcullis.supervision.lifeline import SUPERVISOR_PID_ENV, die_with_parent


def main() -> None:
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    die_with_parent(int(supervisor) if supervisor else None)
    from portcullis.hybrid.node import main as agent

    agent()


if __name__ == "__main__":
    main()
