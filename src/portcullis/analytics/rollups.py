"""Minute, hour and day rollups of the request log: a control-plane background job.

Each round turns closed minutes of raw `request_log` rows into minute rollups per
(route, service, consumer, status class, api, api version, sandbox) — request, error
and rate-limited counts, bytes, the latency sum and a `LatencySketch` — then closed
hours of minute rollups into hour rollups and closed days of hours into day rollups,
merging the sketches (percentiles of coarse buckets come from the data, never from
averages). The same transaction adds the minutes' requests made as an API version to
`api_callers` (per day, version, consumer and API key: who still calls v1).

Progress is kept in `analytics_cursors`, one row per granularity: the position is
the first bucket not yet rolled up (epoch seconds). A minute is rolled up once it
ended more than `lateness` seconds ago, so rows the data-plane writers flush late
still land in it; rows arriving after that are in the raw log but not in the
rollups. Coarser buckets wait for every finer bucket of their span.

Writes are idempotent and safe with several control planes: one transaction moves
the cursor from the position it was read at (an UPDATE with the expected value
first, which also serialises concurrent writers), deletes the buckets it covers and
inserts their rows; a writer that finds the cursor moved rolls back and does
nothing. Empty stretches are skipped with one indexed query.

Retention deletes minute, hour and day rollups older than their settings, but
never rows a coarser granularity has not consumed yet.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import case, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.analytics.jobs import control_job
from portcullis.analytics.record import Flag
from portcullis.analytics.sketch import LatencySketch
from portcullis.periodic import Periodic
from portcullis.store.analytics_tables import (
    AnalyticsCursorRow,
    ApiCallerRow,
    RequestLogRow,
    RollupRow,
)
from portcullis.store.engine import dialect_insert, write_transaction

if TYPE_CHECKING:
    from portcullis.settings import Settings

log = structlog.get_logger(__name__)

MINUTE, HOUR, DAY = 60, 3600, 86400
GRANULARITIES: dict[str, int] = {"minute": MINUTE, "hour": HOUR, "day": DAY}
# The finer granularity each coarser one is built from.
SOURCE = {"hour": "minute", "day": "hour"}
CURSOR_JOBS: dict[str, str] = {g: f"rollups.{g}" for g in GRANULARITIES}
_RATE_LIMITED = int(Flag.RATE_LIMITED)
_STREAM_BATCH = 5000

# (route, service, consumer, status class, api, api version, sandbox); '' for "none".
Dims = tuple[str, str, str, int, str, str, bool]


def status_class(status: int) -> int:
    """1..5 for 1xx..5xx; anything outside 100..599 counts as a server error."""
    cls = status // 100
    return cls if 1 <= cls <= 5 else 5


def is_error(status: int, error_kind: str | None) -> bool:
    """5xx, or a request the gateway itself refused (it answered with a problem)."""
    return status >= 500 or error_kind is not None


def floor_to(ts: int, size: int) -> int:
    return ts - ts % size


@dataclass(slots=True)
class Counters:
    """The traffic of one bucket (or of any merged set of buckets)."""

    requests: int = 0
    errors: int = 0
    rate_limited: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    latency_sum_ms: float = 0.0
    sketch: LatencySketch = field(default_factory=LatencySketch)

    def add_request(
        self,
        status: int,
        bytes_in: int,
        bytes_out: int,
        latency_ms: float,
        flags: int,
        error_kind: str | None,
    ) -> None:
        self.requests += 1
        if is_error(status, error_kind):
            self.errors += 1
        if flags & _RATE_LIMITED:
            self.rate_limited += 1
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        self.latency_sum_ms += latency_ms
        self.sketch.add(latency_ms)

    def add_counts(
        self,
        requests: int,
        errors: int,
        rate_limited: int,
        bytes_in: int,
        bytes_out: int,
        latency_sum_ms: float,
        sketch: bytes | LatencySketch | None,
    ) -> None:
        """Add a stored rollup (its sketch as bytes, or None to skip percentiles)."""
        self.requests += requests
        self.errors += errors
        self.rate_limited += rate_limited
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        self.latency_sum_ms += latency_sum_ms
        if sketch is not None:
            other = (
                sketch if isinstance(sketch, LatencySketch) else LatencySketch.from_bytes(sketch)
            )
            self.sketch.merge(other)

    def merge(self, other: Counters) -> None:
        self.add_counts(
            other.requests,
            other.errors,
            other.rate_limited,
            other.bytes_in,
            other.bytes_out,
            other.latency_sum_ms,
            other.sketch,
        )

    def row(self, granularity: str, bucket_start: int, dims: Dims) -> dict[str, Any]:
        """The `analytics_rollups` row of this bucket."""
        route, service, consumer, cls, api, api_version, sandbox = dims
        return {
            "granularity": granularity,
            "bucket_start": bucket_start,
            "route": route,
            "service": service,
            "consumer": consumer,
            "status_class": cls,
            "api": api,
            "api_version": api_version,
            "sandbox": sandbox,
            "requests": self.requests,
            "errors": self.errors,
            "rate_limited": self.rate_limited,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "latency_sum_ms": self.latency_sum_ms,
            "sketch": self.sketch.to_bytes(),
        }


Buckets = dict[tuple[int, Dims], Counters]


class LostRace(Exception):
    """Another control plane moved the cursor first; this round's work is discarded."""


