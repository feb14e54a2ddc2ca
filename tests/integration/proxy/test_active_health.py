"""Active health checks against real HTTP servers on 127.0.0.1, through `Http1Transport`."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from portcullis.model import config as model
from portcullis.upstream.balancer import TargetState, UpstreamPool, build_pools
from portcullis.upstream.http1 import Http1Transport

INTERVAL = 0.05
UNHEALTHY_THRESHOLD = 2
HEALTHY_THRESHOLD = 3


@dataclass
class HealthServer:
    """A tiny aiohttp app whose /healthz answers `status`; it counts what it served."""

    port: int
    status: int = 200
    served: list[int] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)

    def flip(self, status: int) -> None:
        self.status = status
        self.served.clear()


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
async def health_server() -> AsyncIterator[HealthServer]:
    sock = bound_socket()
    server = HealthServer(port=sock.getsockname()[1])

    async def healthz(request: web.Request) -> web.Response:
        server.served.append(server.status)
        server.hosts.add(request.headers.get("Host", ""))
        return web.Response(status=server.status, text="state\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A server that accepts connections and never answers (probes must time out)."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # until the prober gives up and closes

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
def closed_port() -> int:
    """A loopback port with no listener (connections are refused)."""
    sock = bound_socket()
    port = int(sock.getsockname()[1])
    sock.close()
    return port


@pytest.fixture
async def transport() -> AsyncIterator[Http1Transport]:
    t = Http1Transport()
    try:
        yield t
    finally:
        await t.aclose()


def checked_pool(*ports: int) -> UpstreamPool:
    upstream = model.Upstream.model_validate(
        {
            "name": "checked",
            "targets": [{"target": f"127.0.0.1:{p}"} for p in ports],
            "healthchecks": {
                "active": {
                    "enabled": True,
                    "path": "/healthz",
                    "interval": INTERVAL,
                    "timeout": 0.3,
                    "healthy_threshold": HEALTHY_THRESHOLD,
                    "unhealthy_threshold": UNHEALTHY_THRESHOLD,
                    "healthy_statuses": [200],
                }
            },
        }
    )
    return build_pools([upstream])["checked"]


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll `condition` on the event loop; return how long it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(INTERVAL / 5)
    return time.monotonic() - start


def is_up(target: TargetState) -> bool:
    return target.health.healthy


async def test_target_goes_down_and_up_with_its_health_endpoint(
    health_server: HealthServer, transport: Http1Transport
) -> None:
    pool = checked_pool(health_server.port)
    target = pool.targets[0]
    with capture_logs() as logs:
        await pool.start(transport, "http")
        try:
            await wait_until(lambda: len(health_server.served) >= 3)
            assert is_up(target)

            health_server.flip(500)
            await wait_until(lambda: not is_up(target))
            # Not before `unhealthy_threshold` failed probes, and soon after.
            assert UNHEALTHY_THRESHOLD <= health_server.served.count(500) <= UNHEALTHY_THRESHOLD + 2
            assert pool.pick(client_ip="127.0.0.1") is None
            assert pool.unavailable_reason() == "no-healthy-target"

            health_server.flip(200)
            await wait_until(lambda: is_up(target))
            assert HEALTHY_THRESHOLD <= health_server.served.count(200) <= HEALTHY_THRESHOLD + 2
            assert pool.pick(client_ip="127.0.0.1") is target
        finally:
            await pool.stop()
    assert health_server.hosts == {f"127.0.0.1:{health_server.port}"}
    changes = [
        (e["event"], e["reason"], e.get("count"), e.get("detail"))
        for e in logs
        if e["event"].startswith("upstream_target_")
    ]
    assert changes == [
        ("upstream_target_unhealthy", "active-check", UNHEALTHY_THRESHOLD, "status 500"),
        ("upstream_target_healthy", "active-check", None, "status 200"),
    ]


async def test_probes_stop_with_the_pool(
    health_server: HealthServer, transport: Http1Transport
) -> None:
    pool = checked_pool(health_server.port)
    await pool.start(transport, "http")
    await wait_until(lambda: len(health_server.served) >= 2)
    await pool.stop()
    assert not pool.checking
    served = len(health_server.served)
    await asyncio.sleep(INTERVAL * 4)
    assert len(health_server.served) == served


async def test_refused_and_silent_targets_fail_without_holding_up_a_good_one(
    health_server: HealthServer,
    transport: Http1Transport,
    silent_port: int,
    closed_port: int,
) -> None:
    pool = checked_pool(health_server.port, silent_port, closed_port)
    good, silent, refused = pool.targets
    await pool.start(transport, "http")
    try:
        await wait_until(lambda: not is_up(refused))
        await wait_until(lambda: not is_up(silent))
        assert is_up(good)
        # The silent target's 0.3 s timeouts do not slow the good one's probes:
        # rounds do not wait for them (a blocking round would manage ~3 per second).
        before = len(health_server.served)
        await asyncio.sleep(1.0)
        assert len(health_server.served) - before >= 8
        assert pool.pick(client_ip="127.0.0.1") is good
    finally:
        await pool.stop()
