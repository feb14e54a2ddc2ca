"""Admin API of consumers' basic-auth, hmac-auth and mtls-auth credentials: lifecycle,
secrets shown once (never stored in the clear, audited or logged), input problems,
organization scoping, events for the data plane, and retirement with the consumer."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from admin_support import ClientFactory
from fastapi import FastAPI
from sqlalchemy import select
from test_admin_oauth_clients import consumer

from portcullis.identity.events import EventKind, IdentityEventFeed
from portcullis.services.rbac import Role
from portcullis.store.admin_tables import IdempotencyKeyRow
from portcullis.store.identity_tables import ConsumerCredentialRow

BASE = "/admin/v1/consumers"


async def create(client: httpx.AsyncClient, who: str, kind: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"{BASE}/{who}/{kind}", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["location"].endswith(response.json()["id"])
    data: dict[str, Any] = response.json()
    return data


async def test_lifecycle_of_each_kind_with_secrets_shown_once(
    owner: httpx.AsyncClient,
    app: FastAPI,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    feed = IdentityEventFeed(app.state.admin.engine)
    start = await feed.latest()
    await consumer(owner, "acme")

    basic = await create(owner, "acme", "basic-auth")  # username and password generated
    assert basic["username"] == "acme"
    assert basic["kind"] == "basic"
    generated = basic["secret"]
    chosen = await create(owner, "acme", "basic-auth", username="acme-ci", password="p4ssw0rd!")
    assert "secret" not in chosen

    hmac = await create(owner, "acme", "hmac-auth")
    assert hmac["key_id"].startswith("pch_")
    hmac_secret = hmac["secret"]
    rotated = await owner.post(f"{BASE}/acme/hmac-auth/{hmac['id']}/rotate")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != hmac_secret

    mtls = await create(owner, "acme", "mtls-auth", match="dns:Acme.Clients.Example")
    assert mtls["match"] == "dns:acme.clients.example"
    assert "secret" not in mtls

    listed = (await owner.get(f"{BASE}/acme/basic-auth")).json()["items"]
    assert sorted(c["username"] for c in listed) == ["acme", "acme-ci"]
    assert all("secret" not in c for c in listed)
    shown = await owner.get(f"{BASE}/acme/hmac-auth/{hmac['id']}")
    assert shown.status_code == 200
    assert "secret" not in shown.json()
    # Another kind's path does not find it.
    assert (await owner.get(f"{BASE}/acme/basic-auth/{hmac['id']}")).status_code == 404

    stale = shown.headers["etag"]
    again = await owner.post(
        f"{BASE}/acme/hmac-auth/{hmac['id']}/rotate", headers={"If-Match": '"stale"'}
    )
    assert again.status_code == 412
    assert stale
    deleted = await owner.delete(f"{BASE}/acme/mtls-auth/{mtls['id']}")
    assert deleted.status_code == 204
    assert (await owner.get(f"{BASE}/acme/mtls-auth/{mtls['id']}")).status_code == 404

    events = [e for e in await feed.since(start) if e.kind is EventKind.CREDENTIAL]
    subjects = [e.subject for e in events]
    assert f"hmac:{hmac['key_id']}" in subjects
    assert subjects.count(f"hmac:{hmac['key_id']}") == 2  # created, rotated
    assert "mtls:dns:acme.clients.example" in subjects
    assert "basic:acme" in subjects

    platform = (
        await owner.get(
            "/admin/v1/events?kind=credential.created&kind=credential.rotated"
            "&kind=credential.deleted&limit=50"
        )
    ).json()["items"]
    assert sorted(e["kind"] for e in platform) == [
        *["credential.created"] * 4,
        "credential.deleted",
        "credential.rotated",
    ]
    deleted = next(e for e in platform if e["kind"] == "credential.deleted")
    assert deleted["data"]["identifier"] == "dns:acme.clients.example"
    assert deleted["data"]["reason"] == "deleted"
    audit = (
        await owner.get("/admin/v1/audit-events?resource_type=consumer_credential&limit=50")
    ).json()["items"]
    assert [e["action"] for e in reversed(audit)] == [
        "create",
        "create",
        "create",
        "rotate",
        "create",
        "delete",
    ]
    async with app.state.admin.engine.connect() as conn:
        stored = (await conn.execute(select(ConsumerCredentialRow.secret))).scalars().all()
    export = (await owner.get("/admin/v1/audit-events/export?format=jsonl")).text
    captured = capfd.readouterr()
    logs = caplog.text + captured.out + captured.err
    blobs = b"".join(s or b"" for s in stored)
    for secret in (generated, "p4ssw0rd!", hmac_secret, new_secret):
        assert secret not in export
        assert secret not in logs
        assert secret.encode() not in blobs
    assert blobs.count(b"$argon2id$") == 2


BAD_INPUT = [
    ("basic-auth", {"password": "short"}, "#/password"),
    ("basic-auth", {"username": "a:b"}, "#/username"),
    ("basic-auth", {"match": "dns:x"}, "#/match"),
    ("hmac-auth", {"password": "long-enough"}, "#/password"),
    ("mtls-auth", {}, "#/match"),
    ("mtls-auth", {"match": "cn=alice"}, "#/match"),
    ("mtls-auth", {"match": "ip:not-an-ip"}, "#/match"),
]


async def test_bad_input_names_the_field(owner: httpx.AsyncClient) -> None:
    await consumer(owner, "acme")
    for kind, body, pointer in BAD_INPUT:
        response = await owner.post(f"{BASE}/acme/{kind}", json=body)
        assert response.status_code == 422, (kind, body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert pointer in [e["pointer"] for e in response.json()["errors"]], (kind, body)


async def test_a_password_body_is_never_kept_for_idempotency(
    owner: httpx.AsyncClient, app: FastAPI
) -> None:
    await consumer(owner, "acme")
    made = await owner.post(
        f"{BASE}/acme/basic-auth",
        json={"password": "password-kept?"},
        headers={"Idempotency-Key": "one"},
    )
    assert made.status_code == 201
    hmac = await owner.post(f"{BASE}/acme/hmac-auth", headers={"Idempotency-Key": "two"})
    assert hmac.status_code == 201
    async with app.state.admin.engine.connect() as conn:
        kept = (await conn.execute(select(IdempotencyKeyRow.scope_hash))).scalars().all()
    # The hmac create is idempotent (its response sealed); the password's is not kept.
    assert len(kept) == 1


async def test_duplicates_unknown_consumers_and_mtls_rotation(owner: httpx.AsyncClient) -> None:
    await consumer(owner, "acme")
    await consumer(owner, "beta")
    await create(owner, "acme", "basic-auth", username="shared", password="password-1")
    taken = await owner.post(f"{BASE}/beta/basic-auth", json={"username": "shared"})
    assert taken.status_code == 409, taken.text
    assert (await owner.post(f"{BASE}/nobody/hmac-auth")).status_code == 404
    mtls = await create(owner, "acme", "mtls-auth", match="subject:CN=acme,O=Acme")
    assert (await owner.post(f"{BASE}/acme/mtls-auth/{mtls['id']}/rotate")).status_code in (
        404,
        405,
    )


async def test_organization_limited_admins_see_only_their_consumers_credentials(
    owner: httpx.AsyncClient, client_for: ClientFactory, orgs: dict[str, str]
) -> None:
    await consumer(owner, "a-user", organization="acme")
    await consumer(owner, "g-user", organization="globex")
    # Names resolve within an organization: both may have a basic-auth user "admin".
    await create(owner, "a-user", "basic-auth", username="admin", password="password-a")
    await create(owner, "g-user", "basic-auth", username="admin", password="password-g")
    again = await owner.post(f"{BASE}/a-user/basic-auth", json={"username": "admin"})
    assert again.status_code == 409
    theirs = await create(owner, "g-user", "hmac-auth")
    acme_admin = await client_for(Role.ADMIN, orgs["acme"])
    ours = await create(acme_admin, "a-user", "hmac-auth")
    assert (await acme_admin.get(f"{BASE}/g-user/hmac-auth")).status_code == 404
    assert (await acme_admin.get(f"{BASE}/g-user/hmac-auth/{theirs['id']}")).status_code == 404
    assert (await acme_admin.delete(f"{BASE}/g-user/hmac-auth/{theirs['id']}")).status_code == 404
    assert (await acme_admin.post(f"{BASE}/g-user/basic-auth")).status_code == 404
    listed = (await acme_admin.get(f"{BASE}/a-user/hmac-auth")).json()["items"]
    assert [c["id"] for c in listed] == [ours["id"]]
    assert listed[0]["organization"] == "acme"


async def test_credentials_are_retired_with_their_consumer(
    owner: httpx.AsyncClient, app: FastAPI
) -> None:
    feed = IdentityEventFeed(app.state.admin.engine)
    await consumer(owner, "gone")
    hmac = await create(owner, "gone", "hmac-auth")
    await create(owner, "gone", "basic-auth", password="password-1")
    start = await feed.latest()
    assert (await owner.delete(f"{BASE}/gone")).status_code == 204
    subjects = {e.subject for e in await feed.since(start) if e.kind is EventKind.CREDENTIAL}
    assert subjects == {f"hmac:{hmac['key_id']}", "basic:gone"}
    async with app.state.admin.engine.connect() as conn:
        left = (await conn.execute(select(ConsumerCredentialRow.id))).all()
    assert left == []
    # A new consumer of the same name starts with none.
    await consumer(owner, "gone")
    assert (await owner.get(f"{BASE}/gone/hmac-auth")).json()["items"] == []
