"""Run the packaged Alembic migrations programmatically (no alembic.ini needed).

The migration scripts live in `portcullis/store/alembic` and ship with the
package. `upgrade_to_head` runs them on an open async connection handed to
env.py, inside one write transaction. Concurrent upgrades are safe: on PostgreSQL
they take a transaction-level advisory lock, on SQLite `BEGIN IMMEDIATE`
serialises them; the second finds the schema at head and does nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import Script, ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.store.engine import create_engine, write_transaction

ALEMBIC_DIR = Path(__file__).with_name("alembic")
# Key of the PostgreSQL advisory lock held while migrating ("portcull" in ASCII).
_PG_MIGRATION_LOCK = 0x706F7274_63756C6C


@dataclass(frozen=True, slots=True)
class MigrationStep:
    """One migration: its revision id and the first line of its docstring."""

    revision: str
    description: str


def alembic_config(url: str | None = None) -> Config:
    """An Alembic `Config` pointing at the packaged scripts; `url` is passed to env.py."""
    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    if url is not None:
        cfg.attributes["url"] = url
    return cfg


def head_revisions() -> set[str]:
    """The revision ids at the head of the packaged migration scripts."""
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


async def current_revisions(url_or_engine: str | AsyncEngine) -> set[str]:
    """The revisions the database is at; empty when it was never migrated."""
    async with _engine(url_or_engine) as engine, engine.connect() as conn:
        return await conn.run_sync(_current_heads)


async def is_at_head(url_or_engine: str | AsyncEngine) -> bool:
    """True when the database schema matches the newest packaged migration."""
    return await current_revisions(url_or_engine) == head_revisions()


async def pending_migrations(url_or_engine: str | AsyncEngine) -> list[MigrationStep]:
    """Migrations `upgrade_to_head` would run, oldest first."""
    current = await current_revisions(url_or_engine)
    script = ScriptDirectory.from_config(alembic_config())
    steps = [
        MigrationStep(rev.revision, _first_line(rev.doc))
        for rev in script.iterate_revisions("heads", tuple(current) or "base")
    ]
    return [s for s in reversed(steps) if s.revision not in current]


async def upgrade_to_head(
    url_or_engine: str | AsyncEngine,
    *,
    on_step: Callable[[MigrationStep], None] | None = None,
) -> list[MigrationStep]:
    """Upgrade the schema to the newest revision; returns the steps run (none if at head).

    `on_step` is called after each migration is applied (for progress output).
    """
    applied: list[MigrationStep] = []

    def record(*, step: MigrationInfo, **_: Any) -> None:
        revision = step.up_revision
        doc = revision.doc if isinstance(revision, Script) else None
        done = MigrationStep(step.up_revision_id or "", _first_line(doc))
        applied.append(done)
        if on_step is not None:
            on_step(done)

    cfg = alembic_config()
    cfg.attributes["on_version_apply"] = record

    def upgrade(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")

    async with _engine(url_or_engine) as engine, write_transaction(engine) as conn:
        await conn.run_sync(upgrade)
    return applied


def _current_heads(connection: Connection) -> set[str]:
    return set(MigrationContext.configure(connection).get_current_heads())


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""


@asynccontextmanager
async def _engine(url_or_engine: str | AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The caller's engine as is, or one created for a URL and disposed of afterwards."""
    if isinstance(url_or_engine, AsyncEngine):
        yield url_or_engine
        return
    engine = create_engine(url_or_engine)
    try:
        yield engine
    finally:
        await engine.dispose()
