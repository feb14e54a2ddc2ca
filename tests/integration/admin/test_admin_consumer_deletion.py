"""A consumer's credentials leave with it, however it leaves, in the transaction that removes it.

(The data plane's view of the same is in tests/integration/identity/test_consumer_deletion_e2e.py.)
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from portcullis.events.bus import read_events
from portcullis.identity.events import EventKind
from portcullis.identity.key_admin import KeySpec
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.oauth_clients import OAuthClientRepository, client_revocation_id
from portcullis.model.loader import load_config_data
from portcullis.services.state import AdminState
from portcullis.store.config_repository import ConfigConflict
from portcullis.store.identity_tables import IdentityEventRow, RevokedTokenRow


async def consumer_with_credentials(owner: httpx.AsyncClient, username: str) -> dict[str, Any]:
    if (await owner.get(f"/admin/v1/consumers/{username}")).status_code == 404:
        created = await owner.post("/admin/v1/consumers", json={"username": username})
        assert created.status_code == 201, created.text
    key = await owner.post(f"/admin/v1/consumers/{username}/keys", json={"name": "k"})
    assert key.status_code == 201, key.text
    client = await owner.post(f"/admin/v1/consumers/{username}/oauth-clients", json={"name": "c"})
    assert client.status_code == 201, client.text
    token = await owner.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.json()["client_id"], client.json()["client_secret"]),
    )
    assert token.status_code == 200, token.text
    return {"key_id": key.json()["id"], "client_id": client.json()["client_id"]}


async def events(app: FastAPI) -> list[tuple[str, str]]:
    async with app.state.admin.engine.connect() as conn:
        rows = await conn.execute(
            select(IdentityEventRow.kind, IdentityEventRow.subject).order_by(IdentityEventRow.seq)
        )
        return [(r.kind, r.subject) for r in rows]


async def client_wide_revocations(app: FastAPI) -> set[str]:
    async with app.state.admin.engine.connect() as conn:
        return set((await conn.scalars(select(RevokedTokenRow.jti))).all())


async def assert_retired(
    owner: httpx.AsyncClient, app: FastAPI, made: dict[str, Any], since: int
) -> None:
    key = (await owner.get(f"/admin/v1/keys/{made['key_id']}")).json()
    assert key["state"] == "revoked"
    assert "consumer was deleted" in key["status_reason"]
    assert (await owner.get(f"/admin/v1/oauth-clients/{made['client_id']}")).status_code == 404
    assert client_revocation_id(made["client_id"]) in await client_wide_revocations(app)
    new = (await events(app))[since:]
    assert (str(EventKind.TOKEN), client_revocation_id(made["client_id"])) in new
    assert [kind for kind, _ in new].count(str(EventKind.KEY)) == 1
    # Subscribers (webhooks) hear of it like any revocation.
    state: AdminState = app.state.admin
    revoked = await read_events(
        state.engine, kinds=["key.revoked"], subject=f"key:{made['key_id']}"
    )
    assert [e.data["reason"] for e in revoked] == [key["status_reason"]]


async def test_admin_delete_revokes_keys_and_clients_and_a_namesake_inherits_nothing(
    owner: httpx.AsyncClient, app: FastAPI
) -> None:
    made = await consumer_with_credentials(owner, "acme")
    kept = await consumer_with_credentials(owner, "other")
    since = len(await events(app))
    assert (await owner.delete("/admin/v1/consumers/acme")).status_code == 204
    await assert_retired(owner, app, made, since)
    # Nothing of another consumer's changed.
    assert (await owner.get(f"/admin/v1/keys/{kept['key_id']}")).json()["state"] == "active"
    assert (await owner.get(f"/admin/v1/oauth-clients/{kept['client_id']}")).status_code == 200

    assert (await owner.post("/admin/v1/consumers", json={"username": "acme"})).status_code == 201
    keys = (await owner.get("/admin/v1/consumers/acme/keys")).json()["items"]
    assert [(k["id"], k["state"]) for k in keys] == [(made["key_id"], "revoked")]
    assert (await owner.get("/admin/v1/consumers/acme/oauth-clients")).json()["items"] == []
    # Revocation is final: the old key can't be brought back for the namesake.
    resumed = await owner.post(f"/admin/v1/keys/{made['key_id']}/resume")
    assert resumed.status_code == 409


async def test_config_import_and_rollback(owner: httpx.AsyncClient, app: FastAPI) -> None:
    made = await consumer_with_credentials(owner, "acme")
    state: AdminState = app.state.admin
    with_acme = (await state.editor.state()).version
    document = (await owner.get("/admin/v1/config")).json()
    document["consumers"] = [c for c in document["consumers"] if c["username"] != "acme"]
    since = len(await events(app))
    assert (await owner.put("/admin/v1/config", json=document)).status_code == 200
    await assert_retired(owner, app, made, since)

    back = await owner.post("/admin/v1/config/rollback", json={"version": with_acme})
    assert back.status_code == 200, back.text
    assert (await owner.get("/admin/v1/consumers/acme")).status_code == 200
    key = (await owner.get(f"/admin/v1/keys/{made['key_id']}")).json()
    assert key["state"] == "revoked"


async def test_a_version_written_without_the_editor_also_retires(
    owner: httpx.AsyncClient, app: FastAPI
) -> None:
    # `portcullis config apply` and `serve --config` write through the repository
    # without the previous config at hand: the head's stored document says who left.
    made = await consumer_with_credentials(owner, "acme")
    state: AdminState = app.state.admin
    document = (await state.editor.state()).config.canonical()
    document["consumers"] = []
    since = len(await events(app))
    await state.editor.repository.apply(load_config_data(document), author="cli", comment=None)
    await assert_retired(owner, app, made, since)


async def test_deleting_an_oauth_client_revokes_its_tokens(
    owner: httpx.AsyncClient, app: FastAPI
) -> None:
    made = await consumer_with_credentials(owner, "acme")
    assert (await owner.delete(f"/admin/v1/oauth-clients/{made['client_id']}")).status_code == 204
    assert client_revocation_id(made["client_id"]) in await client_wide_revocations(app)


@pytest.mark.parametrize("kind", ["key", "oauth-client"])
async def test_credentials_are_created_only_for_the_config_they_were_checked_against(
    owner: httpx.AsyncClient, app: FastAPI, kind: str
) -> None:
    # A key created for a consumer found in version N, stored after version N+1 deleted
    # the consumer, would outlive the deletion's revocation: creation is pinned to N.
    assert (await owner.post("/admin/v1/consumers", json={"username": "acme"})).status_code == 201
    state: AdminState = app.state.admin
    seen = (await state.editor.state()).version
    assert (await owner.delete("/admin/v1/consumers/acme")).status_code == 204
    if kind == "key":
        late: Any = KeyRepository(state.engine, state.secret).create(
            "acme", KeySpec(name="late"), created_by="t", organization=None, config_version=seen
        )
    else:
        late = OAuthClientRepository(state.engine, state.secret).create(
            consumer="acme",
            organization=None,
            name="late",
            allowed_scopes=[],
            token_ttl=600,
            created_by="t",
            config_version=seen,
        )
    with pytest.raises(ConfigConflict):
        await late
    listed = await owner.get("/admin/v1/keys", params={"consumer": "acme"})
    assert listed.json()["items"] == []
    # Through the API the stale read is redone on the fresh config: the consumer is gone.
    retried = await owner.post("/admin/v1/consumers/acme/keys", json={"name": "late"})
    assert retried.status_code == 404
