"""Analytics queries over the rollups (and, for recent or error-kind detail, the raw log).

A range is answered from the coarsest rollups that fit it: whole UTC days that the
day rollups cover, then whole hours, then minutes (`plan`). Counters add up and
latency sketches merge, so a percentile over any range is computed from the data
of the whole range. Minutes not rolled up yet (the last `lateness` seconds or so)
are not in these answers; `Coverage.complete_until` says up to when data is in.

Every function takes a `Scope`: exact route/service/consumer (and api, api version,
sandbox) filters and, for
admins limited to an organization, the names of the routes and consumers they may
see (a row is visible when its route or its consumer is theirs).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from contextlib import asynccontextmanager
from dataclasses import astuple, dataclass, field, replace
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, case, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.analytics.record import Flag
from portcullis.analytics.rollups import (
    GRANULARITIES,
    Counters,
    floor_to,
    positions_in,
)
from portcullis.analytics.sketch import LatencySketch
from portcullis.store.analytics_tables import RequestLogRow, RollupRow
from portcullis.store.engine import is_sqlite

K = TypeVar("K", bound=Hashable)
LEVELS = ("day", "hour", "minute")
# Raw rows read for realtime percentiles: the most recent ones of the window.
REALTIME_LATENCY_SAMPLE = 10_000
ERROR_KINDS_LIMIT = 50
_STREAM_BATCH = 2000
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def ceil_to(ts: int, size: int) -> int:
    return -(-ts // size) * size


@dataclass(frozen=True, slots=True)
class Scope:
    """Which traffic a query covers (None: no restriction)."""

    route: str | None = None
    service: str | None = None
    consumer: str | None = None
    # Organization-limited callers: only rows whose route or consumer is one of these.
    visible_routes: frozenset[str] | None = None
    visible_consumers: frozenset[str] | None = None
    # The API product and version requests were served as, and sandbox or live traffic.
    api: str | None = None
    api_version: str | None = None
    sandbox: bool | None = None

    def _conditions(self, table: Any) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        for name in ("route", "service", "consumer", "api", "api_version"):
            wanted = getattr(self, name)
            if wanted is not None:
                out.append(getattr(table, name) == wanted)
        if self.sandbox is not None:
            out.append(table.sandbox.is_(self.sandbox))
        if self.visible_routes is not None or self.visible_consumers is not None:
            routes = sorted(self.visible_routes or ())
            consumers = sorted(self.visible_consumers or ())
            parts = []
            if routes:
                parts.append(table.route.in_(routes))
            if consumers:
                parts.append(table.consumer.in_(consumers))
            out.append(or_(*parts) if parts else false())
        return out

    def rollup_conditions(self) -> list[ColumnElement[bool]]:
        return self._conditions(RollupRow)

    def raw_conditions(self) -> list[ColumnElement[bool]]:
        return self._conditions(RequestLogRow)


@dataclass(frozen=True, slots=True)
class Span:
    """Rollups of one granularity with `begin <= bucket_start < end`."""

    granularity: str
    begin: int
    end: int


@dataclass(frozen=True, slots=True)
class Coverage:
    """How far each granularity is rolled up (epoch seconds; 0 when it never ran)."""

    minute: int = 0
    hour: int = 0
    day: int = 0

    @property
    def complete_until(self) -> int:
        """Everything before this instant is in the rollups."""
        return self.minute

    def position(self, granularity: str) -> int:
        value: int = getattr(self, granularity)
        return value


async def coverage(conn: AsyncConnection) -> Coverage:
    """How far the rollups go, as seen in `conn`'s snapshot."""
    positions = await positions_in(conn)
    return Coverage(**{g: p or 0 for g, p in positions.items()})


