"""Live traffic end to end: real gateways, real requests, frames read from the control plane.

- The embedded default: `portcullis serve` with two data-plane workers on SQLite, no
  Redis. Requests of every outcome go through the proxy; `GET /admin/v1/analytics/live`
  reports them per route, per consumer and in total with their 4xx and 5xx, every
  frame merged from both workers; an admin limited to an organization sees its route
  only. The delay from the end of a second to its frame on the endpoint is measured.
- Multi-node: two data-plane nodes on PostgreSQL + Redis, two control-plane
  `LiveTraffic`s in the test process and one control-plane process: all three get one
  frame per second merged from both nodes' workers, the same frames on each.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from portcullis.identity.key_admin import KeySpec
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.secrets import load_server_secret
from portcullis.redis_client import SharedRedis
from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.services.streams.traffic import LiveTraffic, TrafficFrame
from portcullis.settings import Settings
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head
from portcullis.supervision.planes import DATA_PLANE_TARGET
from support.admin_session import TEST_PASSWORD_HASHER
from support.postgres import PostgresServer
from support.redis import RedisServer
from support.servers import Gateway, control_plane, free_port, gateway, granian_app
from support.services import apply_config

DEMO = "portcullis.demo.upstream:create_demo_app"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with granian_app(DEMO) as port:
        yield port


def gateway_config(upstream: int, dead: int) -> dict[str, Any]:
    return {
        "services": [
            {"name": "echo", "url": f"http://127.0.0.1:{upstream}/echo"},
            {"name": "gone", "url": f"http://127.0.0.1:{dead}", "retries": {"attempts": 0}},
        ],
        "routes": [
            {"name": "open", "service": "echo", "paths": ["/open"]},
            {"name": "keyed", "service": "echo", "paths": ["/keyed"]},
            {"name": "down", "service": "gone", "paths": ["/down"]},
            {"name": "acme-orders", "service": "echo", "paths": ["/acme"], "organization": "acme"},
        ],
        "consumers": [{"username": "alice"}],
        "plugins": [{"name": "key-auth", "route": "keyed", "config": {}}],
    }


def login(gw: Gateway, email: str, role: Role, organization: str | None = None) -> str:
    """A new admin user (made in process: no CLI start-up to wait for), signed in."""

    async def create() -> None:
        engine = create_engine(gw.database_url)
        try:
            await AuthService(engine, hasher=TEST_PASSWORD_HASHER).create_user(
                email, PASSWORD, role, organization
            )
        finally:
            await engine.dispose()

    asyncio.run(create())
    r = httpx.post(
        f"{gw.admin_url}/admin/v1/auth/login",
        json={"email": email, "password": PASSWORD},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


async def new_key(gw: Gateway, consumer: str) -> str:
    engine = create_engine(gw.database_url)
    try:
        secret = load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], Path())
        created = await KeyRepository(engine, secret).create(
            consumer, KeySpec(name="live"), created_by="e2e-test", organization=None
        )
    finally:
        await engine.dispose()
    return created.key


def live_frames(gw: Gateway, token: str, seconds: int = 60) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{gw.admin_url}/admin/v1/analytics/live",
        params={"seconds": seconds},
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["enabled"] is True
    return list(body["frames"])


def poll(check: Any, what: str, timeout: float = 30.0) -> Any:
    """Call `check` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def summed(frames: list[dict[str, Any]], since: int) -> dict[str, Counter[str]]:
    """Per route / consumer name and for the totals: requests, errors_4xx, errors_5xx."""
    out: dict[str, Counter[str]] = {}
    for frame in frames:
        if frame["second"] < since:
            continue
        entries = [("totals", frame["totals"])]
        entries += [(f"route:{n}", e) for n, e in frame["routes"].items()]
        entries += [(f"consumer:{n}", e) for n, e in frame["consumers"].items()]
        for name, entry in entries:
            counter = out.setdefault(name, Counter())
            for field in ("requests", "errors_4xx", "errors_5xx"):
                counter[field] += entry[field]
    return out


