"""End to end: a service and a route created through the admin API serve traffic on the proxy."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.store.engine import create_engine
from support.admin_session import TEST_PASSWORD_HASHER
from support.servers import gateway, granian_app

PASSWORD = "end to end password"


async def _create_owner(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await AuthService(engine, hasher=TEST_PASSWORD_HASHER).create_user(
            "e2e@example.com", PASSWORD, Role.OWNER
        )
    finally:
        await engine.dispose()


def test_entities_created_through_the_api_reach_the_data_plane(tmp_path: Path) -> None:
    with (
        granian_app("portcullis.demo.upstream:create_demo_app") as upstream_port,
        gateway(tmp_path, None) as gw,
    ):
        asyncio.run(_create_owner(gw.database_url))
        with httpx.Client(base_url=gw.admin_url, timeout=10) as admin:
            login = admin.post(
                "/admin/v1/auth/login", json={"email": "e2e@example.com", "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            admin.headers["authorization"] = f"Bearer {login.json()['access_token']}"
            assert httpx.get(f"{gw.url}/demo/health").status_code == 404
            service = admin.post(
                "/admin/v1/services",
                json={"name": "demo", "url": f"http://127.0.0.1:{upstream_port}"},
            )
            assert service.status_code == 201, service.text
            route = admin.post(
                "/admin/v1/routes", json={"name": "demo", "service": "demo", "paths": ["/demo"]}
            )
            assert route.status_code == 201, route.text
            created = time.monotonic()
            status = 0
            while time.monotonic() - created < 30:  # a hang guard; the time is printed
                status = httpx.get(f"{gw.url}/demo/health").status_code
                if status == 200:
                    break
                time.sleep(0.02)
            took = time.monotonic() - created
            assert status == 200
            print(f"\nthe data plane served the new route {took:.2f}s after its creation")
            # And a delete through the API takes the route away again.
            assert admin.delete("/admin/v1/routes/demo").status_code == 204
            deadline = time.monotonic() + 5
            while httpx.get(f"{gw.url}/demo/health").status_code != 404:
                assert time.monotonic() < deadline, "the deleted route kept serving"
                time.sleep(0.02)
