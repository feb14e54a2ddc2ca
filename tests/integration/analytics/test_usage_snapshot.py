"""The usage series and its export read one consistent snapshot.

An hourly export once returned 3 rows while the usage API counted 255: the export
read the rollup cursors, then its chunks in separate transactions, so a rollup
round (hour rollups written, minute rows pruned by retention) between them left
it scanning minute spans that no longer existed. Here that round runs exactly
between two chunks of a streaming export (driven through the async generator,
no mocks), with hundreds of (bucket, route, consumer, status) rows.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from rollup_support import insert_rows, raw_row
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics import queries
from portcullis.analytics.queries import Scope
from portcullis.analytics.rollups import RetentionDays, Rollups
from portcullis.store.analytics_tables import RollupRow
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head

DAY0 = 1_767_225_600  # 2026-01-01T00:00:00Z
H = 3600
HOURS = 4


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def traffic(seed: int = 7) -> list[dict[str, object]]:
    """Requests over HOURS hours, spread over routes, consumers and statuses."""
    rng = random.Random(seed)
    rows = []
    for i in range(3000):
        rows.append(
            raw_row(
                DAY0 * 1000 + rng.randrange(HOURS * H * 1000),
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
    await insert_rows(engine, traffic())
    # Minute rollups only: the hour cursor stays at the start of the range, so a
    # query plans minute spans for every hour.
    clock = [DAY0 + HOURS * H + 120.0]
    rollups = Rollups(
        engine,
        lateness=0,
        batch_buckets={"minute": 10_000},
        max_batches=100,
        retention=RetentionDays(minute=0, hour=400, day=400),
        clock=lambda: clock[0],
    )
    await rollups.roll_minutes()
    series = await queries.usage(engine, DAY0, DAY0 + HOURS * H, "hour", Scope())
    expected = series.totals.requests
    assert expected == 3000

    rows = queries.export_rows(engine, DAY0, DAY0 + HOURS * H, "hour", Scope(), chunk_buckets=1)
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
    again = await queries.usage(engine, DAY0, DAY0 + HOURS * H, "hour", Scope())
    assert again.totals.requests == expected
