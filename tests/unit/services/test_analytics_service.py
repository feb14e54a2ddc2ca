"""Analytics operations without HTTP: organization confinement, ranges that end at the
operation's clock, and the consumer's own-key check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.secrets import ServerSecret
from portcullis.services.analytics import AnalyticsService, SeriesQuery, UsageQuery
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.errors import NOT_FOUND, VALIDATION_FAILED, ServiceError
from portcullis.settings import Settings
from support.services import apply_config, operation

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
CONFIG = {
    "consumers": [
        {"username": "alice", "organization": "org-a"},
        {"username": "bob", "organization": "org-b"},
    ]
}


@pytest.fixture
async def analytics(engine: AsyncEngine, editor: ConfigEditor) -> AnalyticsService:
    await apply_config(engine, CONFIG)
    settings = Settings(database_url="sqlite+aiosqlite://")
    return AnalyticsService(engine, editor, ServerSecret.from_secret(b"k" * 32), settings)


async def test_a_limited_caller_gets_no_report_of_another_organizations_consumer(
    engine: AsyncEngine, analytics: AnalyticsService
) -> None:
    org_a = operation(engine, "org-a", clock=lambda: NOW)
    with pytest.raises(ServiceError) as hidden:
        await analytics.consumer_report(org_a, "bob", SeriesQuery())
    assert (hidden.value.kind, hidden.value.target) == (NOT_FOUND, "consumer")
    report = await analytics.consumer_report(org_a, "alice", SeriesQuery())
    assert report["consumer"] == "alice"
    assert report["totals"]["requests"] == 0


async def test_a_range_without_an_end_ends_at_the_operations_clock(
    engine: AsyncEngine, analytics: AnalyticsService
) -> None:
    op = operation(engine, clock=lambda: NOW)
    usage = await analytics.usage(op, UsageQuery(granularity="hour"))
    assert (usage["start"], usage["end"]) == (NOW - timedelta(hours=24), NOW)
    with pytest.raises(ServiceError) as backwards:
        await analytics.usage(op, UsageQuery(start=NOW + timedelta(hours=1)))
    assert backwards.value.kind is VALIDATION_FAILED
    with pytest.raises(ServiceError) as too_many:
        await analytics.usage(op, UsageQuery(start=NOW - timedelta(days=30), granularity="minute"))
    assert too_many.value.kind is VALIDATION_FAILED


async def test_an_unknown_or_oversized_key_names_no_consumer(analytics: AnalyticsService) -> None:
    assert await analytics.key_consumer("pk_live_unknown", NOW) is None
    assert await analytics.key_consumer("x" * 10_000, NOW) is None
    assert await analytics.key_consumer("", NOW) is None
