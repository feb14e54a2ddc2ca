"""The rollup job on a real store (SQLite and PostgreSQL): minute → hour → day, sketches
equal to sketches of the raw values, bucket boundaries, lateness, idempotent re-runs,
two control planes at once, retention."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
from rollup_support import insert_rows, raw_row
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics import queries
from portcullis.analytics.queries import Scope
from portcullis.analytics.record import Flag
from portcullis.analytics.rollups import RetentionDays, Rollups
from portcullis.analytics.sketch import LatencySketch
from portcullis.store.analytics_tables import AnalyticsCursorRow, RollupRow
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head

DAY0 = 1_767_225_600  # 2026-01-01T00:00:00Z
H, D = 3600, 86400


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def traffic(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """`n` requests over the first three hours of DAY0, plus two on a minute boundary."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        kind = rng.random()
        extra: dict[str, Any] = {}
        if kind < 0.05:
            extra = {"status": 429, "flags": int(Flag.RATE_LIMITED), "error_kind": "quota-exceeded"}
        elif kind < 0.1:
            extra = {"status": 502, "error_kind": "upstream-unavailable"}
        elif kind < 0.2:
            extra = {"status": 404}
        rows.append(
            raw_row(
                DAY0 * 1000 + rng.randrange(3 * H * 1000),
                rng.lognormvariate(3, 1),
                route=rng.choice(["orders", "users"]),
                consumer=rng.choice([None, "alice", "bob"]),
                **extra,
            )
        )
    rows.append(raw_row(DAY0 * 1000 + 59_999, 5.0, route="edge"))
    rows.append(raw_row(DAY0 * 1000 + 60_000, 7.0, route="edge"))
    return rows


