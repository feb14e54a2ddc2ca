"""Event ids become visible in id order (a live stream tails `id > position`), and
retention leaves a horizon behind; on the real stores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.events.bus import Event, read_events, record_event
from portcullis.events.catalogue import EventType
from portcullis.events.retention import purge_events, read_horizon
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import upgrade_to_head
from support.events import sample
from support.threaded_upstream import eventually


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


async def _record(engine: AsyncEngine, subject: str, when: datetime | None = None) -> Event:
    async with write_transaction(engine) as conn:
        return await record_event(
            conn, EventType.ALERT_FIRING, subject, sample("alert.firing"), now=when
        )


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_later_id_waits_for_the_earlier_transaction_to_commit(
    engine: AsyncEngine,
) -> None:
    """Without ordering, B's id 2 could be read while A's id 1 is uncommitted, and a
    stream at position 2 would never see 1."""

    async with engine.connect() as a:
        await a.begin()
        first = await record_event(a, EventType.ALERT_FIRING, "a", sample("alert.firing"))
        second = asyncio.create_task(_record(engine, "b"))

        async def b_waits_on_the_lock() -> bool:
            async with engine.connect() as probe:
                waiting = await probe.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE '%pg_advisory_xact_lock%'"
                    )
                )
            return bool(waiting)

        await eventually(b_waits_on_the_lock)
        assert not second.done()
        assert [e.id for e in await read_events(engine)] == []  # nothing visible yet
        await a.commit()
    later = await asyncio.wait_for(second, 10)
    assert later.id > first.id
    assert [e.id for e in await read_events(engine)] == [first.id, later.id]


async def test_retention_keeps_the_newest_event_and_raises_the_horizon(
    engine: AsyncEngine,
) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    events = [await _record(engine, f"e{i}", old) for i in range(5)]
    fresh = await _record(engine, "fresh")
    cutoff = datetime.now(UTC) - timedelta(days=30)
    assert await purge_events(engine, older_than=cutoff, chunk=2, pause=0) == 5
    async with engine.connect() as conn:
        assert await read_horizon(conn) == events[-1].id
    assert [e.id for e in await read_events(engine)] == [fresh.id]
    # Everything is past retention now, but the newest event stays: ids never restart.
    assert await purge_events(engine, older_than=datetime.now(UTC) + timedelta(days=1)) == 0
    assert (await _record(engine, "next")).id > fresh.id
