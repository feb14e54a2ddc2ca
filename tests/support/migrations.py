"""Run Alembic to a given revision (up or down) on a test database."""

from __future__ import annotations

from alembic import command
from sqlalchemy.engine import Connection

from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import alembic_config


async def migrate(url: str, revision: str, *, down: bool = False) -> None:
    cfg = alembic_config()

    def run(connection: Connection) -> None:
        cfg.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(cfg, revision)

    engine = create_engine(url)
    try:
        async with write_transaction(engine) as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()