def dims(row: dict[str, Any]) -> tuple[str, str, str, int]:
    return (row["route"] or "", row["service"] or "", row["consumer"] or "", row["status"] // 100)


async def table(engine: AsyncEngine, granularity: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(RollupRow.__table__)
            .where(RollupRow.granularity == granularity)
            .order_by(
                RollupRow.bucket_start,
                RollupRow.route,
                RollupRow.consumer,
                RollupRow.status_class,
            )
        )
        return [{k: v for k, v in r._mapping.items() if k != "id"} for r in result]


async def test_rollups_equal_sketches_of_the_raw_values(engine: AsyncEngine) -> None:
    rows = traffic(3000)
    await insert_rows(engine, rows)
    rollups = Rollups(engine, clock=lambda: DAY0 + 2 * D, max_batches=1000)
    written = await rollups.run_once()
    assert written["hour"] == 3
    assert written["day"] == 1
    positions = await rollups.positions()
    assert positions == {"minute": DAY0 + 2 * D - 60, "hour": DAY0 + 2 * D - H, "day": DAY0 + D}

    for granularity, size in (("minute", 60), ("hour", H), ("day", D)):
        expected: dict[tuple[int, tuple[str, str, str, int]], list[dict[str, Any]]] = defaultdict(
            list
        )
        for row in rows:
            bucket = row["ts_ms"] // 1000 // size * size
            expected[bucket, dims(row)].append(row)
        stored = await table(engine, granularity)
        assert len(stored) == len(expected), granularity
        for got in stored:
            want = expected[
                got["bucket_start"],
                (got["route"], got["service"], got["consumer"], got["status_class"]),
            ]
            assert got["requests"] == len(want)
            assert got["errors"] == sum(1 for r in want if r["error_kind"] or r["status"] >= 500)
            assert got["rate_limited"] == sum(1 for r in want if r["flags"])
            assert got["bytes_out"] == 100 * len(want)
            assert got["latency_sum_ms"] == pytest.approx(sum(r["latency_ms"] for r in want))
            # Merged minute (and hour) sketches are exactly the sketch of the raw values.
            raw = LatencySketch()
            raw.add_many(r["latency_ms"] for r in want)
            assert LatencySketch.from_bytes(got["sketch"]) == raw

    # Bucket boundaries: 59.999 s is the first minute, 60.000 s the second.
    edge = [r for r in await table(engine, "minute") if r["route"] == "edge"]
    assert [(r["bucket_start"], r["requests"]) for r in edge] == [(DAY0, 1), (DAY0 + 60, 1)]

    assert await rollups.run_once() == {"minute": 0, "hour": 0, "day": 0}


async def test_a_rerun_replaces_the_same_rows(engine: AsyncEngine) -> None:
    await insert_rows(engine, traffic(500, seed=2))
    rollups = Rollups(engine, clock=lambda: DAY0 + 2 * D, max_batches=1000)
    await rollups.run_once()
    before = {g: await table(engine, g) for g in ("minute", "hour", "day")}
    async with engine.begin() as conn:
        await conn.execute(delete(AnalyticsCursorRow))
    await rollups.run_once()
    assert {g: await table(engine, g) for g in ("minute", "hour", "day")} == before


async def test_a_minute_waits_for_late_rows(engine: AsyncEngine) -> None:
    now = [float(DAY0 + 120 + 5)]
    rollups = Rollups(engine, lateness=15, clock=lambda: now[0])
    await insert_rows(engine, [raw_row(DAY0 * 1000 + 1000, 3.0)])
    await rollups.run_once()
    # Minute 1 ended 5 s ago: still open for rows the writers flush late.
    assert (await rollups.positions())["minute"] == DAY0 + 60
    await insert_rows(engine, [raw_row(DAY0 * 1000 + 90_000, 4.0)])
    now[0] = DAY0 + 180
    await rollups.run_once()
    stored = await table(engine, "minute")
    assert [(r["bucket_start"], r["requests"]) for r in stored] == [(DAY0, 1), (DAY0 + 60, 1)]


async def test_two_control_planes_count_each_request_once(engine: AsyncEngine) -> None:
    rows = traffic(1500, seed=3)
    await insert_rows(engine, rows)
    planes = [
        Rollups(engine, clock=lambda: DAY0 + 2 * D, max_batches=1000, batch_buckets={"minute": 2})
        for _ in range(2)
    ]
    for _ in range(3):
        await asyncio.gather(*(p.run_once() for p in planes))
    for granularity in ("minute", "hour", "day"):
        stored = await table(engine, granularity)
        assert sum(r["requests"] for r in stored) == len(rows), granularity


async def test_retention_keeps_what_is_not_rolled_up_further(engine: AsyncEngine) -> None:
    await insert_rows(engine, traffic(200, seed=4))
    now = [float(DAY0 + 2 * D)]
    rollups = Rollups(
        engine,
        clock=lambda: now[0],
        retention=RetentionDays(minute=1, hour=2, day=400),
        max_batches=12,  # not all three hours in the first round
    )
    await rollups.run_once()  # the first round also applies retention
    # Minutes past retention but not in an hour rollup yet are kept.
    kept = await table(engine, "minute")
    hour_position = (await rollups.positions())["hour"]
    assert hour_position == DAY0 + H
    assert kept
    assert all(r["bucket_start"] >= hour_position for r in kept)
    while any((await rollups.run_once()).values()):
        pass
    await rollups.apply_retention()
    # Minutes older than a day are gone (all rolled up into hours); hours are kept.
    assert await table(engine, "minute") == []
    assert sum(r["requests"] for r in await table(engine, "hour")) == 202
    now[0] = DAY0 + 3 * D
    await rollups.apply_retention()
    assert await table(engine, "hour") == []
    assert sum(r["requests"] for r in await table(engine, "day")) == 202


# ------------------------------------------------------------ one snapshot per query
# An hourly export once returned 3 rows while the usage API counted 255: the export
# read the rollup cursors, then its chunks in separate transactions, so a rollup
# round (hour rollups written, minute rows pruned by retention) between them left it
# scanning minute spans that no longer existed. Here that round runs exactly between
# two chunks of a streaming export (driven through the async generator, no mocks).

SNAPSHOT_HOURS = 4


def many_dimensions(seed: int = 7) -> list[dict[str, object]]:
    """Requests over HOURS hours, spread over routes, consumers and statuses."""
    rng = random.Random(seed)
    rows = []
    for i in range(3000):
        rows.append(
            raw_row(
                DAY0 * 1000 + rng.randrange(SNAPSHOT_HOURS * H * 1000),
                rng.lognormvariate(3, 1),
                route=f"r{i % 9}",
                consumer=f"c{i % 7}",
                status=rng.choice([200, 200, 201, 404, 429, 502]),
            )
        )
    return rows


async def test_an_export_interleaved_with_a_rollup_round_matches_the_usage_api(
    engine: AsyncEngine,
) -> None:
    await insert_rows(engine, many_dimensions())
    # Minute rollups only: the hour cursor stays at the start of the range, so a
    # query plans minute spans for every hour.
    clock = [DAY0 + SNAPSHOT_HOURS * H + 120.0]
    rollups = Rollups(
        engine,
        lateness=0,
        batch_buckets={"minute": 10_000},
        max_batches=100,
        retention=RetentionDays(minute=0, hour=400, day=400),
        clock=lambda: clock[0],
    )
    await rollups.roll_minutes()
    series = await queries.usage(engine, DAY0, DAY0 + SNAPSHOT_HOURS * H, "hour", Scope())
    expected = series.totals.requests
    assert expected == 3000

    rows = queries.export_rows(
        engine, DAY0, DAY0 + SNAPSHOT_HOURS * H, "hour", Scope(), chunk_buckets=1
    )
    exported = []
    first = await anext(rows)
    exported.append(first)
    # A rollup round between two chunks: hour rollups written, and the minute rows
    # the hour rollups now cover pruned (retention 0 days).
    await rollups.roll_coarser("hour")
    await rollups.apply_retention()
    async with engine.connect() as conn:
        minutes_left = await conn.scalar(
            select(func.count()).select_from(RollupRow).where(RollupRow.granularity == "minute")
        )
    assert minutes_left == 0  # the round really removed what the export had planned to read
    exported += [row async for row in rows]

    assert sum(c.requests for _, c in exported) == expected
    assert len(exported) > 200  # enough (bucket, route, service, consumer, class) rows
    # The same boundaries: the export's buckets are the series' buckets.
    per_bucket: dict[int, int] = {}
    for key, counters in exported:
        per_bucket[key.bucket_start] = per_bucket.get(key.bucket_start, 0) + counters.requests
    assert per_bucket == {b: c.requests for b, c in series.buckets if c.requests}
    # And after the round, the API (reading hour rollups now) still agrees.
    again = await queries.usage(engine, DAY0, DAY0 + SNAPSHOT_HOURS * H, "hour", Scope())
    assert again.totals.requests == expected
