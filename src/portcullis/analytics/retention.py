"""Retention of the raw request log: a control-plane job deletes rows older than N days.

Rows go in bounded chunks, each its own short transaction, with a pause between
chunks: on SQLite every chunk holds the single write lock that the data-plane
request-log writers, heartbeats and config writers also need, so a backlog of
millions of rows is worked off in many small steps rather than one long lock.
Each chunk is picked by `ts_ms` through its index (`ORDER BY ts_ms LIMIT n`).
Two control planes may run the job at once: on PostgreSQL the chunk's rows are
selected `FOR UPDATE SKIP LOCKED`, so the two delete disjoint chunks instead of
queueing behind each other; on SQLite writers are serialised anyway and a second
deleter simply finds fewer rows. Rollups (analytics_rollups) are kept longer and
are not touched here.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.admin.state import AdminState
from portcullis.store.analytics_tables import RequestLogRow
from portcullis.store.engine import write_transaction

log = structlog.get_logger(__name__)

# Rows deleted per statement (and transaction), and the pause that lets other writers in.
CHUNK_ROWS = 10_000
CHUNK_PAUSE = 0.05
# How often the job looks for expired rows, in seconds.
INTERVAL = 300.0


async def purge_request_log(
    engine: AsyncEngine,
    *,
    older_than_ms: int,
    chunk: int = CHUNK_ROWS,
    pause: float = CHUNK_PAUSE,
) -> int:
    """Delete request-log rows with `ts_ms < older_than_ms`, `chunk` at a time; rows deleted."""
    expired = (
        select(RequestLogRow.id)
        .where(RequestLogRow.ts_ms < older_than_ms)
        .order_by(RequestLogRow.ts_ms)
        .limit(chunk)
        .with_for_update(skip_locked=True)  # rendered on PostgreSQL only
    )
    stmt = delete(RequestLogRow).where(RequestLogRow.id.in_(expired.scalar_subquery()))
    total = 0
    while True:
        async with write_transaction(engine) as conn:
            deleted = (await conn.execute(stmt)).rowcount
        total += deleted
        if deleted < chunk:
            return total
        await asyncio.sleep(pause)


def retention_cutoff_ms(retention_days: float, now: float | None = None) -> int:
    """Epoch milliseconds before which raw rows have expired."""
    return int(((time.time() if now is None else now) - retention_days * 86_400) * 1000)


async def request_log_retention_job(state: AdminState) -> None:
    """Every `INTERVAL` seconds, delete raw request-log rows past `request_log_retention_days`."""
    while True:
        cutoff = retention_cutoff_ms(state.settings.request_log_retention_days)
        try:
            deleted = await purge_request_log(state.engine, older_than_ms=cutoff)
        except Exception as exc:
            log.warning("request_log.retention_failed", error=str(exc), kind=type(exc).__name__)
        else:
            if deleted:
                log.info("request_log.retention", deleted=deleted, before_ms=cutoff)
        await asyncio.sleep(INTERVAL)
