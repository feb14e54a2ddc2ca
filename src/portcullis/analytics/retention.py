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
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.jobs import control_job
from portcullis.events.retention import purge_events
from portcullis.periodic import Periodic
from portcullis.settings import Settings
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


def request_log_retention_job(engine: AsyncEngine, settings: Settings) -> Periodic:
    """Every `INTERVAL` seconds, delete raw request-log rows past `request_log_retention_days`."""

    async def round() -> None:
        cutoff = retention_cutoff_ms(settings.request_log_retention_days)
        deleted = await purge_request_log(engine, older_than_ms=cutoff)
        if deleted:
            log.info("request_log.retention", deleted=deleted, before_ms=cutoff)

    job = control_job("request-log-retention", round, INTERVAL)
    job.failure_event = "request_log.retention_failed"
    return job


def events_retention_job(engine: AsyncEngine, settings: Settings) -> Periodic:
    """Every `INTERVAL` seconds, delete platform events past `events_retention_days`
    (raising the horizon live streams reset from: events/retention.py)."""

    async def round() -> None:
        cutoff = datetime.now(UTC) - timedelta(days=settings.events_retention_days)
        deleted = await purge_events(engine, older_than=cutoff)
        if deleted:
            log.info("events.retention", deleted=deleted, before=cutoff.isoformat())

    job = control_job("events-retention", round, INTERVAL)
    job.failure_event = "events.retention_failed"
    return job
