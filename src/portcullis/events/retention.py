"""Retention of the event log, and the horizon it leaves behind.

Events older than `events_retention_days` are deleted in chunks. The highest id ever
deleted is the *horizon*, kept in `analytics_cursors` (job `events-retention`) in the
same transaction as the delete: a live stream asked to resume from a position below
the horizon cannot replay what was deleted, and says so with an explicit `reset`
instead of silently skipping events.

The newest event is never deleted, even when it is older than the retention: on
SQLite an id is `max(id) + 1`, so emptying the table would hand out old ids again and
break the order every stream position relies on.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.store.analytics_tables import AnalyticsCursorRow, EventRow
from portcullis.store.engine import dialect_insert, write_transaction

HORIZON_JOB = "events-retention"
CHUNK_ROWS = 5_000
CHUNK_PAUSE = 0.05


async def read_horizon(conn: AsyncConnection) -> int:
    """The highest event id retention has deleted (0: none yet)."""
    value = await conn.scalar(
        select(AnalyticsCursorRow.position).where(AnalyticsCursorRow.job == HORIZON_JOB)
    )
    return int(value or 0)


async def purge_events(
    engine: AsyncEngine,
    *,
    older_than: datetime,
    chunk: int = CHUNK_ROWS,
    pause: float = CHUNK_PAUSE,
) -> int:
    """Delete events that occurred before `older_than` (never the newest), `chunk` at a
    time, raising the horizon with each chunk; returns how many were deleted."""
    total = 0
    while True:
        async with write_transaction(engine) as conn:
            newest = await conn.scalar(select(func.max(EventRow.id)))
            if newest is None:
                return total
            ids = (
                await conn.scalars(
                    select(EventRow.id)
                    .where(EventRow.occurred_at < older_than, EventRow.id < newest)
                    .order_by(EventRow.id)
                    .limit(chunk)
                )
            ).all()
            if ids:
                await conn.execute(delete(EventRow).where(EventRow.id.in_(ids)))
                await _raise_horizon(conn, max(ids))
        total += len(ids)
        if len(ids) < chunk:
            return total
        await asyncio.sleep(pause)


async def _raise_horizon(conn: AsyncConnection, deleted: int) -> None:
    now = datetime.now(UTC)
    table = AnalyticsCursorRow.__table__
    insert = dialect_insert(conn)
    await conn.execute(
        insert(table)
        .values(job=HORIZON_JOB, position=deleted, updated_at=now)
        .on_conflict_do_nothing(index_elements=["job"])
    )
    await conn.execute(
        update(AnalyticsCursorRow)
        .where(AnalyticsCursorRow.job == HORIZON_JOB, AnalyticsCursorRow.position < deleted)
        .values(position=deleted, updated_at=now)
    )