def test_live_traffic_of_two_workers_on_the_embedded_store(tmp_path: Path, upstream: int) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(gateway_config(upstream, free_port())))
    env = {"PORTCULLIS_HEARTBEAT_INTERVAL": "0.5"}
    with gateway(tmp_path, cfg, workers=2, extra_env=env) as gw:
        owner = login(gw, "owner@example.com", Role.OWNER)
        r = httpx.post(
            f"{gw.admin_url}/admin/v1/organizations",
            json={"name": "acme"},
            headers={"authorization": f"Bearer {owner}"},
            timeout=10,
        )
        assert r.status_code == 201, r.text
        acme_viewer = login(gw, "acme@example.com", Role.VIEWER, organization=r.json()["id"])
        key = asyncio.run(new_key(gw, "alice"))
        # Both workers report every second (empty reports when idle).
        poll(lambda: any(f["workers"] == 2 for f in live_frames(gw, owner, 5)), "two workers")

        start = int(time.time())
        sent: Counter[int] = Counter()
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            # New connections, so the kernel spreads them over both workers.
            for path, headers, times in [
                ("/open", {}, 30),
                ("/keyed", {"x-api-key": key}, 12),
                ("/keyed", {}, 5),  # 401
                ("/down", {}, 4),  # 502
                ("/nowhere", {}, 3),  # 404, no route
                ("/acme", {}, 6),
            ]:
                for _ in range(times):
                    r = client.get(path, headers={**headers, "connection": "close"})
                    sent[r.status_code] += 1
        assert sent == Counter({200: 48, 401: 5, 502: 4, 404: 3})

        expected = {
            "totals": Counter(requests=60, errors_4xx=8, errors_5xx=4),
            "route:open": Counter(requests=30),
            "route:keyed": Counter(requests=17, errors_4xx=5),
            "route:down": Counter(requests=4, errors_5xx=4),
            "route:acme-orders": Counter(requests=6),
            "consumer:alice": Counter(requests=12),
        }

        def complete() -> list[dict[str, Any]] | None:
            frames = live_frames(gw, owner)
            return frames if summed(frames, start) == expected else None

        frames = poll(complete, "the requests in the live frames")
        mine = [f for f in frames if f["second"] >= start]
        assert all(f["workers"] == 2 for f in mine), [f["workers"] for f in mine]
        seconds = [f["second"] for f in frames]
        assert seconds == list(range(seconds[0], seconds[0] + len(seconds)))  # no gaps
        busy = [f for f in mine if f["totals"]["requests"]]
        assert all(f["totals"]["p95_ms"] > 0 for f in busy)
        assert all(
            f["routes"]["open"]["organization_id"] is None for f in busy if "open" in f["routes"]
        )

        # The organization's admin: its route only, and its traffic as the totals.
        scoped = live_frames(gw, acme_viewer)
        assert summed(scoped, start) == {
            "totals": Counter(requests=6),
            "route:acme-orders": Counter(requests=6),
        }
        assert {n for f in scoped for n in f["routes"]} <= {"acme-orders"}

        # How long after a second ends its frame is on the endpoint (polled every 20 ms).
        delays = measure_delays(gw, owner, client_url=gw.url, seconds=4)
        report_delays("sqlite, 2 workers", delays)
        assert max(delays) <= 1.5


def report_delays(setup: str, delays: list[float]) -> None:
    print(
        f"\nlive frame delay after its second ended ({setup}): median"
        f" {statistics.median(delays):.3f} s, max {max(delays):.3f} s, n={len(delays)}"
    )


def measure_delays(gw: Gateway, token: str, *, client_url: str, seconds: int) -> list[float]:
    """Send a request every ~50 ms and poll the endpoint; for each new frame, when it was
    first seen minus the end of its second."""
    before = {f["second"] for f in live_frames(gw, token, 3)}  # out before the polling
    seen: dict[int, float] = {}
    end = time.time() + seconds
    with httpx.Client(base_url=client_url, timeout=10) as client:
        last = 0.0
        while time.time() < end:
            now = time.time()
            if now - last >= 0.05:
                client.get("/open")
                last = now
            for frame in live_frames(gw, token, 3):
                seen.setdefault(frame["second"], time.time())
            time.sleep(0.02)
    return [at - (second + 1) for second, at in seen.items() if second not in before]


