"""The migrations build exactly the tables the models describe (no drift either way), and
the newest ones come back down cleanly (0015 without losing rolled-up traffic)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, insert, inspect, select, text

from portcullis.analytics.sketch import LatencySketch
from portcullis.store import (
    admin_tables,
    analytics_tables,
    catalogue_tables,
    graphql_tables,
    identity_tables,
    portal_tables,
    webhook_tables,
)
from portcullis.store.analytics_tables import RollupRow
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.tables import Base
from support.migrations import migrate

# Imported for their side effect: every table registers on Base.metadata.
_TABLE_MODULES = (
    admin_tables,
    analytics_tables,
    catalogue_tables,
    graphql_tables,
    identity_tables,
    portal_tables,
    webhook_tables,
)


async def test_migrating_to_head_builds_the_models_tables(database_url: str) -> None:
    await migrate(database_url, "head")
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_the_webhook_and_health_migrations_go_down_and_up_again(database_url: str) -> None:
    await migrate(database_url, "head")
    await migrate(database_url, "0007", down=True)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
            event_columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("events")}
            )
    finally:
        await engine.dispose()
    assert not tables & {"webhook_endpoints", "webhook_messages", "upstream_health_states"}
    assert "organization_id" not in event_columns
    await migrate(database_url, "head")


async def test_the_api_usage_migration_goes_down_without_losing_traffic(database_url: str) -> None:
    """0015 down folds rollups that differed only by API, version or sandbox into one row
    per bucket (counts added, sketches merged); up again restores the columns."""
    await migrate(database_url, "head")
    engine = create_engine(database_url)

    def rollup(api: str, version: str, sandbox: bool, latency: float) -> dict[str, Any]:
        sketch = LatencySketch()
        sketch.add(latency)
        return {
            "granularity": "minute",
            "bucket_start": 600,
            "route": "r",
            "service": "s",
            "consumer": "alice",
            "status_class": 2,
            "api": api,
            "api_version": version,
            "sandbox": sandbox,
            "requests": 1,
            "errors": 0,
            "rate_limited": 0,
            "bytes_in": 1,
            "bytes_out": 10,
            "latency_sum_ms": latency,
            "sketch": sketch.to_bytes(),
        }

    try:
        async with write_transaction(engine) as conn:
            await conn.execute(
                insert(RollupRow),
                [
                    rollup("", "", False, 5.0),
                    rollup("shop", "v1", False, 10.0),
                    rollup("shop", "v1", True, 20.0),
                    {**rollup("shop", "v2", False, 40.0), "consumer": "bob"},
                ],
            )
        await migrate(database_url, "0014", down=True)
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("request_log")}
            )
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
            rows = (
                await conn.execute(
                    text(
                        "SELECT consumer, requests, bytes_out, latency_sum_ms, sketch"
                        " FROM analytics_rollups ORDER BY consumer"
                    )
                )
            ).all()
        assert not columns & {"api", "api_version", "sandbox"}
        assert not tables & {"api_callers", "version_sunset_notices"}
        assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
            ("alice", 3, 30, 35.0),
            ("bob", 1, 10, 40.0),
        ]
        assert LatencySketch.from_bytes(rows[0][4]).count == 3
        await migrate(database_url, "head")
        async with engine.connect() as conn:
            restored = await conn.scalar(
                select(func.count()).select_from(RollupRow).where(RollupRow.api == "")
            )
        assert restored == 2
    finally:
        await engine.dispose()
