"""Admin API of the OAuth2 server: clients (lifecycle, tenancy, secrecy) and signing keys."""

from __future__ import annotations

import base64
import logging
from typing import Any

import httpx
import pytest
from admin_support import PASSWORD
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_private_key
from fastapi import FastAPI
from sqlalchemy import select, text

from portcullis.identity.events import EventKind, IdentityEventFeed
from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.store.identity_tables import SigningKeyRow

PROBLEM = "application/problem+json"


async def consumer(
    client: httpx.AsyncClient, username: str, organization: str | None = None
) -> None:
    body: dict[str, str] = {"username": username}
    if organization is not None:
        body["organization"] = organization
    response = await client.post("/admin/v1/consumers", json=body)
    assert response.status_code == 201, response.text


async def create_client(
    client: httpx.AsyncClient, username: str = "acme", **body: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/admin/v1/consumers/{username}/oauth-clients", json={"name": "main", **body}
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def fetch_token(
    client: httpx.AsyncClient, client_id: str, client_secret: str
) -> httpx.Response:
    return await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, client_secret),
    )


async def dump_store(app: FastAPI) -> str:
    out = []
    async with app.state.admin.engine.connect() as conn:
        names = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
        for name in names:
            rows = (await conn.execute(text(f'SELECT * FROM "{name}"'))).all()
            out.append(f"{name}: {rows!r}")
    return "\n".join(out)


