"""Analytics end to end: requests through a real `portcullis serve`, the request log
written by its workers, the realtime view of its admin API, then one rollup round
and the usage and latency answers compared with the logged rows."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
import yaml

from portcullis.analytics import queries
from portcullis.analytics.queries import Scope
from portcullis.analytics.rollups import Rollups
from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.store.engine import create_engine, sqlite_file
from support.admin_session import TEST_PASSWORD_HASHER
from support.servers import gateway, granian_app

DEMO = "portcullis.demo.upstream:create_demo_app"
PASSWORD = "analytics e2e password"


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with granian_app(DEMO) as port:
        yield port


def logged_latencies(database_url: str, route: str) -> list[float]:
    path = sqlite_file(database_url)
    assert path is not None
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT latency_ms FROM request_log WHERE route = ? ORDER BY latency_ms", (route,)
        ).fetchall()
    return [r[0] for r in rows]


async def test_gateway_traffic_reaches_realtime_rollups_and_percentiles(
    tmp_path: Path, upstream: int
) -> None:
    config = {
        "services": [
            {"name": "echo", "url": f"http://127.0.0.1:{upstream}/echo"},
            {"name": "slowpoke", "url": f"http://127.0.0.1:{upstream}/delay"},
        ],
        "routes": [
            {"name": "fast", "service": "echo", "paths": ["/fast"]},
            {"name": "slow", "service": "slowpoke", "paths": ["/slow"]},
        ],
    }
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = {"PORTCULLIS_REQUEST_LOG_FLUSH_INTERVAL": "0.2"}
    with gateway(tmp_path, cfg, extra_env=env) as gw:
        engine = create_engine(gw.database_url)
        try:
            await AuthService(engine, hasher=TEST_PASSWORD_HASHER).create_user(
                "e2e@example.com", PASSWORD, Role.VIEWER
            )
        finally:
            await engine.dispose()
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            statuses = [client.get("/fast").status_code for _ in range(40)]
            statuses += [client.get("/slow/0.05").status_code for _ in range(20)]
        assert statuses == [200] * 60
        async with httpx.AsyncClient(base_url=gw.admin_url, timeout=10) as admin:
            login = await admin.post(
                "/admin/v1/auth/login", json={"email": "e2e@example.com", "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            admin.headers["authorization"] = f"Bearer {login.json()['access_token']}"
            deadline = time.monotonic() + 15
            seen = -1
            while time.monotonic() < deadline:
                view = await admin.get("/admin/v1/analytics/realtime", params={"window": 120})
                assert view.status_code == 200, view.text
                seen = view.json()["requests"]
                if seen == 60:
                    break
                await asyncio.sleep(0.3)
            assert seen == 60
            assert view.json()["latency_p99_ms"] >= 50

    # The gateway is stopped: roll everything up as if two minutes had passed.
    engine = create_engine(gw.database_url)
    try:
        await Rollups(engine, clock=lambda: time.time() + 120).run_once()
        now = int(time.time())
        series = await queries.usage(engine, now - 3600, now + 60, "hour", Scope())
        assert series.totals.requests == 60
        slow = await queries.usage(engine, now - 3600, now + 60, "minute", Scope(route="slow"))
        assert slow.totals.requests == 20
        exact = logged_latencies(gw.database_url, "slow")
        assert exact[0] >= 50
        for q in (0.5, 0.95):
            estimate = slow.totals.sketch.quantile(q)
            expected = exact[math.floor(q * (len(exact) - 1))]
            assert estimate is not None
            assert abs(estimate - expected) <= 0.01 * expected * (1 + 1e-9)
    finally:
        await engine.dispose()
