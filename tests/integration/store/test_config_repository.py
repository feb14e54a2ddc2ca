"""ConfigRepository and migrations against a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.model import GatewayConfig
from portcullis.model.loader import load_config_data
from portcullis.store.config_repository import ConfigRepository, canonical_json
from portcullis.store.engine import create_engine, normalize_database_url, sqlite_file
from portcullis.store.errors import NotFound, UnsupportedDatabase
from portcullis.store.migrations import (
    current_revisions,
    head_revisions,
    is_at_head,
    pending_migrations,
    upgrade_to_head,
)


def make_config(port: int, *, routes: int = 1) -> GatewayConfig:
    return load_config_data(
        {
            "services": [{"name": "svc", "url": f"http://127.0.0.1:{port}"}],
            "routes": [
                {"name": f"r{i}", "service": "svc", "paths": [f"/r{i}"]} for i in range(routes)
            ],
        }
    )


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def repo(engine: AsyncEngine) -> ConfigRepository:
    return ConfigRepository(engine)


async def test_migrations_reach_head_once(database_url: str) -> None:
    assert not await is_at_head(database_url)
    assert await current_revisions(database_url) == set()
    pending = await pending_migrations(database_url)
    assert [s.revision for s in pending][:1] == ["0001"]

    seen: list[str] = []
    applied = await upgrade_to_head(database_url, on_step=lambda s: seen.append(s.revision))
    assert [s.revision for s in applied] == seen == [s.revision for s in pending]
    assert await is_at_head(database_url)
    assert await current_revisions(database_url) == head_revisions()
    assert await upgrade_to_head(database_url) == []

    eng = create_engine(database_url)
    try:
        async with eng.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            head = (await conn.execute(text("SELECT id, version FROM config_head"))).all()
    finally:
        await eng.dispose()
    assert {"config_versions", "config_head", "alembic_version"} <= tables
    assert [tuple(r) for r in head] == [(1, None)]


async def test_concurrent_migrations_are_safe(database_url: str) -> None:
    pending = await pending_migrations(database_url)
    results = await asyncio.gather(*(upgrade_to_head(database_url) for _ in range(3)))
    # Exactly one of them ran the migrations; the others found the schema at head.
    assert sorted(len(r) for r in results) == [0, 0, len(pending)]
    assert await is_at_head(database_url)


async def test_empty_store(repo: ConfigRepository) -> None:
    assert await repo.current_version() == 0
    assert await repo.current() is None
    assert await repo.list_versions() == []
    with pytest.raises(NotFound, match="config version 1 does not exist"):
        await repo.get(1)


async def test_apply_stores_a_version(repo: ConfigRepository) -> None:
    config = make_config(9000, routes=2)
    before = datetime.now(UTC)
    v = await repo.apply(config, author="alice", comment="first")
    assert (v.version, v.author, v.comment, v.created) == (1, "alice", "first", True)
    assert v.config == config
    assert v.source_version is None
    assert before - timedelta(seconds=1) <= v.created_at <= datetime.now(UTC)
    assert v.checksum == hashlib.sha256(canonical_json(config).encode()).hexdigest()

    assert await repo.current_version() == 1
    current = await repo.current()
    assert current is not None
    assert current == v
    assert await repo.get(1) == v


async def test_apply_of_an_identical_config_stores_nothing(repo: ConfigRepository) -> None:
    first = await repo.apply(make_config(9000), author="alice", comment="first")
    again = await repo.apply(make_config(9000), author="bob", comment="again")
    assert again.created is False
    assert (again.version, again.author, again.comment) == (1, "alice", "first")
    assert again.checksum == first.checksum
    assert [s.version for s in await repo.list_versions()] == [1]

    changed = await repo.apply(make_config(9001), author="bob", comment=None)
    assert (changed.version, changed.created) == (2, True)


async def test_list_versions_newest_first_with_paging(repo: ConfigRepository) -> None:
    for port in range(9000, 9005):
        await repo.apply(make_config(port), author=f"u{port}", comment=f"c{port}")
    assert [s.version for s in await repo.list_versions()] == [5, 4, 3, 2, 1]
    assert [s.version for s in await repo.list_versions(limit=2)] == [5, 4]
    assert [s.version for s in await repo.list_versions(limit=2, before=4)] == [3, 2]
    assert [s.version for s in await repo.list_versions(before=2)] == [1]
    newest = (await repo.list_versions(limit=1))[0]
    assert (newest.author, newest.comment) == ("u9004", "c9004")
    assert newest.checksum == (await repo.get(5)).checksum


async def test_rollback_creates_a_new_version(repo: ConfigRepository) -> None:
    a, b = make_config(9000), make_config(9001)
    await repo.apply(a, author="alice", comment="a")
    await repo.apply(b, author="alice", comment="b")

    rolled = await repo.rollback(1, author="bob")
    assert (rolled.version, rolled.created, rolled.source_version) == (3, True, 1)
    assert rolled.config == a
    assert rolled.comment == "rollback to version 1"
    assert rolled.author == "bob"
    assert rolled.checksum == (await repo.get(1)).checksum
    assert await repo.current_version() == 3
    history = await repo.list_versions()
    assert [(s.version, s.source_version) for s in history] == [(3, 1), (2, None), (1, None)]

    # Rolling back to what is already current stores nothing.
    again = await repo.rollback(3, author="bob", comment="noop")
    assert (again.version, again.created) == (3, False)

    with pytest.raises(NotFound):
        await repo.rollback(42, author="bob")
    assert await repo.current_version() == 3


async def test_concurrent_applies_get_distinct_increasing_versions(database_url: str) -> None:
    await upgrade_to_head(database_url)
    # Two engines stand for two processes: separate pools, separate connections.
    engines = [create_engine(database_url), create_engine(database_url)]
    try:
        repos = [ConfigRepository(e) for e in engines]
        results = await asyncio.gather(
            *(
                repos[i % 2].apply(make_config(9000 + i), author=f"w{i}", comment=None)
                for i in range(12)
            )
        )
        versions = sorted(r.version for r in results)
        assert versions == list(range(1, 13))
        assert all(r.created for r in results)
        assert await repos[0].current_version() == 12
        newest = max(results, key=lambda r: r.version)
        current = await repos[1].current()
        assert current is not None
        assert current.checksum == newest.checksum

        # The same config applied concurrently from both is stored exactly once.
        same = await asyncio.gather(
            *(repos[i % 2].apply(make_config(7777), author="x", comment=None) for i in range(6))
        )
        assert sum(r.created for r in same) == 1
        assert {r.version for r in same} == {13}
    finally:
        for e in engines:
            await e.dispose()


async def test_current_version_is_a_single_primary_key_read(
    engine: AsyncEngine, repo: ConfigRepository
) -> None:
    await repo.apply(make_config(9000), author=None, comment=None)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        assert await repo.current_version() == 1
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    # One statement and no BEGIN: SQLite runs it in autocommit, PostgreSQL in AUTOCOMMIT.
    [query] = statements
    assert query.startswith("SELECT config_head.version FROM config_head WHERE config_head.id")


async def test_data_survives_a_new_engine(database_url: str) -> None:
    await upgrade_to_head(database_url)
    first = create_engine(database_url)
    try:
        await ConfigRepository(first).apply(make_config(9000), author="a", comment="kept")
    finally:
        await first.dispose()
    second = create_engine(database_url)
    try:
        current = await ConfigRepository(second).current()
    finally:
        await second.dispose()
    assert current is not None
    assert (current.version, current.comment, current.config) == (1, "kept", make_config(9000))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///var/x.db", "sqlite+aiosqlite:///var/x.db"),
        ("sqlite+aiosqlite:///var/x.db", "sqlite+aiosqlite:///var/x.db"),
    ],
)
def test_urls_get_the_async_driver(given: str, expected: str) -> None:
    assert normalize_database_url(given).render_as_string(hide_password=False) == expected


def test_other_backends_are_rejected() -> None:
    with pytest.raises(UnsupportedDatabase, match="unsupported database 'mysql'"):
        create_engine("mysql://u@h/db")


def test_sqlite_file_and_parent_directory(tmp_path: Path) -> None:
    assert sqlite_file("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_file("postgresql+asyncpg://u@h/db") is None
    db = tmp_path / "a" / "b" / "store.db"
    assert sqlite_file(f"sqlite:///{db}") == db
    engine = create_engine(f"sqlite:///{db}")
    assert db.parent.is_dir()
    assert engine.dialect.name == "sqlite"
    assert not db.exists()  # the file itself appears on first connect


async def test_sqlite_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'wal.db'}")
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
            assert await conn.scalar(text("PRAGMA foreign_keys")) == 1
    finally:
        await engine.dispose()
