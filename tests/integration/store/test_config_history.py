"""Config history stored as keyframes and deltas, its retention policy, and rollback across it.

Every check reads through a fresh `ConfigRepository` (no document cached in memory),
so what is verified is what the store holds, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.model import GatewayConfig
from portcullis.model.loader import load_config_data
from portcullis.store.config_repository import ConfigRepository, canonical_json, checksum_of
from portcullis.store.engine import create_engine
from portcullis.store.errors import NotFound
from portcullis.store.migrations import upgrade_to_head
from portcullis.store.tables import ConfigVersionRow
from support.migrations import migrate

CONSUMERS = 2000


def document(edit: int | None = None, *, consumers: int = CONSUMERS) -> dict[str, Any]:
    """A config of `consumers` consumers; `edit` n sets one field of consumer 7 to n."""
    people = [
        {"username": f"user-{i:05d}", "metadata": {"tier": "silver", "n": i}, "tags": ["a", "b"]}
        for i in range(consumers)
    ]
    if edit is not None:
        people[7] = {**people[7], "metadata": {"tier": "gold", "n": edit}}
    return {
        "services": [{"name": "svc", "url": "http://127.0.0.1:9"}],
        "routes": [{"name": "r", "service": "svc", "paths": ["/r"]}],
        "consumers": people,
    }


def config(edit: int | None = None) -> GatewayConfig:
    return load_config_data(document(edit))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


async def stored_rows(engine: AsyncEngine) -> list[tuple[int, int, int, int]]:
    """(version, keyframe, document bytes, delta bytes) of every stored row."""
    query = select(
        ConfigVersionRow.version,
        ConfigVersionRow.keyframe,
        func.coalesce(func.length(ConfigVersionRow.document), 0),
        func.coalesce(func.length(ConfigVersionRow.delta), 0),
    ).order_by(ConfigVersionRow.version)
    async with engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(query)).all()]


async def test_a_one_field_edit_stores_bytes_and_every_version_rebuilds(
    engine: AsyncEngine,
) -> None:
    writer = ConfigRepository(engine)
    await writer.apply(config(), author="a", comment="all")
    for n in range(1, 11):
        await writer.apply(config(n), author="a", comment=f"edit {n}")

    rows = await stored_rows(engine)
    assert [r[0] for r in rows] == list(range(1, 12))
    full = len(canonical_json(config()))
    assert rows[0][1:3] == (1, full)  # the first version is a keyframe
    for version, keyframe, document_bytes, delta_bytes in rows[1:]:
        assert (keyframe, document_bytes) == (1, 0), version
        assert 0 < delta_bytes < 300, (version, delta_bytes)

    reader = ConfigRepository(engine)
    for n in range(11):
        stored = await reader.get(n + 1)
        expected = config(n or None)
        assert stored.config == expected
        assert stored.checksum == checksum_of(canonical_json(expected))


async def test_rollback_across_deltas_restores_the_old_config(engine: AsyncEngine) -> None:
    writer = ConfigRepository(engine)
    await writer.apply(config(), author="a", comment="all")
    for n in range(1, 6):
        await writer.apply(config(n), author="a", comment=f"edit {n}")

    rolled = await ConfigRepository(engine).rollback(3, author="b")
    assert (rolled.version, rolled.source_version, rolled.created) == (7, 3, True)
    assert rolled.config == config(2)

    reader = ConfigRepository(engine)
    current = await reader.current()
    assert current is not None
    assert current.version == 7
    assert current.config == config(2)
    assert current.checksum == (await reader.get(3)).checksum
    # ... and back to the very first version, across the rollback's own delta.
    first = await ConfigRepository(engine).rollback(1, author="b")
    assert (await ConfigRepository(engine).get(first.version)).config == config()
    assert (await stored_rows(engine))[-1][2] == 0  # a delta, not a document


async def test_a_keyframe_follows_deltas_that_outgrow_a_document(engine: AsyncEngine) -> None:
    writer = ConfigRepository(engine)
    await writer.apply(config(), author="a", comment="all")
    small = load_config_data(document(consumers=3))
    grown = config(1)
    await writer.apply(small, author="a", comment="most consumers removed")
    await writer.apply(grown, author="a", comment="all again")
    rows = await stored_rows(engine)
    # Removing 1997 consumers is a splice without entries; adding them back is a big delta.
    assert [r[1:] for r in rows[1:]] == [(1, 0, rows[1][3]), (1, 0, rows[2][3])]
    assert rows[1][3] < 200 < rows[2][3]
    await writer.apply(small, author="a", comment="removed again")
    await writer.apply(grown, author="a", comment="and back")
    rows = await stored_rows(engine)
    # With version 4 the deltas since version 1 would outweigh its document: a keyframe.
    assert rows[3][:3] == (4, 4, len(canonical_json(small)))
    assert rows[4][1:3] == (4, 0)
    reader = ConfigRepository(engine)
    for version, expected in ((2, small), (3, grown), (4, small), (5, grown)):
        assert (await reader.get(version)).config == expected


async def test_retention_keeps_the_newest_versions(engine: AsyncEngine) -> None:
    keep = 5
    writer = ConfigRepository(engine, keep_versions=keep)
    await writer.apply(config(), author="a", comment="all")
    for n in range(1, 20):
        await writer.apply(config(n), author="a", comment=f"edit {n}")
        newest = n + 1
        versions = [r[0] for r in await stored_rows(engine)]
        # Always the newest `keep`, never more than 2 * keep - 1, and contiguous.
        assert versions[-keep:] == list(range(max(1, newest - keep + 1), newest + 1))
        assert len(versions) <= 2 * keep - 1
        assert versions == list(range(versions[0], newest + 1))

    rows = await stored_rows(engine)
    assert rows[0][0] > 1
    assert rows[0][1] == rows[0][0]
    reader = ConfigRepository(engine)
    for version, *_ in rows:
        assert (await reader.get(version)).config == config(version - 1)
    with pytest.raises(NotFound):
        await reader.get(rows[0][0] - 1)
    with pytest.raises(NotFound):
        await reader.rollback(1, author="b")
    rolled = await reader.rollback(rows[0][0], author="b")
    assert (await ConfigRepository(engine).current()) is not None
    assert rolled.config == config(rows[0][0] - 1)


async def test_keep_zero_keeps_every_version(engine: AsyncEngine) -> None:
    writer = ConfigRepository(engine, keep_versions=0)
    await writer.apply(config(), author="a", comment="all")
    for n in range(1, 8):
        await writer.apply(config(n), author="a", comment=f"edit {n}")
    assert [r[0] for r in await stored_rows(engine)] == list(range(1, 9))


async def test_a_downgrade_gives_every_kept_version_its_whole_document_back(
    database_url: str, engine: AsyncEngine
) -> None:
    writer = ConfigRepository(engine)
    await writer.apply(config(), author="a", comment="all")
    for n in range(1, 6):
        await writer.apply(config(n), author="a", comment=f"edit {n}")
    await engine.dispose()

    await migrate(database_url, "0006", down=True)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(text("SELECT version, document FROM config_versions ORDER BY 1"))
        ).all()
    assert [(v, json.loads(d)) for v, d in rows] == [
        (n + 1, json.loads(canonical_json(config(n or None)))) for n in range(6)
    ]

    await upgrade_to_head(database_url)
    reader = ConfigRepository(engine)
    assert (await reader.get(4)).config == config(3)
    await reader.apply(config(9), author="a", comment="after the round trip")
    assert (await ConfigRepository(engine).get(7)).config == config(9)
