"""Alembic environment: async engines, URL from the caller or from `Settings`.

Called three ways:
- by `portcullis.store.migrations`, which passes an open connection in
  `config.attributes["connection"]` (so no second event loop is needed);
- by the `alembic` command line, with the URL in `config.attributes["url"]`,
  the `sqlalchemy.url` option, or else `Settings().database_url`;
- offline (`--sql`), rendering SQL for the same URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from portcullis.settings import Settings
from portcullis.store import (
    admin_tables,
    analytics_tables,
    catalogue_tables,
    graphql_tables,
    identity_tables,
    portal_tables,
    web_tables,
    webhook_tables,
)
from portcullis.store.engine import create_engine, normalize_database_url, write_transaction
from portcullis.store.tables import Base

config = context.config
# Imported for their side effect: every table registers on Base.metadata.
_TABLE_MODULES = (
    admin_tables,
    analytics_tables,
    catalogue_tables,
    graphql_tables,
    identity_tables,
    portal_tables,
    web_tables,
    webhook_tables,
)
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    return str(url) if url else Settings().database_url


def _run(connection: Connection) -> None:
    options: dict[str, Any] = {
        "connection": connection,
        "target_metadata": target_metadata,
        # SQLite can't ALTER most things in place; batch mode copies the table.
        "render_as_batch": connection.dialect.name == "sqlite",
        "compare_type": True,
    }
    callback: Callable[..., None] | None = config.attributes.get("on_version_apply")
    if callback is not None:
        options["on_version_apply"] = callback
    context.configure(**options)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(_url())
    try:
        async with write_transaction(engine) as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def _run_offline() -> None:
    context.configure(
        url=normalize_database_url(_url()).render_as_string(hide_password=False),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
elif (connection := config.attributes.get("connection")) is not None:
    _run(connection)
else:
    asyncio.run(_run_async())
