"""Health endpoints and behaviour on a store that is not migrated yet."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import insert, update

from portcullis.admin.app import create_admin_app
from portcullis.runtime.heartbeat import NodeHeartbeat
from portcullis.services.rbac import Role
from portcullis.settings import Settings
from portcullis.store.engine import write_transaction
from portcullis.store.identity_tables import DataPlaneNodeRow
from portcullis.store.tables import ConfigHeadRow
from support.servers import gateway


async def _node(app: FastAPI, node: str, version: int, beat: datetime | None = None) -> None:
    """A data-plane heartbeat row, as a worker serving `version` would write it."""
    at = beat or datetime.now(UTC)
    async with write_transaction(app.state.admin.engine) as conn:
        await conn.execute(
            insert(DataPlaneNodeRow).values(
                id=node,
                node_name=node.split(":")[0],
                pid=1,
                config_version=version,
                started_at=at,
                heartbeat_at=at,
            )
        )


async def _head_moved_at(app: FastAPI, moment: datetime) -> None:
    async with write_transaction(app.state.admin.engine) as conn:
        await conn.execute(update(ConfigHeadRow).values(updated_at=moment))


async def test_ready_needs_a_live_data_plane_worker(app: FastAPI, owner: httpx.AsyncClient) -> None:
    assert (await owner.get("/health/live")).json() == {"status": "ok"}
    missing = await owner.get("/health/ready")
    assert missing.status_code == 503
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["component"] == "data-plane"
    assert "no data-plane worker" in missing.json()["detail"]
    # A worker that stopped beating three intervals ago does not count.
    await _node(app, "gone:h:1", 0, datetime.now(UTC) - timedelta(seconds=30))
    assert (await owner.get("/health/ready")).status_code == 503
    hb = NodeHeartbeat(app.state.admin.engine, node_name="edge", version=lambda: 0, interval=60)
    assert await hb.beat()
    ready = await owner.get("/health/ready")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert (body["status"], body["config_version"]) == ("ok", 0)
    [node] = body["data_plane"]["nodes"]
    assert (node["id"], node["config_version"], node["state"]) == (hb.id, 0, "current")


async def test_a_worker_behind_the_current_version_fails_readiness_after_the_window(
    app: FastAPI, owner: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    before_change = datetime.now(UTC) - timedelta(milliseconds=200)
    await _node(app, "edge:h:1", 0, before_change)
    applied = await owner.post("/admin/v1/services", json={"name": "a", "url": "http://a"})
    assert applied.status_code == 201
    # Just changed, and the worker has not beaten since: it is still propagating.
    ready = await owner.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["data_plane"]["nodes"][0]["state"] == "propagating"
    # The worker beat well after the change and still serves version 0: lagging.
    await _head_moved_at(app, datetime.now(UTC) - timedelta(seconds=10))
    # Anonymous probes learn only that the gateway is not ready.
    hidden = await anonymous.get("/health/ready")
    assert hidden.status_code == 503
    assert set(hidden.json()) == {"type", "title", "status", "detail"}
    assert hidden.json()["detail"] == "not ready"
    lagging = await owner.get("/health/ready")
    assert lagging.status_code == 503
    problem = lagging.json()
    assert problem["component"] == "data-plane"
    assert problem["config_version"] == 1
    assert "edge:h:1 serves version 0" in problem["detail"]
    assert [n["state"] for n in problem["nodes"]] == ["lagging"]
    listed = await owner.get("/admin/v1/data-plane/nodes?state=lagging")
    assert [n["id"] for n in listed.json()["items"]] == ["edge:h:1"]


async def test_control_plane_only_deployments_skip_the_data_plane_check(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url, ready_requires_data_plane=False)
    app = create_admin_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            ready = await client.get("/health/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json() == {"status": "ok"}


async def test_node_listing_pages_sorts_and_filters(app: FastAPI, owner: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    for i in range(3):
        await _node(app, f"edge{i}:h:{i}", 0, now - timedelta(seconds=i))
    await _node(app, "old:h:9", 0, now - timedelta(minutes=5))
    first = await owner.get("/admin/v1/data-plane/nodes?limit=2&sort=-node_name")
    assert first.status_code == 200, first.text
    assert [n["id"] for n in first.json()["items"]] == ["old:h:9", "edge2:h:2"]
    assert first.headers["link"].endswith('rel="next"')
    rest = await owner.get(first.json()["next"])
    assert [n["id"] for n in rest.json()["items"]] == ["edge1:h:1", "edge0:h:0"]
    assert rest.json()["next"] is None
    stale = await owner.get("/admin/v1/data-plane/nodes?state=stale")
    assert [(n["id"], n["state"]) for n in stale.json()["items"]] == [("old:h:9", "stale")]
    named = await owner.get("/admin/v1/data-plane/nodes?node_name=edge1")
    assert [n["pid"] for n in named.json()["items"]] == [1]


async def test_readiness_details_are_for_deployment_wide_admins(
    app: FastAPI,
    anonymous: httpx.AsyncClient,
    owner: httpx.AsyncClient,
    client_for,  # type: ignore[no-untyped-def]
) -> None:
    hb = NodeHeartbeat(app.state.admin.engine, node_name="edge", version=lambda: 0, interval=60)
    assert await hb.beat()
    # No PIDs, node names or upstream names for anonymous callers: the status only.
    anonymous_view = await anonymous.get("/health/ready")
    # (Once 503 on the loaded suite machine: the owner's view names the failing part.)
    assert anonymous_view.status_code == 200, (await owner.get("/health/ready")).text
    assert anonymous_view.json() == {"status": "ok"}
    org = (await owner.post("/admin/v1/organizations", json={"name": "tenant"})).json()["id"]
    tenant_admin: httpx.AsyncClient = await client_for(Role.ADMIN, org)
    # Each check follows a fresh beat: signing an admin in (argon2) can outlast the
    # node's freshness window on a loaded machine, and a stale node is "not ready".
    assert await hb.beat()
    assert (await tenant_admin.get("/health/ready")).json() == {"status": "ok"}
    token = await owner.post(
        "/admin/v1/tokens", json={"name": "probe", "scopes": ["config:read"], "expires_in": 600}
    )
    probe = {"authorization": f"Bearer {token.json()['token']}"}
    assert await hb.beat()
    detailed = (await anonymous.get("/health/ready", headers=probe)).json()
    assert [n["id"] for n in detailed["data_plane"]["nodes"]] == [hb.id]


async def test_readiness_details_can_be_public(database_url: str) -> None:
    app = create_admin_app(Settings(database_url=database_url, readiness_details="public"))
    async with app.router.lifespan_context(app):
        hb = NodeHeartbeat(app.state.admin.engine, node_name="e", version=lambda: 0, interval=60)
        assert await hb.beat()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            ready = (await client.get("/health/ready")).json()
            assert ready["config_version"] == 0
            assert [n["id"] for n in ready["data_plane"]["nodes"]] == [hb.id]


async def test_metrics_need_a_bearer_credential(
    anonymous: httpx.AsyncClient,
    owner: httpx.AsyncClient,
    client_for,  # type: ignore[no-untyped-def]
) -> None:
    refused = await anonymous.get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    # Prometheus scrapes with an admin API token (`authorization: credentials_file`).
    token = await owner.post(
        "/admin/v1/tokens", json={"name": "prom", "scopes": ["analytics:read"], "expires_in": 600}
    )
    scraper = {"authorization": f"Bearer {token.json()['token']}"}
    scraped = await anonymous.get("/metrics", headers=scraper)
    assert scraped.status_code == 200, scraped.text
    assert "portcullis_config_version" in scraped.text
    assert "portcullis_webhook_queue_depth 0.0" in scraped.text
    narrow = await owner.post(
        "/admin/v1/tokens", json={"name": "cfg", "scopes": ["config:read"], "expires_in": 600}
    )
    narrow_scraper = {"authorization": f"Bearer {narrow.json()['token']}"}
    assert (await anonymous.get("/metrics", headers=narrow_scraper)).status_code == 403
    # The series cover every tenant: an organization's admin can't read them.
    org = (await owner.post("/admin/v1/organizations", json={"name": "tenant"})).json()["id"]
    tenant_admin: httpx.AsyncClient = await client_for(Role.ADMIN, org)
    assert (await tenant_admin.get("/metrics")).status_code == 403


async def test_metrics_can_be_public_or_take_a_scrape_token(database_url: str) -> None:
    for settings, headers in (
        (Settings(database_url=database_url, metrics_public=True), {}),
        (
            Settings(database_url=database_url, metrics_token="a-scrape-token"),
            {"authorization": "Bearer a-scrape-token"},
        ),
    ):
        app = create_admin_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
                scraped = await client.get("/metrics", headers=headers)
                assert scraped.status_code == 200, scraped.text


def test_ready_with_the_real_gateway(tmp_path: Path) -> None:
    """`portcullis serve`: the data plane's heartbeat makes the control plane ready."""
    with gateway(tmp_path, None, extra_env={"PORTCULLIS_HEARTBEAT_INTERVAL": "0.2"}) as gw:
        deadline = time.monotonic() + 20
        while True:
            ready = httpx.get(f"{gw.admin_url}/health/ready", timeout=5)
            if ready.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert ready.status_code == 200, ready.text
        [node] = ready.json()["data_plane"]["nodes"]
        assert node["config_version"] == 0
        assert node["state"] == "current"
        assert node["id"].startswith("portcullis:")


