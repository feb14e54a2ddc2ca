"""The process of the proxy's TLS port (`python -m portcullis.supervision.tls_plane`).

Tied to the supervisor's life like the granian planes (`plane_process`), then runs
`proxy.tls_server.serve` on uvloop with the settings from the environment.
"""

from __future__ import annotations

import argparse
import os

from portcullis.supervision.lifeline import SUPERVISOR_PID_ENV, die_with_parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="portcullis.supervision.tls_plane")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    die_with_parent(int(supervisor) if supervisor else None)
    import uvloop

    from portcullis.logging import configure_logging
    from portcullis.proxy.tls_server import serve
    from portcullis.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    uvloop.run(serve(settings, args.host, args.port))


if __name__ == "__main__":
    main()
