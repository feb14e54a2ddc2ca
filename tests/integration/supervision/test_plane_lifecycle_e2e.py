"""Planes live and die with the supervisor: a plane that dies is restarted on its own
while the other keeps serving; a crash loop ends with a message; a SIGKILLed
`portcullis serve` takes every plane and worker with it, so its ports are free again.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from portcullis.supervision.ports import port_in_use
from support.processes import control_plane, data_plane, listens_on, wait_for, wait_for_output
from support.servers import gateway, stop_process, wait_for_port


def serves(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_killed_data_plane_is_restarted_and_the_control_plane_keeps_serving(
    tmp_path: Path, config_file: Path
) -> None:
    with gateway(tmp_path, config_file) as gw:
        wait_for_output(gw, "Portcullis is running")
        old, admin = data_plane(gw), control_plane(gw)
        old_workers = old.children()
        old.send_signal(signal.SIGKILL)
        # Its worker dies with it (it would otherwise keep serving the port, orphaned).
        _gone, alive = psutil.wait_procs(old_workers, timeout=30)
        assert alive == []
        assert serves(f"{gw.admin_url}/health/live")
        new = wait_for(lambda: (p := data_plane(gw)).pid != old.pid and p, "a new data plane")
        wait_for(lambda: serves(f"{gw.url}/demo/health"), "the proxy serving again")
        assert listens_on(new.children()[0], gw.proxy_port)
        # The control plane was never restarted.
        assert control_plane(gw).pid == admin.pid
        assert serves(f"{gw.admin_url}/health/live")
        assert gw.process.poll() is None


def test_a_crash_looping_plane_stops_the_gateway_with_a_message(
    tmp_path: Path, config_file: Path
) -> None:
    limits = {"PORTCULLIS_PLANE_RESTART_LIMIT": "1", "PORTCULLIS_PLANE_RESTART_WINDOW": "300"}
    with gateway(tmp_path, config_file, extra_env=limits) as gw:
        wait_for_output(gw, "Portcullis is running")
        first = data_plane(gw)
        first.send_signal(signal.SIGKILL)
        second = wait_for(lambda: (p := data_plane(gw)).pid != first.pid and p, "a restart")
        second.send_signal(signal.SIGKILL)
        assert gw.process.wait(timeout=60) == 1
        assert gw.process.stdout is not None
        output = " ".join(gw.process.stdout.read().decode(errors="replace").split())
    assert "the data plane killed by SIGKILL; restarting it in 0.5 s" in output
    assert "it was restarted once in the last 300 s, so it is crash-looping: giving up" in output
    assert "Traceback" not in output
    assert not port_in_use("127.0.0.1", gw.admin_port)


@pytest.mark.slow
def test_a_killed_supervisor_takes_its_planes_along_and_a_new_one_starts(
    tmp_path: Path, config_file: Path
) -> None:
    with gateway(tmp_path, config_file, workers=2) as gw:
        tree = psutil.Process(gw.process.pid).children(recursive=True)
        assert len(tree) == 5  # two planes, two data-plane workers, one control-plane worker
        gw.process.kill()
        gw.process.wait()
        _gone, alive = psutil.wait_procs(tree, timeout=30)
        for orphan in alive:
            orphan.kill()
        assert alive == []
        assert not port_in_use("127.0.0.1", gw.proxy_port)
        assert not port_in_use("127.0.0.1", gw.admin_port)
        argv = [
            sys.executable, "-m", "portcullis", "serve",
            "--proxy-port", str(gw.proxy_port), "--admin-port", str(gw.admin_port),
        ]  # fmt: skip
        again = subprocess.Popen(
            argv, env=gw.env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            wait_for_port(gw.proxy_port, again, timeout=60)
            wait_for(lambda: serves(f"{gw.url}/demo/health"), "the new gateway serving")
        finally:
            stop_process(again)
