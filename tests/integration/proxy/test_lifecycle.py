"""Process behaviour: graceful drain on SIGTERM, several workers, empty store."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
import yaml

from portcullis.model.loader import load_config_file
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import create_engine
from support.raw_upstream import RawConnection, response
from support.servers import Gateway, gateway
from support.threaded_upstream import threaded_upstream, wait_until


def _cfg(tmp: Path, upstream: int) -> Path:
    cfg = tmp / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "services": [{"name": "demo", "url": f"http://127.0.0.1:{upstream}"}],
                "routes": [{"name": "demo", "service": "demo", "paths": ["/demo"]}],
            }
        )
    )
    return cfg


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    """A request the upstream is still answering when SIGTERM arrives gets its response.

    The upstream holds the answer until the test releases it, and the test releases it only
    once the request has arrived upstream and the data plane has stopped listening (it is
    draining), so no timing decides the outcome."""
    released = threading.Event()

    async def held(conn: RawConnection) -> None:
        while await conn.read_request() is not None:
            await asyncio.to_thread(released.wait, 20)
            await conn.send(response(200, b'{"held": true}'))

    with (
        threaded_upstream(held) as upstream,
        gateway(tmp_path, _cfg(tmp_path, upstream.port)) as gw,
    ):
        result: dict[str, object] = {}

        def slow_call() -> None:
            try:
                r = httpx.get(f"{gw.url}/demo/held", timeout=20)
                result["status"] = r.status_code
                result["body"] = r.json()
            except httpx.HTTPError as exc:
                result["error"] = repr(exc)

        t = threading.Thread(target=slow_call)
        t.start()
        try:
            wait_until(lambda: len(upstream.requests) == 1)
            gw.process.send_signal(signal.SIGTERM)
            wait_until(lambda: not _listening(gw.proxy_port))
        finally:
            released.set()
            t.join(timeout=15)
        assert result == {"status": 200, "body": {"held": True}}
        assert gw.process.wait(timeout=20) == 0


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def empty_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Two workers on an empty store, for the two tests below (a start costs seconds of
    CPU): the first sees it empty, the second applies a config to it."""
    tmp = tmp_path_factory.mktemp("lifecycle")
    env = {"PORTCULLIS_REQUEST_LOG_FLUSH_INTERVAL": "0.05"}
    with gateway(tmp, None, workers=2, extra_env=env) as gw:
        yield gw


def test_empty_store_serves_404_problems(empty_gateway: Gateway) -> None:
    gw = empty_gateway
    r = httpx.get(f"{gw.url}/anything")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    ready = httpx.get(f"{gw.admin_url}/health/ready")
    assert ready.status_code == 200
    assert ready.json()["config_version"] == 0


async def _apply(database_url: str, cfg: Path) -> None:
    engine = create_engine(database_url)
    try:
        await ConfigRepository(engine).apply(load_config_file(cfg), author="t", comment="t")
    finally:
        await engine.dispose()


def _served_by(database: Path) -> set[int]:
    """Pids of the workers that logged a request (the `node` column ends in the pid)."""
    with closing(sqlite3.connect(database)) as db:
        nodes = db.execute("SELECT DISTINCT node FROM request_log").fetchall()
    return {int(node.rsplit(":", 1)[1]) for (node,) in nodes}


def test_several_workers_serve(empty_gateway: Gateway, tmp_path: Path, upstream_a: int) -> None:
    """Requests on fresh connections are answered by at least two distinct worker processes,
    each one a worker the gateway reports as running."""
    gw = empty_gateway
    database = Path(gw.database_url.removeprefix("sqlite+aiosqlite:///"))
    # Applied in-process (a `portcullis config apply` process costs ~2 s of CPU to start).
    asyncio.run(_apply(gw.database_url, _cfg(tmp_path, upstream_a)))
    gw.wait_for_workers_at(1, workers=2)

    def two_workers_served() -> bool:
        for _ in range(10):
            with httpx.Client(base_url=gw.url) as c:  # a new connection each time
                assert c.get("/demo/health").status_code == 200
        return len(_served_by(database)) >= 2

    wait_until(two_workers_served, timeout=30)
    ready = httpx.get(f"{gw.admin_url}/health/ready").json()
    running = {node["pid"] for node in ready["data_plane"]["nodes"]}
    assert _served_by(database) <= running
