"""`POST /admin/v1/apis/{api}/versions/{version}/sdk` on the admin app in process: a viewer
gets a TypeScript SDK as a zip; a missing generator is a 503 problem that says how to
install it. (The Python SDK through this endpoint against a live gateway, and the 404s and
409: tests/integration/sdk/test_sdks_e2e.py.)"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from admin_support import ClientFactory

from portcullis.services.rbac import Role

URL = "/admin/v1/apis/shop/versions/v1/sdk"
DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Shop", "version": "v1"},
    "servers": [{"url": "https://gateway.example.com/shop/v1"}],
    "paths": {
        "/orders": {
            "get": {
                "operationId": "listOrders",
                "responses": {
                    "200": {
                        "description": "The orders",
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": {"type": "string"}}
                            }
                        },
                    }
                },
            }
        }
    },
}


async def create_shop(owner: httpx.AsyncClient) -> None:
    for path, body in (
        ("services", {"name": "shop", "url": "http://shop.internal:8080"}),
        ("routes", {"name": "shop-v1", "service": "shop", "paths": ["/shop/v1"]}),
        ("apis", {"name": "shop", "versions": [{"name": "v1", "routes": ["shop-v1"],
                                                 "openapi": DOCUMENT}]}),
    ):  # fmt: skip
        created = await owner.post(f"/admin/v1/{path}", json=body)
        assert created.status_code == 201, created.text


async def test_a_viewer_gets_a_zipped_typescript_sdk(
    owner: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    await create_shop(owner)
    viewer = await client_for(Role.VIEWER)
    answered = await viewer.post(URL, params={"lang": "typescript"}, timeout=120)
    assert answered.status_code == 200, answered.text
    assert answered.headers["content-disposition"] == (
        'attachment; filename="shop_v1_client-typescript.zip"'
    )
    archive = zipfile.ZipFile(io.BytesIO(answered.content))
    names = set(archive.namelist())
    assert {"shop_v1_client/sdk.gen.ts", "shop_v1_client/client/index.ts"} <= names
    assert all(name.startswith("shop_v1_client/") for name in names)
    assert "export const listOrders" in archive.read("shop_v1_client/sdk.gen.ts").decode()
    # Generated from the published document: the gateway's URL for the version's route,
    # not the server the stored description names.
    client = archive.read("shop_v1_client/client.gen.ts").decode()
    assert "/shop/v1'" in client
    assert "gateway.example.com" not in client


async def test_a_missing_generator_is_a_503_saying_how_to_install_it(
    owner: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    await create_shop(owner)
    monkeypatch.setenv("PORTCULLIS_OPENAPI_TS", str(tmp_path / "no-openapi-ts"))
    refused = await owner.post(URL, params={"lang": "typescript"})
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == "https://portcullis.dev/problems/sdk-generator-unavailable"
    assert "npm install @hey-api/openapi-ts@0.94.5" in problem["detail"]


async def test_a_version_without_a_description_is_a_409(owner: httpx.AsyncClient) -> None:
    created = await owner.post(
        "/admin/v1/apis", json={"name": "bare", "versions": [{"name": "v1"}]}
    )
    assert created.status_code == 201, created.text
    refused = await owner.post("/admin/v1/apis/bare/versions/v1/sdk", params={"lang": "python"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"] == "https://portcullis.dev/problems/no-api-description"
