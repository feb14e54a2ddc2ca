"""Organizations (tenants), organization-limited admins, and the security headers."""

from __future__ import annotations

import httpx
from admin_support import PASSWORD

from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role


async def test_organization_crud(owner: httpx.AsyncClient) -> None:
    created = await owner.post("/admin/v1/organizations", json={"name": "acme"})
    assert created.status_code == 201, created.text
    org = created.json()
    assert created.headers["location"] == f"/admin/v1/organizations/{org['id']}"
    assert (await owner.post("/admin/v1/organizations", json={"name": "acme"})).status_code == 409
    renamed = await owner.patch(
        f"/admin/v1/organizations/{org['id']}",
        json={"name": "acme-corp"},
        headers={"If-Match": created.headers["etag"]},
    )
    assert renamed.status_code == 200
    stale = await owner.patch(
        f"/admin/v1/organizations/{org['id']}",
        json={"name": "x"},
        headers={"If-Match": created.headers["etag"]},
    )
    assert stale.status_code == 412
    member = await owner.post(
        "/admin/v1/admin-users",
        json={"email": "m@example.com", "password": PASSWORD, "role": "viewer",
              "organization_id": org["id"]},
    )  # fmt: skip
    assert member.status_code == 201, member.text
    blocked = await owner.delete(f"/admin/v1/organizations/{org['id']}")
    assert blocked.status_code == 409
    assert blocked.json()["dependents"] == [{"kind": "admin_users", "count": 1}]
    unknown = await owner.post(
        "/admin/v1/admin-users",
        json={"email": "n@example.com", "password": PASSWORD, "role": "viewer",
              "organization_id": "missing"},
    )  # fmt: skip
    assert unknown.status_code == 422
    assert unknown.json()["errors"] == [
        {"pointer": "#/organization_id", "detail": "unknown organization"}
    ]


async def test_organization_limited_admin_sees_only_their_org(
    owner: httpx.AsyncClient, anonymous: httpx.AsyncClient, auth: AuthService
) -> None:
    a = (await owner.post("/admin/v1/organizations", json={"name": "a"})).json()["id"]
    b = (await owner.post("/admin/v1/organizations", json={"name": "b"})).json()["id"]
    await auth.create_user("admin-a@example.com", PASSWORD, Role.ADMIN, a)
    other = await auth.create_user("user-b@example.com", PASSWORD, Role.VIEWER, b)
    login = await anonymous.post(
        "/admin/v1/auth/login", json={"email": "admin-a@example.com", "password": PASSWORD}
    )
    headers = {"authorization": f"Bearer {login.json()['access_token']}"}
    orgs = (await anonymous.get("/admin/v1/organizations", headers=headers)).json()["items"]
    assert [o["id"] for o in orgs] == [a]
    users = (await anonymous.get("/admin/v1/admin-users", headers=headers)).json()["items"]
    assert [u["email"] for u in users] == ["admin-a@example.com"]
    hidden = await anonymous.get(f"/admin/v1/admin-users/{other.id}", headers=headers)
    assert hidden.status_code == 404
    cross = await anonymous.post(
        "/admin/v1/admin-users",
        headers=headers,
        json={"email": "x@example.com", "password": PASSWORD, "role": "viewer",
              "organization_id": b},
    )  # fmt: skip
    assert cross.status_code == 403


async def test_security_headers_on_every_response(anonymous: httpx.AsyncClient) -> None:
    for path in ("/health/live", "/admin/v1/services", "/nowhere", "/openapi.json"):
        response = await anonymous.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["x-frame-options"] == "DENY", path
        assert response.headers["referrer-policy"] == "no-referrer", path
        assert "default-src 'none'" in response.headers["content-security-policy"], path
        assert response.headers["cache-control"] == "no-store", path
    docs = await anonymous.get("/docs")
    assert "script-src 'self'" in docs.headers["content-security-policy"]
    assert (
        "access-control-allow-origin"
        not in (
            await anonymous.get("/admin/v1/services", headers={"Origin": "https://evil.example"})
        ).headers
    )