async def test_two_nodes_on_postgresql_and_redis_merge_into_one_frame(
    upstream: int, postgres_server: PostgresServer, redis_server: RedisServer
) -> None:
    url = postgres_server.create_database()
    await upgrade_to_head(url)
    engine = create_engine(url)
    doc = gateway_config(upstream, free_port())
    await apply_config(engine, doc)
    settings = Settings(database_url=url, redis_url=redis_server.url)
    redis = [SharedRedis.from_settings(settings) for _ in range(2)]
    nodes = [LiveTraffic(engine, settings, r) for r in redis if r is not None]
    try:
        for node in nodes:
            await node.start()
        arrived = Arrivals(nodes[0])
        env = {
            "PORTCULLIS_DATABASE_URL": url,
            "PORTCULLIS_REDIS_URL": redis_server.url,
            "PORTCULLIS_LOG_LEVEL": "warning",
        }
        # Started and stopped off the event loop: the control planes keep reading meanwhile.
        planes = ExitStack()
        # A real control-plane process too (its background jobs run a LiveTraffic on Redis).
        cp = await asyncio.to_thread(
            planes.enter_context,
            control_plane(url, env={"PORTCULLIS_REDIS_URL": redis_server.url}),
        )
        a, b = [
            await asyncio.to_thread(
                planes.enter_context,
                granian_app(DATA_PLANE_TARGET, env={**env, "PORTCULLIS_NODE_NAME": name}),
            )
            for name in ("node-a", "node-b")
        ]
        try:
            # Both nodes' workers report (every second, also idle).
            await wait_frames(nodes[0], lambda f: f.workers == 2, "both nodes reporting")
            # (A starting worker's first report can be late: it is not waited for.)
            late_before = [n.late_reports for n in nodes]
            start = int(time.time())
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{a}", timeout=10) as ca,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{b}", timeout=10) as cb,
            ):

                async def burst(client: httpx.AsyncClient, path: str, n: int) -> list[int]:
                    return [(await client.get(path)).status_code for _ in range(n)]

                got = await asyncio.gather(
                    burst(ca, "/open", 40), burst(cb, "/acme", 30), burst(cb, "/down", 5)
                )
            assert [Counter(s) for s in got] == [
                Counter({200: 40}),
                Counter({200: 30}),
                Counter({502: 5}),
            ]

            def totals(node: LiveTraffic) -> dict[str, int]:
                frames = node.since(start - 1)
                return {
                    "open": sum(f.routes["open"].requests for f in frames if "open" in f.routes),
                    "acme": sum(
                        f.routes["acme-orders"].requests
                        for f in frames
                        if "acme-orders" in f.routes
                    ),
                    "5xx": sum(f.totals.errors_5xx for f in frames),
                    "all": sum(f.totals.requests for f in frames),
                }

            want = {"open": 40, "acme": 30, "5xx": 5, "all": 75}
            await wait_frames(nodes[0], lambda f: totals(nodes[0]) == want, "every request")
            await wait_frames(nodes[1], lambda f: totals(nodes[1]) == want, "every request")
            done = int(time.time())
            # The control-plane process's endpoint shows the same frames.
            await AuthService(engine, hasher=TEST_PASSWORD_HASHER).create_user(
                "owner@example.com", PASSWORD, Role.OWNER
            )
            async with httpx.AsyncClient(base_url=cp.url, timeout=10) as admin:
                r = await admin.post(
                    "/admin/v1/auth/login",
                    json={"email": "owner@example.com", "password": PASSWORD},
                )
                assert r.status_code == 200, r.text
                auth = {"authorization": f"Bearer {r.json()['access_token']}"}
                r = await admin.get("/admin/v1/analytics/live", headers=auth)
                assert r.status_code == 200, r.text
                served = {f["second"]: f for f in r.json()["frames"]}
        finally:
            await asyncio.to_thread(planes.close)
        frames = [node.since(start - 1) for node in nodes]
        # The same frames on both control-plane nodes, each merged from both data-plane nodes.
        assert frames[0] == frames[1]
        merged = [f for f in frames[0] if f.second < done]
        assert merged
        assert all(f.workers == 2 for f in merged), [f.workers for f in merged]
        assert any("open" in f.routes and "acme-orders" in f.routes for f in frames[0]), (
            "no second had both nodes' traffic"
        )
        assert [n.late_reports for n in nodes] == late_before
        assert [served[f.second] for f in merged] == [f.as_json() for f in merged]
        delays = [at - (f.second + 1) for f, at in arrived.frames if f.second >= start]
        report_delays("postgresql + redis, 2 nodes", delays)
        assert max(delays) <= 1.5
    finally:
        for node in nodes:
            await node.stop()
        for r in redis:
            if r is not None:
                await r.aclose()
        await engine.dispose()


async def wait_frames(
    node: LiveTraffic, condition: Any, what: str, timeout: float = 30.0
) -> TrafficFrame:
    """Wait (frame by frame) until a frame satisfies `condition`."""
    listener = node.listen()
    try:
        async with asyncio.timeout(timeout):
            async for frame in listener:
                if condition(frame):
                    return frame
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None
    finally:
        listener.close()
    raise AssertionError("the live traffic stopped")


class Arrivals:
    """Every frame a control plane emits, with the wall-clock time it came out."""

    def __init__(self, node: LiveTraffic) -> None:
        self.frames: list[tuple[TrafficFrame, float]] = []
        self._listener = node.listen(maxsize=1000)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for frame in self._listener:
            self.frames.append((frame, time.time()))
