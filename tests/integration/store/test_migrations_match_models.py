"""The migrations build exactly the tables the models describe (no drift either way), and
the newest ones come back down cleanly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from portcullis.store import (
    admin_tables,
    analytics_tables,
    catalogue_tables,
    graphql_tables,
    identity_tables,
    webhook_tables,
)
from portcullis.store.engine import create_engine
from portcullis.store.tables import Base
from support.migrations import migrate

# Imported for their side effect: every table registers on Base.metadata.
_TABLE_MODULES = (
    admin_tables,
    analytics_tables,
    catalogue_tables,
    graphql_tables,
    identity_tables,
    webhook_tables,
)


async def test_migrating_to_head_builds_the_models_tables(database_url: str) -> None:
    await migrate(database_url, "head")
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_the_webhook_and_health_migrations_go_down_and_up_again(database_url: str) -> None:
    await migrate(database_url, "head")
    await migrate(database_url, "0007", down=True)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
            event_columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("events")}
            )
    finally:
        await engine.dispose()
    assert not tables & {"webhook_endpoints", "webhook_messages", "upstream_health_states"}
    assert "organization_id" not in event_columns
    await migrate(database_url, "head")