@dataclass(frozen=True, slots=True)
class RetentionDays:
    minute: int = 7
    hour: int = 90
    day: int = 730


class Rollups:
    """Rolls the request log up into `analytics_rollups`; `run_once` is one round."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        lateness: float = 15.0,
        retention: RetentionDays = RetentionDays(),
        batch_buckets: Mapping[str, int] | None = None,
        max_batches: int = 20,
        retention_every: float = 600.0,
        clock: Any = time.time,
    ) -> None:
        self._engine = engine
        self._lateness = lateness
        self._retention = retention
        # Buckets rolled up per transaction, per granularity.
        self._batch = {"minute": 5, "hour": 24, "day": 31, **(batch_buckets or {})}
        self._max_batches = max_batches
        self._retention_every = retention_every
        self._clock = clock
        self._last_retention = -float("inf")

    @classmethod
    def from_settings(cls, engine: AsyncEngine, settings: Settings) -> Rollups:
        return cls(
            engine,
            lateness=settings.analytics_rollup_lateness + settings.request_log_flush_interval,
            retention=RetentionDays(
                minute=settings.analytics_minute_rollup_retention_days,
                hour=settings.analytics_hour_rollup_retention_days,
                day=settings.analytics_day_rollup_retention_days,
            ),
        )

    # ------------------------------------------------------------------ rounds

    async def run_once(self) -> dict[str, int]:
        """Roll up whatever is ready; the number of buckets written per granularity."""
        written = {"minute": await self.roll_minutes()}
        for granularity in ("hour", "day"):
            written[granularity] = await self.roll_coarser(granularity)
        now = self._clock()
        if now - self._last_retention >= self._retention_every:
            self._last_retention = now
            await self.apply_retention()
        return written

    async def positions(self) -> dict[str, int | None]:
        """Each granularity's cursor: everything before it is rolled up (None: never ran)."""
        return await read_positions(self._engine)

    async def roll_minutes(self) -> int:
        """Minute rollups of closed minutes (ended more than `lateness` ago)."""
        ready_end = floor_to(int(self._clock() - self._lateness), MINUTE)
        return await self._roll("minute", ready_end)

    async def roll_coarser(self, granularity: str) -> int:
        """Hour (or day) rollups of buckets whose finer buckets are all rolled up."""
        source = (await self.positions())[SOURCE[granularity]]
        if source is None:
            return 0
        return await self._roll(granularity, floor_to(source, GRANULARITIES[granularity]))

    async def _roll(self, granularity: str, ready_end: int) -> int:
        size = GRANULARITIES[granularity]
        job = CURSOR_JOBS[granularity]
        written = 0
        for _ in range(self._max_batches):
            position = (await self.positions())[granularity]
            start = position or 0
            if start >= ready_end:
                break
            first = await self._first_bucket(granularity, start, ready_end)
            if first is None:
                # Nothing to roll up before ready_end: just move the cursor there.
                end, buckets = ready_end, {}
            else:
                begin = max(start, floor_to(first, size))
                end = min(begin + self._batch[granularity] * size, ready_end)
                buckets = await self._aggregate(granularity, begin, end)
            callers = (
                await aggregate_callers(self._engine, start, end)
                if granularity == "minute" and first is not None
                else []
            )
            try:
                await self._commit(job, position, end, granularity, start, buckets, callers)
            except (LostRace, IntegrityError):
                log.info("rollups.lost_race", granularity=granularity, position=position)
                break
            written += len({bucket for bucket, _ in buckets})
            if first is None:
                break
        return written

    async def _first_bucket(self, granularity: str, start: int, end: int) -> int | None:
        """The first bucket start (s) with data to roll up in [start, end), or None."""
        if granularity == "minute":
            query = select(func.min(RequestLogRow.ts_ms)).where(
                RequestLogRow.ts_ms >= start * 1000, RequestLogRow.ts_ms < end * 1000
            )
        else:
            query = select(func.min(RollupRow.bucket_start)).where(
                RollupRow.granularity == SOURCE[granularity],
                RollupRow.bucket_start >= start,
                RollupRow.bucket_start < end,
            )
        async with self._engine.connect() as conn:
            first = await conn.scalar(query)
        if first is None:
            return None
        return int(first) // 1000 if granularity == "minute" else int(first)

    async def _aggregate(self, granularity: str, begin: int, end: int) -> Buckets:
        if granularity == "minute":
            return await aggregate_raw(self._engine, begin, end)
        return await aggregate_rollups(
            self._engine, SOURCE[granularity], begin, end, GRANULARITIES[granularity]
        )

    async def _commit(
        self,
        job: str,
        expected: int | None,
        end: int,
        granularity: str,
        start: int,
        buckets: Buckets,
        callers: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Move the cursor to `end` and replace the rollups of [start, end), atomically
        (and add the callers of those minutes: the cursor move makes it happen once)."""
        async with write_transaction(self._engine) as conn:
            await move_cursor(conn, job, expected, end)
            await conn.execute(
                delete(RollupRow).where(
                    RollupRow.granularity == granularity,
                    RollupRow.bucket_start >= start,
                    RollupRow.bucket_start < end,
                )
            )
            rows = [c.row(granularity, bucket, dims) for (bucket, dims), c in buckets.items()]
            for chunk in _chunks(rows, 500):
                await conn.execute(insert(RollupRow), chunk)
            await add_callers(conn, callers)

    async def apply_retention(self) -> dict[str, int]:
        """Delete rollups past their retention (never ones not yet rolled up further)."""
        now = int(self._clock())
        positions = await self.positions()
        deleted: dict[str, int] = {}
        for granularity, days in (
            ("minute", self._retention.minute),
            ("hour", self._retention.hour),
            ("day", self._retention.day),
        ):
            cutoff = now - days * DAY
            consumer = {"minute": "hour", "hour": "day"}.get(granularity)
            if consumer is not None:
                cutoff = min(cutoff, positions[consumer] or 0)
            async with write_transaction(self._engine) as conn:
                result = await conn.execute(
                    delete(RollupRow).where(
                        RollupRow.granularity == granularity, RollupRow.bucket_start < cutoff
                    )
                )
            deleted[granularity] = result.rowcount
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                delete(ApiCallerRow).where(ApiCallerRow.day < now - self._retention.day * DAY)
            )
        deleted["api_callers"] = result.rowcount
        if any(deleted.values()):
            log.info("rollups.retention", **deleted)
        return deleted


# ---------------------------------------------------------------------- helpers


async def read_positions(engine: AsyncEngine) -> dict[str, int | None]:
    """The rollup cursors by granularity (None where a granularity never ran)."""
    async with engine.connect() as conn:
        return await positions_in(conn)


async def positions_in(conn: AsyncConnection) -> dict[str, int | None]:
    """`read_positions` on the caller's connection (and so in its snapshot)."""
    rows = (
        await conn.execute(
            select(AnalyticsCursorRow.job, AnalyticsCursorRow.position).where(
                AnalyticsCursorRow.job.in_(CURSOR_JOBS.values())
            )
        )
    ).all()
    by_job = {job: int(position) for job, position in rows}
    return {g: by_job.get(job) for g, job in CURSOR_JOBS.items()}


async def move_cursor(conn: AsyncConnection, job: str, expected: int | None, new: int) -> None:
    """Set `job`'s cursor to `new` if it still is `expected` (None: it doesn't exist yet).

    Raises `LostRace` (or `IntegrityError`, for two first inserts) when another
    writer got there first. Run it first in the transaction: on PostgreSQL the row
    lock makes a concurrent writer wait here, then find the cursor moved.
    """
    now = datetime.now(UTC)
    if expected is None:
        await conn.execute(insert(AnalyticsCursorRow).values(job=job, position=new, updated_at=now))
        return
    result = await conn.execute(
        update(AnalyticsCursorRow)
        .where(AnalyticsCursorRow.job == job, AnalyticsCursorRow.position == expected)
        .values(position=new, updated_at=now)
    )
    if result.rowcount != 1:
        raise LostRace(job)


async def aggregate_raw(engine: AsyncEngine, begin: int, end: int) -> Buckets:
    """Minute buckets of the raw rows with `begin <= ts < end` (epoch seconds), streamed."""
    log_row = RequestLogRow
    query = select(
        log_row.ts_ms,
        log_row.route,
        log_row.service,
        log_row.consumer,
        log_row.status,
        log_row.bytes_in,
        log_row.bytes_out,
        log_row.latency_ms,
        log_row.flags,
        log_row.error_kind,
        log_row.api,
        log_row.api_version,
        log_row.sandbox,
    ).where(log_row.ts_ms >= begin * 1000, log_row.ts_ms < end * 1000)
    buckets: Buckets = {}
    async with engine.connect() as conn:
        result = await conn.stream(query.execution_options(yield_per=_STREAM_BATCH))
        async for partition in result.partitions(_STREAM_BATCH):
            for row in partition:
                ts_ms, route, service, consumer, status, b_in, b_out, ms, flags, kind = row[:10]
                api, api_version, sandbox = row[10:]
                key = (
                    ts_ms // 60_000 * 60,
                    (
                        route or "",
                        service or "",
                        consumer or "",
                        status_class(status),
                        api or "",
                        api_version or "",
                        bool(sandbox),
                    ),
                )
                counters = buckets.get(key)
                if counters is None:
                    counters = buckets[key] = Counters()
                counters.add_request(status, b_in, b_out, ms, flags, kind)
    return buckets


async def aggregate_rollups(
    engine: AsyncEngine, source: str, begin: int, end: int, size: int
) -> Buckets:
    """Buckets of `size` seconds built from `source` rollups in [begin, end)."""
    query = select(
        RollupRow.bucket_start,
        RollupRow.route,
        RollupRow.service,
        RollupRow.consumer,
        RollupRow.status_class,
        RollupRow.api,
        RollupRow.api_version,
        RollupRow.sandbox,
        RollupRow.requests,
        RollupRow.errors,
        RollupRow.rate_limited,
        RollupRow.bytes_in,
        RollupRow.bytes_out,
        RollupRow.latency_sum_ms,
        RollupRow.sketch,
    ).where(
        RollupRow.granularity == source,
        RollupRow.bucket_start >= begin,
        RollupRow.bucket_start < end,
    )
    buckets: Buckets = {}
    async with engine.connect() as conn:
        result = await conn.stream(query.execution_options(yield_per=_STREAM_BATCH))
        async for partition in result.partitions(_STREAM_BATCH):
            for row in partition:
                dims = (row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]))
                key = (floor_to(row[0], size), dims)
                counters = buckets.get(key)
                if counters is None:
                    counters = buckets[key] = Counters()
                counters.add_counts(row[8], row[9], row[10], row[11], row[12], row[13], row[14])
    return buckets


