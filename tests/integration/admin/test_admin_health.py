"""Health endpoints and behaviour on a store that is not migrated yet."""

from __future__ import annotations

from pathlib import Path

import httpx

from portcullis.admin.app import create_admin_app
from portcullis.settings import Settings


async def test_ready_reports_the_config_version(anonymous: httpx.AsyncClient) -> None:
    assert (await anonymous.get("/health/live")).json() == {"status": "ok"}
    ready = await anonymous.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "config_version": 0}


async def test_unmigrated_store_is_not_ready_and_api_answers_503(tmp_path: Path) -> None:
    app = create_admin_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"))
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
