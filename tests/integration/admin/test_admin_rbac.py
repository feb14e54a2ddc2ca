"""The role-by-endpoint matrix: 401 without credentials, 403 without the permission, else allowed.

The expected permissions of each role are written out here, independently of
`portcullis.services.rbac`, and the endpoint table must list every route the app
has, so a new endpoint without an entry fails this test.
"""

from __future__ import annotations

import httpx
import pytest
from admin_support import ENDPOINTS, ROLE_GRANTS, concrete
from fastapi import FastAPI

from portcullis.services.rbac import Role

ALL_ROLES = (Role.OWNER, Role.ADMIN, Role.OPERATOR, Role.VIEWER)


def test_table_covers_every_admin_route(app: FastAPI) -> None:
    routes = {
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        if path.startswith("/admin/v1")
        for method in item
    }
    table = {(method, path) for method, path, _ in ENDPOINTS}
    assert table == routes


@pytest.mark.parametrize(("method", "path", "permission"), ENDPOINTS)
async def test_unauthenticated_is_401(
    anonymous: httpx.AsyncClient, method: str, path: str, permission: str | None
) -> None:
    response = await anonymous.request(method, concrete(path), json={})
    if permission == "public":
        assert response.status_code not in (401, 403), response.text
        return
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.both_stores
@pytest.mark.parametrize("role", ALL_ROLES)
async def test_role_matrix(client_for, role: Role) -> None:  # type: ignore[no-untyped-def]
    client: httpx.AsyncClient = await client_for(role)
    failures = []
    for method, path, permission in ENDPOINTS:
        if path in ("/admin/v1/auth/logout",):
            continue  # would end this client's own session half-way through the matrix
        response = await client.request(method, concrete(path), json={})
        allowed = permission in ("public", "authenticated") or permission in ROLE_GRANTS[role]
        if allowed and response.status_code in (401, 403):
            failures.append(f"{method} {path}: expected allowed, got {response.status_code}")
        if not allowed and response.status_code != 403:
            failures.append(f"{method} {path}: expected 403, got {response.status_code}")
        assert response.status_code < 500, f"{method} {path}: {response.text}"
    assert not failures, "\n".join(failures)


@pytest.mark.both_stores
async def test_api_token_scopes_narrow_the_owner(owner: httpx.AsyncClient, app: FastAPI) -> None:
    created = await owner.post(
        "/admin/v1/tokens", json={"name": "ci", "scopes": ["config:read"], "expires_in": 3600}
    )
    assert created.status_code == 201, created.text
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as bot:
        bot.headers["authorization"] = f"Bearer {created.json()['token']}"
        assert (await bot.get("/admin/v1/services")).status_code == 200
        denied = await bot.post("/admin/v1/consumers", json={"username": "x"})
        assert denied.status_code == 403
        assert denied.json()["required_permission"] == "config:write"


@pytest.mark.both_stores
async def test_operator_cannot_mint_wider_tokens(client_for) -> None:  # type: ignore[no-untyped-def]
    operator: httpx.AsyncClient = await client_for(Role.OPERATOR)
    response = await operator.post(
        "/admin/v1/tokens", json={"name": "x", "scopes": ["admins:write"], "expires_in": 3600}
    )
    assert response.status_code == 403
    assert "admins:write" in response.json()["detail"]


@pytest.mark.both_stores
async def test_admin_cannot_create_or_manage_owners(client_for) -> None:  # type: ignore[no-untyped-def]
    admin: httpx.AsyncClient = await client_for(Role.ADMIN)
    response = await admin.post(
        "/admin/v1/admin-users",
        json={"email": "boss@example.com", "password": "x" * 16, "role": "owner"},
    )
    assert response.status_code == 403
    ok = await admin.post(
        "/admin/v1/admin-users",
        json={"email": "op@example.com", "password": "x" * 16, "role": "operator"},
    )
    assert ok.status_code == 201, ok.text
