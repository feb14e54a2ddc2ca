"""A second `portcullis serve` on a port that is already held refuses to start, with a
message and exit status 1, before it touches its store; the first keeps serving.

granian binds with SO_REUSEPORT: without the check the second instance would bind
beside the first and the kernel would split connections between the two.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from portcullis.store.engine import sqlite_file
from support.servers import free_port, gateway


def serve(tmp: Path, config_file: Path, proxy_port: int, admin_port: int) -> tuple[int, str]:
    """Run `portcullis serve` with its own store in `tmp`; its exit status and output."""
    env = {
        **os.environ,
        "PORTCULLIS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'second.db'}",
        "PORTCULLIS_LOG_LEVEL": "warning",
    }
    argv = [
        sys.executable, "-m", "portcullis", "serve", "--config", str(config_file),
        "--proxy-port", str(proxy_port), "--admin-port", str(admin_port),
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, cwd=tmp, capture_output=True, text=True, timeout=60)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_a_second_gateway_on_the_same_proxy_port_refuses_and_the_first_keeps_serving(
    tmp_path: Path, config_file: Path
) -> None:
    first = tmp_path / "first"
    second = tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with gateway(first, config_file) as gw:
        status, output = serve(second, config_file, gw.proxy_port, free_port())
        assert status == 1
        assert f"error: 127.0.0.1:{gw.proxy_port} (the data plane) is already in use" in output
        assert "Traceback" not in output
        # Refused before the store was created, migrated or given the config.
        assert not (second / "second.db").exists()
        for _ in range(10):
            with httpx.Client(base_url=gw.url, timeout=5) as client:
                assert client.get("/demo/health").status_code == 200
        path = sqlite_file(gw.database_url)
        assert path is not None
        assert path.exists()


def test_a_port_held_by_anything_else_is_refused_too(tmp_path: Path, config_file: Path) -> None:
    with socket.socket() as foreign:
        foreign.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        foreign.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        held = foreign.getsockname()[1]
        status, output = serve(tmp_path, config_file, free_port(), held)
    assert status == 1
    assert f"error: 127.0.0.1:{held} (the control plane) is already in use" in output
    assert "Traceback" not in output
