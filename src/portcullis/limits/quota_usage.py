"""Quota usage across data-plane workers when the limit counters live in memory.

Without Redis every data-plane worker counts calendar quotas in its own memory
(`MemoryBackend`), which the control plane cannot read. So each worker publishes
its quota counters to the store (`quota_usage`, one row per worker and counter)
every `PUBLISH_INTERVAL` seconds and once more when it stops, and the usage API
sums them (`read_quota_usage`).

What the numbers mean with the memory backend:

- each worker enforces a quota on its own, so the gateway can admit up to the
  limit per worker; `used` is the sum over workers (the requests really admitted
  in the period, as last published: up to one interval behind), and a worker
  refuses once *its own* count reaches the limit (`busiest`: the highest count of
  one live worker);
- a worker that stops gracefully publishes its final counts and folds them into
  the pseudo-worker `retired`, so they still count in `used` until the period ends
  (its successor starts enforcing from zero); a worker that dies without stopping
  loses at most its last interval, and its rows are folded into `retired` by the
  others once it has sent no heartbeat for `DEAD_AFTER`.

Only plan-limits quota counters (keys starting with `pq`) are published, and only
those whose count changed since the last publication. Rows of periods that ended
are deleted (every `CLEANUP_INTERVAL`). Publication is bookkeeping: a store error
is logged and retried on the next tick, never a reason to stop serving.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.limits.memory import MemoryBackend
from portcullis.limits.spec import CALENDAR_GRACE_US
from portcullis.periodic import Periodic
from portcullis.store.analytics_tables import QuotaUsageRow
from portcullis.store.engine import dialect_insert, write_transaction
from portcullis.store.identity_tables import DataPlaneNodeRow

log = structlog.get_logger(__name__)

PUBLISH_INTERVAL = 2.0
CLEANUP_INTERVAL = 60.0
# A worker with no heartbeat for this long is gone: its rows are folded into `retired`.
# Generous, so a worker whose store is briefly unreachable is not folded while alive
# (its next publication would then count twice until the period ends).
DEAD_AFTER = timedelta(minutes=5)
RETIRED = "retired"
# The counter keys of plan-limits quotas (`pq:` plan-wide, `pq@<route>:` per route).
QUOTA_PREFIX = "pq"
_MAX_KEY = 512
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class CounterUsage:
    """One counter summed over workers: `used` (every worker, stopped ones included),
    `busiest` (the highest count of one live worker) and how many live workers count it."""

    used: int
    busiest: int
    workers: int


def _insert(conn: AsyncConnection) -> Any:
    return dialect_insert(conn)


async def _upsert(conn: AsyncConnection, rows: Sequence[dict[str, Any]], *, add: bool) -> None:
    """Insert or update `rows`; `add`: add `used` to the stored value instead of replacing it."""
    if not rows:
        return
    stmt = _insert(conn)(QuotaUsageRow)
    used = QuotaUsageRow.used + stmt.excluded.used if add else stmt.excluded.used
    stmt = stmt.on_conflict_do_update(
        index_elements=[QuotaUsageRow.worker_id, QuotaUsageRow.counter_key],
        set_={
            "used": used,
            "period_end_us": stmt.excluded.period_end_us,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    for start in range(0, len(rows), _CHUNK):
        await conn.execute(stmt, list(rows[start : start + _CHUNK]))


async def fold_workers(conn: AsyncConnection, worker_ids: Iterable[str]) -> int:
    """Move the rows of `worker_ids` into `retired` (counts added); returns rows moved.

    DELETE … RETURNING takes each row once even when two processes fold the same
    worker at the same time (the second delete finds nothing).
    """
    ids = [w for w in worker_ids if w != RETIRED]
    if not ids:
        return 0
    gone = (
        await conn.execute(
            delete(QuotaUsageRow)
            .where(QuotaUsageRow.worker_id.in_(ids))
            .returning(QuotaUsageRow.counter_key, QuotaUsageRow.period_end_us, QuotaUsageRow.used)
        )
    ).all()
    now = datetime.now(UTC)
    merged: dict[str, dict[str, Any]] = {}
    for key, end, used in gone:
        row = merged.setdefault(
            key,
            {
                "worker_id": RETIRED,
                "counter_key": key,
                "period_end_us": end,
                "used": 0,
                "updated_at": now,
            },
        )
        row["used"] += used
        row["period_end_us"] = max(row["period_end_us"], end)
    await _upsert(conn, list(merged.values()), add=True)
    return len(gone)


class QuotaUsagePublisher:
    """Publishes one worker's memory-backend quota counters (see the module doc)."""

    def __init__(
        self,
        engine: AsyncEngine,
        backend: MemoryBackend,
        worker_id: str,
        *,
        interval: float = PUBLISH_INTERVAL,
        cleanup_interval: float = CLEANUP_INTERVAL,
    ) -> None:
        self._engine = engine
        self._backend = backend
        self.worker_id = worker_id
        self.interval = interval
        self.cleanup_interval = cleanup_interval
        # What the store holds for this worker: counter key -> count.
        self._published: dict[str, int] = {}
        self._cleaned_at = 0.0
        self._loop = Periodic(
            "quota-usage",
            self._tick,
            interval=interval,
            final=self._retire,
            failure_event="quota_usage.publish_failed",
        )

    async def publish(self) -> int:
        """Write the counters that changed and drop the rows of those gone; rows written."""
        current = {
            key: (used, end)
            for key, used, end in self._backend.calendar_counters(QUOTA_PREFIX)
            if len(key) <= _MAX_KEY
        }
        now = datetime.now(UTC)
        changed = [
            {
                "worker_id": self.worker_id,
                "counter_key": key,
                "period_end_us": end,
                "used": used,
                "updated_at": now,
            }
            for key, (used, end) in current.items()
            if self._published.get(key) != used
        ]
        gone = [key for key in self._published if key not in current]
        if not changed and not gone:
            return 0
        async with write_transaction(self._engine) as conn:
            await _upsert(conn, changed, add=False)
            for start in range(0, len(gone), _CHUNK):
                await conn.execute(
                    delete(QuotaUsageRow).where(
                        QuotaUsageRow.worker_id == self.worker_id,
                        QuotaUsageRow.counter_key.in_(gone[start : start + _CHUNK]),
                    )
                )
        self._published = {key: used for key, (used, _) in current.items()}
        return len(changed)

    async def cleanup(self) -> None:
        """Delete rows of ended periods; fold the rows of workers gone silent into `retired`."""
        now = datetime.now(UTC)
        ended = int(time.time() * 1_000_000) - CALENDAR_GRACE_US
        async with write_transaction(self._engine) as conn:
            await conn.execute(delete(QuotaUsageRow).where(QuotaUsageRow.period_end_us < ended))
            alive = select(DataPlaneNodeRow.id).where(
                DataPlaneNodeRow.heartbeat_at >= now - DEAD_AFTER
            )
            dead = (
                await conn.execute(
                    select(QuotaUsageRow.worker_id)
                    .distinct()
                    .where(
                        QuotaUsageRow.worker_id != RETIRED,
                        QuotaUsageRow.worker_id != self.worker_id,
                        QuotaUsageRow.worker_id.not_in(alive),
                    )
                )
            ).scalars()
            folded = await fold_workers(conn, list(dead))
        if folded:
            log.info("quota_usage.folded_dead_workers", rows=folded)

    async def _tick(self) -> None:
        await self.publish()
        if time.monotonic() - self._cleaned_at >= self.cleanup_interval:
            self._cleaned_at = time.monotonic()
            await self.cleanup()

    async def _retire(self) -> None:
        await self.publish()
        async with write_transaction(self._engine) as conn:
            await fold_workers(conn, [self.worker_id])
        self._published = {}

    def start(self) -> None:
        """Publish every `interval` seconds (the first cleanup runs on the first tick)."""
        self._loop.start()

    async def stop(self) -> None:
        """Stop publishing, publish the final counts and fold them into `retired`."""
        await self._loop.stop()


async def read_quota_usage(
    engine: AsyncEngine, keys: Sequence[str], *, fresh_for: timedelta
) -> dict[str, CounterUsage]:
    """The published usage of each counter in `keys` (missing: nobody counted it yet).

    A worker is live when its heartbeat is younger than `fresh_for`; `busiest` and
    `workers` look at live workers only, `used` at every row.
    """
    if not keys:
        return {}
    cutoff = datetime.now(UTC) - fresh_for
    live = (DataPlaneNodeRow.heartbeat_at >= cutoff) & (QuotaUsageRow.worker_id != RETIRED)
    live_used = func.coalesce(func.max(QuotaUsageRow.used).filter(live), 0)
    query = (
        select(
            QuotaUsageRow.counter_key,
            func.sum(QuotaUsageRow.used),
            live_used,
            func.count(DataPlaneNodeRow.id).filter(live),
        )
        .outerjoin(DataPlaneNodeRow, DataPlaneNodeRow.id == QuotaUsageRow.worker_id)
        .where(QuotaUsageRow.counter_key.in_(sorted(set(keys))))
        .group_by(QuotaUsageRow.counter_key)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return {
        key: CounterUsage(int(used), int(busiest), int(workers))
        for key, used, busiest, workers in rows
    }
