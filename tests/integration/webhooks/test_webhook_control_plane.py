"""End to end: a key revoked through the admin API reaches a subscribed receiver as a
signed `key.revoked` webhook, delivered by the control plane's own worker."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import httpx

from portcullis.identity.key_admin import KeySpec
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.secrets import load_server_secret
from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import upgrade_to_head
from portcullis.webhooks.endpoints import NewEndpoint, create_endpoint
from support.admin_session import PASSWORD, TEST_PASSWORD_HASHER
from support.servers import control_plane
from support.webhook_receiver import webhook_receiver

ALLOW_LOOPBACK = {"PORTCULLIS_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]'}


async def test_a_key_revoked_through_the_admin_api_is_delivered_as_key_revoked(
    database_url: str, tmp_path: Path
) -> None:
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    # The control plane inherits the suite's deployment secret: seal with the same one.
    server = load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], tmp_path / "unused")
    try:
        await AuthService(engine, hasher=TEST_PASSWORD_HASHER).create_user(
            "owner@example.com", PASSWORD, Role.OWNER
        )
        key = await KeyRepository(engine, server).create(
            "alice", KeySpec(name="ci"), created_by="test", organization=None
        )
        async with webhook_receiver() as receiver:
            async with write_transaction(engine) as conn:
                _, receiver.secret = await create_endpoint(
                    conn,
                    server,
                    NewEndpoint(receiver.url, ["key.revoked"]),
                    datetime.now(UTC),
                )
            with control_plane(database_url, env=ALLOW_LOOPBACK) as plane:
                async with httpx.AsyncClient(base_url=plane.url, timeout=60) as client:
                    login = await client.post(
                        "/admin/v1/auth/login",
                        json={"email": "owner@example.com", "password": PASSWORD},
                    )
                    token = login.json()["access_token"]
                    revoked = await client.post(
                        f"/admin/v1/keys/{key.info.id}/revoke",
                        json={"reason": "leaked in a log"},
                        headers={"authorization": f"Bearer {token}"},
                    )
                    assert revoked.status_code == 200, revoked.text
                    await asyncio.wait_for(receiver.arrived.wait(), 60)
    finally:
        await engine.dispose()
    [delivery] = receiver.deliveries
    assert delivery.verified is True
    body = json.loads(delivery.body)
    assert body["type"] == "key.revoked"
    assert body["data"]["key_id"] == key.info.id
    assert body["data"]["reason"] == "leaked in a log"