async def test_unmigrated_store_is_not_ready_and_api_answers_503(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"
    # No admin credential can be checked on an unmigrated store: details only when public.
    app = create_admin_app(Settings(database_url=url, readiness_details="public"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            ready = await client.get("/health/ready")
            assert ready.status_code == 503
            assert ready.headers["content-type"] == "application/problem+json"
            assert ready.json()["component"] == "store"
            api = await client.get(
                "/admin/v1/services", headers={"authorization": "Bearer not.a.jwt"}
            )
            assert api.status_code == 503
            assert api.headers["retry-after"] == "5"
            assert api.json()["type"].endswith("/store-unavailable")


class _CorsSettings(Settings):
    """Settings with the (proposed) admin CORS allow-list field."""

    admin_cors_origins: list[str] = ["https://console.example"]


async def test_cors_only_for_configured_origins(database_url: str) -> None:
    app = create_admin_app(_CorsSettings(database_url=database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            preflight = {"Access-Control-Request-Method": "PATCH"}
            allowed = await client.options(
                "/admin/v1/services",
                headers={"Origin": "https://console.example", **preflight},
            )
            assert allowed.headers["access-control-allow-origin"] == "https://console.example"
            denied = await client.options(
                "/admin/v1/services", headers={"Origin": "https://evil.example", **preflight}
            )
            assert "access-control-allow-origin" not in denied.headers