@asynccontextmanager
async def read_snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One consistent view of the rollups and their cursors for a whole query.

    The rollup job moves a cursor, replaces buckets and prunes finer rows in its
    own transactions; a query that read the cursors, then the rows in other
    transactions, could plan minute spans that were meanwhile rolled up and
    pruned (an export once returned 3 rows where the usage API counted 255).
    Every read of a query (the cursors, then every scan — an export's chunks
    included) goes through this one transaction: REPEATABLE READ on PostgreSQL,
    a deferred read transaction on SQLite (its WAL snapshot starts at the first
    read and holds until the end).
    """
    async with engine.connect() as conn:
        if not is_sqlite(engine):
            await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            yield conn


def plan(start: int, end: int, cover: Coverage, coarsest: str = "day") -> list[Span]:
    """The spans of rollups that cover [start, end) (minute-aligned), coarsest first.

    Granularities coarser than `coarsest` are not used (a series by hour must not
    read day rollups). Minutes not rolled up yet are left out.
    """
    levels = LEVELS[LEVELS.index(coarsest) :]
    return [s for s in _cover(start, end, levels, cover) if s.begin < s.end]


def _cover(start: int, end: int, levels: Sequence[str], cover: Coverage) -> list[Span]:
    if start >= end or not levels:
        return []
    granularity, finer = levels[0], levels[1:]
    size = GRANULARITIES[granularity]
    done = cover.position(granularity)
    if granularity == "minute":
        return [Span("minute", start, min(end, done))]
    begin = ceil_to(start, size)
    stop = min(floor_to(end, size), floor_to(done, size))
    if begin >= stop:
        return _cover(start, end, finer, cover)
    return [
        *_cover(start, begin, finer, cover),
        Span(granularity, begin, stop),
        *_cover(stop, end, finer, cover),
    ]


# ---------------------------------------------------------------------- scanning rollups

_ROLLUP_COLUMNS = (
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
)


@dataclass(frozen=True, slots=True)
class RollupKey:
    """The dimensions of one rollup row, handed to a grouping function."""

    bucket_start: int
    route: str
    service: str
    consumer: str
    status_class: int
    api: str = ""
    api_version: str = ""
    sandbox: bool = False


async def scan(
    conn: AsyncConnection,
    spans: Sequence[Span],
    scope: Scope,
    group: Callable[[RollupKey], K],
) -> dict[K, Counters]:
    """Rollups of `spans` within `scope`, added up per `group(row)`, streamed."""
    out: dict[K, Counters] = {}
    if not spans:
        return out
    where = or_(
        *(
            and_(
                RollupRow.granularity == s.granularity,
                RollupRow.bucket_start >= s.begin,
                RollupRow.bucket_start < s.end,
            )
            for s in spans
        )
    )
    query = select(*_ROLLUP_COLUMNS).where(where, *scope.rollup_conditions())
    result = await conn.stream(query.execution_options(yield_per=_STREAM_BATCH))
    async for partition in result.partitions(_STREAM_BATCH):
        for row in partition:
            key = group(RollupKey(*row[:7], bool(row[7])))
            counters = out.get(key)
            if counters is None:
                counters = out[key] = Counters()
            counters.add_counts(row[8], row[9], row[10], row[11], row[12], row[13], row[14])
    return out


def total(groups: dict[Any, Counters]) -> Counters:
    out = Counters()
    for counters in groups.values():
        out.merge(counters)
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def stats(counters: Counters) -> dict[str, Any]:
    """The JSON summary of some traffic: counts, rates, bytes and latency percentiles."""
    n = counters.requests
    p50, p95, p99 = counters.sketch.quantiles([0.5, 0.95, 0.99])
    return {
        "requests": n,
        "errors": counters.errors,
        "error_rate": round(counters.errors / n, 6) if n else 0.0,
        "rate_limited": counters.rate_limited,
        "bytes_in": counters.bytes_in,
        "bytes_out": counters.bytes_out,
        "latency_avg_ms": _round(counters.latency_sum_ms / n) if n else None,
        "latency_p50_ms": _round(p50),
        "latency_p95_ms": _round(p95),
        "latency_p99_ms": _round(p99),
    }


LATENCY_QUANTILES = {"p50": 0.5, "p75": 0.75, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p999": 0.999}


def latency_stats(sketch: LatencySketch, latency_sum_ms: float) -> dict[str, Any]:
    """Count, min, max, mean and the standard percentiles of a sketch."""
    n = sketch.count
    values = sketch.quantiles(list(LATENCY_QUANTILES.values()))
    percentiles = {name: _round(v) for name, v in zip(LATENCY_QUANTILES, values, strict=True)}
    return {
        "count": n,
        "min_ms": _round(sketch.min),
        "max_ms": _round(sketch.max),
        "mean_ms": _round(latency_sum_ms / n) if n else None,
        "percentiles": percentiles,
    }


# ---------------------------------------------------------------------- reports


@dataclass(slots=True)
class Series:
    """Traffic per bucket of `granularity` over [start, end), plus the total."""

    granularity: str
    start: int
    end: int
    buckets: list[tuple[int, Counters]]
    totals: Counters
    complete_until: int


def bucket_count(start: int, end: int, granularity: str) -> int:
    size = GRANULARITIES[granularity]
    return (ceil_to(end, size) - floor_to(start, size)) // size


async def usage(
    engine: AsyncEngine, start: int, end: int, granularity: str, scope: Scope
) -> Series:
    """Traffic per bucket (every bucket of the range, empty ones as zeros)."""
    size = GRANULARITIES[granularity]
    first, stop = bucket_range(start, end, granularity)
    async with read_snapshot(engine) as conn:
        cover = await coverage(conn)
        groups = await scan(
            conn,
            plan(first, stop, cover, coarsest=granularity),
            scope,
            lambda k: floor_to(k.bucket_start, size),
        )
    buckets = [(b, groups.get(b) or Counters()) for b in range(first, stop, size)]
    return Series(granularity, first, stop, buckets, total(groups), min(stop, cover.minute))


def bucket_range(start: int, end: int, granularity: str) -> tuple[int, int]:
    """[start, end) widened to whole buckets: the same boundaries for the usage series
    and its export."""
    size = GRANULARITIES[granularity]
    return floor_to(start, size), ceil_to(end, size)


def minute_range(start: int, end: int) -> tuple[int, int]:
    """[start, end) widened to whole minutes (the finest rollup)."""
    return floor_to(start, 60), ceil_to(end, 60)


async def totals_by(
    engine: AsyncEngine,
    start: int,
    end: int,
    scope: Scope,
    group: Callable[[RollupKey], K],
) -> tuple[dict[K, Counters], Coverage]:
    """Traffic of [start, end) (widened to minutes) per `group`, from the coarsest rollups."""
    first, stop = minute_range(start, end)
    async with read_snapshot(engine) as conn:
        cover = await coverage(conn)
        return await scan(conn, plan(first, stop, cover), scope, group), cover


SORT_KEYS: dict[str, Callable[[Counters], float]] = {
    "requests": lambda c: c.requests,
    "errors": lambda c: c.errors,
    "error_rate": lambda c: c.errors / c.requests if c.requests else 0.0,
    "rate_limited": lambda c: c.rate_limited,
    "bytes_out": lambda c: c.bytes_out,
    "latency_p95": lambda c: c.sketch.quantile(0.95) or 0.0,
}


def top(groups: dict[K, Counters], sort: str, limit: int) -> list[tuple[K, Counters]]:
    """The `limit` largest groups by `sort` (ties: by requests, then by key text)."""
    measure = SORT_KEYS[sort]
    ranked = sorted(
        groups.items(), key=lambda item: (-measure(item[1]), -item[1].requests, str(item[0]))
    )
    return ranked[:limit]


@dataclass(slots=True)
class ErrorKindCount:
    error_kind: str | None
    status: int
    requests: int


async def error_kinds(
    engine: AsyncEngine, start: int, end: int, scope: Scope
) -> list[ErrorKindCount]:
    """Errors (5xx or gateway-refused) of the raw log in [start, end) by kind and status."""
    log_row = RequestLogRow
    n = func.count().label("n")
    query = (
        select(log_row.error_kind, log_row.status, n)
        .where(
            log_row.ts_ms >= start * 1000,
            log_row.ts_ms < end * 1000,
            or_(log_row.error_kind.is_not(None), log_row.status >= 500),
            *scope.raw_conditions(),
        )
        .group_by(log_row.error_kind, log_row.status)
        .order_by(n.desc(), log_row.status)
        .limit(ERROR_KINDS_LIMIT)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [ErrorKindCount(kind, int(status), int(count)) for kind, status, count in rows]


# ---------------------------------------------------------------------- realtime


@dataclass(slots=True)
class Realtime:
    """The last `window` seconds from the raw log, per second and in total."""

    start: int
    end: int
    seconds: list[tuple[int, int, int, int]]  # (second, requests, errors, rate_limited)
    sketch: LatencySketch = field(default_factory=LatencySketch)
    sampled: int = 0

    @property
    def requests(self) -> int:
        return sum(s[1] for s in self.seconds)

    @property
    def errors(self) -> int:
        return sum(s[2] for s in self.seconds)

    @property
    def rate_limited(self) -> int:
        return sum(s[3] for s in self.seconds)


async def realtime(engine: AsyncEngine, now: float, window: int, scope: Scope) -> Realtime:
    """Requests, errors and rate-limited refusals per second over the last `window` seconds
    (whole seconds ending at `now`), and latency percentiles of the most recent
    `REALTIME_LATENCY_SAMPLE` requests among them: two bounded, indexed queries."""
    end = math.floor(now)
    start = end - window
    log_row = RequestLogRow
    in_window = [
        log_row.ts_ms >= start * 1000,
        log_row.ts_ms < end * 1000,
        *scope.raw_conditions(),
    ]
    second = (log_row.ts_ms // 1000).label("second")
    failed = or_(log_row.status >= 500, log_row.error_kind.is_not(None))
    limited = log_row.flags.op("&")(int(Flag.RATE_LIMITED)) != 0
    per_second = (
        select(
            second,
            func.count(),
            func.sum(case((failed, 1), else_=0)),
            func.sum(case((limited, 1), else_=0)),
        )
        .where(*in_window)
        .group_by(second)
    )
    recent = (
        select(log_row.latency_ms)
        .where(*in_window)
        .order_by(log_row.ts_ms.desc())
        .limit(REALTIME_LATENCY_SAMPLE)
    )
    async with engine.connect() as conn:
        counted = {
            int(s): (int(n), int(e or 0), int(r or 0))
            for s, n, e, r in await conn.execute(per_second)
        }
        latencies = (await conn.execute(recent)).scalars().all()
    seconds = [(s, *counted.get(s, (0, 0, 0))) for s in range(start, end)]
    sketch = LatencySketch()
    sketch.add_many(latencies)
    return Realtime(start, end, seconds, sketch, len(latencies))


# ---------------------------------------------------------------------- export


async def export_rows(
    engine: AsyncEngine,
    start: int,
    end: int,
    granularity: str,
    scope: Scope,
    *,
    chunk_buckets: int = 24,
) -> AsyncIterator[tuple[RollupKey, Counters]]:
    """Traffic per bucket and (route, service, consumer, status class, api, api version,
    sandbox), in time order.

    The range is read a few buckets at a time, so an export of any length holds
    one chunk in memory, all in one snapshot (`read_snapshot`) and with the usage
    series' bucket boundaries (`bucket_range`), so both count the same traffic.
    """
    size = GRANULARITIES[granularity]
    first, stop = bucket_range(start, end, granularity)
    step = size * chunk_buckets
    # One snapshot for the whole export, however long the client takes to read it.
    async with read_snapshot(engine) as conn:
        cover = await coverage(conn)
        for chunk in range(first, stop, step):
            spans = plan(chunk, min(chunk + step, stop), cover, coarsest=granularity)
            groups = await scan(
                conn,
                spans,
                scope,
                lambda k: replace(k, bucket_start=floor_to(k.bucket_start, size)),
            )
            for key in sorted(groups, key=astuple):
                yield key, groups[key]