async def aggregate_callers(engine: AsyncEngine, begin: int, end: int) -> list[dict[str, Any]]:
    """The `api_callers` increments of the raw rows with `begin <= ts < end` that were
    served as an API version: requests and the last request per day and caller."""
    log_row = RequestLogRow
    day = (log_row.ts_ms // (DAY * 1000) * DAY).label("day")
    consumer = func.coalesce(log_row.consumer, "")
    credential = func.coalesce(log_row.credential_id, "")
    query = (
        select(
            day,
            log_row.api,
            log_row.api_version,
            consumer,
            credential,
            log_row.sandbox,
            func.count(),
            func.max(log_row.ts_ms),
        )
        .where(
            log_row.ts_ms >= begin * 1000,
            log_row.ts_ms < end * 1000,
            log_row.api.is_not(None),
            log_row.api_version.is_not(None),
        )
        .group_by(day, log_row.api, log_row.api_version, consumer, credential, log_row.sandbox)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        {
            "day": int(d),
            "api": api,
            "api_version": version,
            "consumer": who,
            "credential_id": key,
            "sandbox": bool(sandbox),
            "requests": int(n),
            "last_seen_ms": int(last),
        }
        for d, api, version, who, key, sandbox, n, last in rows
    ]


async def add_callers(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Add `rows` (from `aggregate_callers`) to `api_callers`: counts summed, last seen
    the later one."""
    if not rows:
        return
    stmt = dialect_insert(conn)(ApiCallerRow)
    stmt = stmt.on_conflict_do_update(
        index_elements=[
            ApiCallerRow.day,
            ApiCallerRow.api,
            ApiCallerRow.api_version,
            ApiCallerRow.consumer,
            ApiCallerRow.credential_id,
            ApiCallerRow.sandbox,
        ],
        set_={
            "requests": ApiCallerRow.requests + stmt.excluded.requests,
            "last_seen_ms": case(
                (
                    stmt.excluded.last_seen_ms > ApiCallerRow.last_seen_ms,
                    stmt.excluded.last_seen_ms,
                ),
                else_=ApiCallerRow.last_seen_ms,
            ),
        },
    )
    for chunk in _chunks(list(rows), 500):
        await conn.execute(stmt, chunk)


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def rollup_job(engine: AsyncEngine, settings: Settings) -> Periodic:
    """The background job: a rollup round every `analytics_rollup_interval` seconds."""
    rollups = Rollups.from_settings(engine, settings)

    async def round() -> None:
        written = await rollups.run_once()
        if any(written.values()):
            log.debug("rollups.round", **written)

    return control_job("rollups", round, settings.analytics_rollup_interval)