async def test_create_show_list_patch_delete(owner: httpx.AsyncClient, app: FastAPI) -> None:
    await consumer(owner, "acme")
    response = await owner.post(
        "/admin/v1/consumers/acme/oauth-clients",
        json={
            "name": "billing",
            "allowed_scopes": ["orders:read", "orders:write", "orders:read"],
            "token_ttl": 600,
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    secret = created.pop("client_secret")
    assert secret.startswith("pcs_")
    assert len(base64.urlsafe_b64decode(secret[4:] + "=")) == 32
    assert created["client_id"].startswith("pcc_")
    assert created["allowed_scopes"] == ["orders:read", "orders:write"]
    assert created["token_ttl"] == 600
    assert created["status"] == "active"
    assert created["consumer"] == "acme"
    assert created["created_by"] == "user:owner-0@example.com"
    client_id = created["client_id"]
    assert response.headers["location"] == f"/admin/v1/oauth-clients/{client_id}"
    assert response.headers["cache-control"] == "no-store"

    shown = await owner.get(f"/admin/v1/oauth-clients/{client_id}")
    assert shown.status_code == 200
    assert shown.json() == created
    assert "client_secret" not in shown.text
    assert shown.headers["etag"] == response.headers["etag"]

    second = await create_client(owner, name="another")
    first_page = await owner.get("/admin/v1/consumers/acme/oauth-clients?limit=1&sort=name")
    assert [c["name"] for c in first_page.json()["items"]] == ["another"]
    assert first_page.headers["link"] == f'<{first_page.json()["next"]}>; rel="next"'
    rest = (await owner.get(first_page.json()["next"])).json()
    assert [c["client_id"] for c in rest["items"]] == [client_id]
    assert rest["next"] is None
    assert "client_secret" not in first_page.text + str(rest)

    stale = await owner.patch(
        f"/admin/v1/oauth-clients/{client_id}", json={"name": "x"}, headers={"If-Match": '"0"'}
    )
    assert stale.status_code == 412
    patched = await owner.patch(
        f"/admin/v1/oauth-clients/{client_id}",
        json={"name": "billing-v2", "allowed_scopes": ["orders:read"], "status": "disabled"},
        headers={"If-Match": shown.headers["etag"]},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "billing-v2"
    assert patched.json()["allowed_scopes"] == ["orders:read"]
    assert patched.json()["status"] == "disabled"
    assert patched.json()["token_ttl"] == 600
    for bad in ({"name": None}, {"secret": "x"}, {"status": "gone"}, {"token_ttl": 1}):
        refused = await owner.patch(f"/admin/v1/oauth-clients/{client_id}", json=bad)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.headers["content-type"] == PROBLEM

    assert (
        await owner.delete(f"/admin/v1/oauth-clients/{client_id}", headers={"If-Match": '"0"'})
    ).status_code == 412
    deleted = await owner.delete(
        f"/admin/v1/oauth-clients/{client_id}", headers={"If-Match": patched.headers["etag"]}
    )
    assert deleted.status_code == 204
    assert (await owner.get(f"/admin/v1/oauth-clients/{client_id}")).status_code == 404
    assert (await fetch_token(owner, client_id, secret)).status_code == 401
    feed = await IdentityEventFeed(app.state.admin.engine).since(0)
    assert [(e.kind, e.subject) for e in feed if e.kind is EventKind.OAUTH_CLIENT] == [
        (EventKind.OAUTH_CLIENT, client_id),
        (EventKind.OAUTH_CLIENT, second["client_id"]),
        (EventKind.OAUTH_CLIENT, client_id),
        (EventKind.OAUTH_CLIENT, client_id),
    ]


async def test_invalid_input_is_a_422_naming_the_field(
    owner: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORTCULLIS_OAUTH_MAX_TOKEN_TTL", "600")
    await consumer(owner, "acme")
    missing = await owner.post("/admin/v1/consumers/ghost/oauth-clients", json={"name": "x"})
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM
    for body, pointer in (
        ({"name": "x", "allowed_scopes": ["two words"]}, "#/allowed_scopes/0"),
        ({"name": "x", "allowed_scopes": ['quo"te']}, "#/allowed_scopes/0"),
        ({"name": ""}, "#/name"),
        ({"name": "x", "token_ttl": 59}, "#/token_ttl"),
        ({"name": "x", "token_ttl": 601}, "#/token_ttl"),
        ({"name": "x", "client_secret": "mine"}, "#/client_secret"),
    ):
        response = await owner.post("/admin/v1/consumers/acme/oauth-clients", json=body)
        assert response.status_code == 422, (body, response.text)
        assert [e["pointer"] for e in response.json()["errors"]] == [pointer], body


async def test_rotating_a_secret_stops_the_old_one_at_once(owner: httpx.AsyncClient) -> None:
    await consumer(owner, "acme")
    created = await create_client(owner)
    client_id, old = created["client_id"], created["client_secret"]
    assert (await fetch_token(owner, client_id, old)).status_code == 200
    rotated = await owner.post(f"/admin/v1/oauth-clients/{client_id}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    new = rotated.json()["client_secret"]
    assert new != old
    assert rotated.json()["client_id"] == client_id
    assert (await fetch_token(owner, client_id, old)).status_code == 401
    assert (await fetch_token(owner, client_id, new)).status_code == 200
    missing = await owner.post("/admin/v1/oauth-clients/pcc_000000000000000000000000/rotate-secret")
    assert missing.status_code == 404


async def test_organization_limited_admins_see_only_their_clients(
    owner: httpx.AsyncClient, anonymous: httpx.AsyncClient, auth: AuthService
) -> None:
    org_a = (await owner.post("/admin/v1/organizations", json={"name": "org-a"})).json()["id"]
    await owner.post("/admin/v1/organizations", json={"name": "org-b"})
    await consumer(owner, "alpha", "org-a")
    await consumer(owner, "beta", "org-b")
    mine = await create_client(owner, "alpha", name="mine")
    theirs = await create_client(owner, "beta", name="theirs")
    assert mine["organization"] == "org-a"
    await auth.create_user("limited@example.com", PASSWORD, Role.ADMIN, org_a)
    login = await anonymous.post(
        "/admin/v1/auth/login", json={"email": "limited@example.com", "password": PASSWORD}
    )
    anonymous.headers["authorization"] = f"Bearer {login.json()['access_token']}"
    limited = anonymous

    listed = (await limited.get("/admin/v1/consumers/alpha/oauth-clients")).json()["items"]
    assert [c["client_id"] for c in listed] == [mine["client_id"]]
    assert (await limited.get(f"/admin/v1/oauth-clients/{mine['client_id']}")).status_code == 200
    for method, path, body in (
        ("GET", f"/admin/v1/oauth-clients/{theirs['client_id']}", None),
        ("PATCH", f"/admin/v1/oauth-clients/{theirs['client_id']}", {"name": "x"}),
        ("DELETE", f"/admin/v1/oauth-clients/{theirs['client_id']}", None),
        ("POST", f"/admin/v1/oauth-clients/{theirs['client_id']}/rotate-secret", None),
        ("POST", "/admin/v1/consumers/beta/oauth-clients", {"name": "x"}),
        ("GET", "/admin/v1/consumers/beta/oauth-clients", None),
    ):
        response = await limited.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
    assert (await owner.get(f"/admin/v1/oauth-clients/{theirs['client_id']}")).json()[
        "name"
    ] == "theirs"
    rotate = await limited.post("/admin/v1/oauth/signing-keys/rotate")
    assert rotate.status_code == 403
    assert (await limited.get("/admin/v1/oauth/signing-keys")).status_code == 200


async def test_viewers_read_but_cannot_change_clients(client_for, owner: httpx.AsyncClient) -> None:  # type: ignore[no-untyped-def]
    await consumer(owner, "acme")
    created = await create_client(owner)
    viewer: httpx.AsyncClient = await client_for(Role.VIEWER)
    shown = await viewer.get(f"/admin/v1/oauth-clients/{created['client_id']}")
    assert shown.status_code == 200
    denied = await viewer.post(f"/admin/v1/oauth-clients/{created['client_id']}/rotate-secret")
    assert denied.status_code == 403
    assert denied.json()["required_permission"] == "credentials:write"


async def test_signing_keys_are_listed_and_rotated_without_private_material(
    owner: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    assert (await owner.get("/admin/v1/oauth/signing-keys")).json() == {"items": [], "next": None}
    first = await owner.post("/admin/v1/oauth/signing-keys/rotate")
    assert first.status_code == 200, first.text
    kid = first.json()["kid"]
    assert first.json()["status"] == "active"
    second = (await owner.post("/admin/v1/oauth/signing-keys/rotate")).json()
    listed = (await owner.get("/admin/v1/oauth/signing-keys")).json()["items"]
    assert [(k["kid"], k["status"]) for k in listed] == [
        (second["kid"], "active"),
        (kid, "retired"),
    ]
    assert listed[1]["retired_at"] is not None
    assert listed[1]["remove_after"] > listed[1]["retired_at"]
    assert listed[0] == second

    jwks = await anonymous.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    assert jwks.headers["cache-control"] == "public, max-age=300"
    assert {k["kid"] for k in jwks.json()["keys"]} == {kid, second["kid"]}
    for key in [*jwks.json()["keys"], *(k["public_jwk"] for k in listed)]:
        assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    again = await anonymous.get(
        "/.well-known/jwks.json", headers={"If-None-Match": jwks.headers["etag"]}
    )
    assert again.status_code == 304


async def test_mutations_are_audited_and_no_secret_is_stored_or_logged(
    owner: httpx.AsyncClient,
    app: FastAPI,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    await consumer(owner, "acme")
    created = await create_client(owner, allowed_scopes=["a"])
    client_id = created["client_id"]
    await owner.patch(f"/admin/v1/oauth-clients/{client_id}", json={"name": "renamed"})
    rotated = (await owner.post(f"/admin/v1/oauth-clients/{client_id}/rotate-secret")).json()
    await owner.post("/admin/v1/oauth/signing-keys/rotate")
    issued = await fetch_token(owner, client_id, rotated["client_secret"])
    access_token = issued.json()["access_token"]
    # A failed authentication must not log the secret it was given either.
    await fetch_token(owner, client_id, created["client_secret"])
    await owner.delete(f"/admin/v1/oauth-clients/{client_id}")

    events = (await owner.get("/admin/v1/audit-events?resource_type=oauth_client&limit=50")).json()[
        "items"
    ]
    assert [(e["action"], e["resource_id"]) for e in reversed(events)] == [
        ("create", client_id),
        ("update", client_id),
        ("rotate-secret", client_id),
        ("delete", client_id),
    ]
    assert {"path": "/name", "old": "main", "new": "renamed"} in events[2]["diff"]["changes"]
    keys = (await owner.get("/admin/v1/audit-events?resource_type=signing_key")).json()["items"]
    assert [e["action"] for e in keys] == ["rotate"]

    async with app.state.admin.engine.connect() as conn:
        stored_keys = (
            await conn.execute(select(SigningKeyRow.kid, SigningKeyRow.private_key))
        ).all()
    private_material = []
    for kid, blob in stored_keys:
        der = app.state.admin.secret.decrypt(blob, context=kid.encode())
        key = load_der_private_key(der, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        private_material += [
            der.hex(),
            base64.b64encode(der).decode(),
            base64.urlsafe_b64encode(scalar).rstrip(b"=").decode(),
            scalar.hex(),
        ]
    audit_text = (await owner.get("/admin/v1/audit-events/export?format=jsonl")).text
    store = await dump_store(app)
    captured = capfd.readouterr()
    logs = caplog.text + captured.out + captured.err
    for haystack in (audit_text, store, logs):
        for secret in (created["client_secret"], rotated["client_secret"], access_token):
            assert secret not in haystack
        for material in private_material:
            assert material not in haystack
        assert "PRIVATE KEY" not in haystack


async def test_idempotent_retries_never_store_a_client_secret(
    owner: httpx.AsyncClient, app: FastAPI
) -> None:
    """Responses that show a secret once are marked no-store; the idempotency layer must obey."""
    await consumer(owner, "acme")
    created = await owner.post(
        "/admin/v1/consumers/acme/oauth-clients",
        json={"name": "k"},
        headers={"Idempotency-Key": "one"},
    )
    assert created.status_code == 201, created.text
    rotated = await owner.post(
        f"/admin/v1/oauth-clients/{created.json()['client_id']}/rotate-secret",
        headers={"Idempotency-Key": "two"},
    )
    assert rotated.status_code == 200, rotated.text
    store = await dump_store(app)
    for response in (created, rotated):
        assert response.json()["client_secret"] not in store
