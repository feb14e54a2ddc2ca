"""Migration 0006: API keys and OAuth clients go from an organization name to its id."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import upgrade_to_head
from support.migrations import migrate


async def test_names_become_ids_and_back(database_url: str) -> None:
    await migrate(database_url, "0004")
    now = datetime.now(UTC)
    engine = create_engine(database_url)
    try:
        async with write_transaction(engine) as conn:
            for org_id, name in (("id-acme", "acme"), ("id-globex", "globex")):
                await conn.execute(
                    text(
                        "INSERT INTO admin_organizations (id, name, created_at, updated_at) "
                        "VALUES (:id, :name, :now, :now)"
                    ),
                    {"id": org_id, "name": name, "now": now},
                )
            for key_id, org in (("k1", "acme"), ("k2", "globex"), ("k3", None), ("k4", "gone")):
                await conn.execute(
                    text(
                        "INSERT INTO api_keys (id, key_hash, consumer, organization, name, "
                        "environment, scopes, allowed_origins, ip_allowlist, metadata_json, "
                        "status, created_by, created_at, updated_at) VALUES (:id, :hash, 'c', "
                        ":org, 'n', 'live', '[]', '[]', '[]', '{}', 'active', 'me', :now, :now)"
                    ),
                    {"id": key_id, "hash": "h" + key_id, "org": org, "now": now},
                )
            await conn.execute(
                text(
                    "INSERT INTO oauth_clients (client_id, secret_hash, consumer, organization, "
                    "name, allowed_scopes, token_ttl, status, created_by, created_at, updated_at) "
                    "VALUES ('c1', 'h', 'c', 'globex', 'n', '[]', 60, 'active', 'me', :now, :now)"
                ),
                {"now": now},
            )

        await upgrade_to_head(database_url)
        async with engine.connect() as conn:
            keys = dict(
                (await conn.execute(text("SELECT id, organization_id FROM api_keys"))).all()
            )
            client = await conn.scalar(text("SELECT organization_id FROM oauth_clients"))
        assert keys == {"k1": "id-acme", "k2": "id-globex", "k3": None, "k4": None}
        assert client == "id-globex"

        await migrate(database_url, "0004", down=True)
        async with engine.connect() as conn:
            keys = dict((await conn.execute(text("SELECT id, organization FROM api_keys"))).all())
        assert keys == {"k1": "acme", "k2": "globex", "k3": None, "k4": None}
    finally:
        await engine.dispose()
