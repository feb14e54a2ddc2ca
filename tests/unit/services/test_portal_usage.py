"""A developer's usage: their applications only (another's is not found), the same
numbers the analytics service reports, per key and live."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.log_queue import RequestLogWriter
from portcullis.identity.secrets import ServerSecret
from portcullis.model.config import GatewayConfig
from portcullis.services.analytics import AnalyticsService
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.errors import NOT_FOUND, VALIDATION_FAILED, ServiceError
from portcullis.services.portal_catalogue import access_of
from portcullis.services.portal_usage import PortalUsageService
from portcullis.services.usage import UsageService
from portcullis.settings import Settings
from support.records import make_record
from support.services import apply_config, operation

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
CONFIG = {
    "consumers": [
        {"username": "alice-app", "organization": "org-a"},
        {"username": "bob-app", "organization": "org-b"},
    ]
}


@pytest.fixture
async def portal_usage(engine: AsyncEngine, editor: ConfigEditor) -> PortalUsageService:
    await apply_config(engine, CONFIG)
    settings = Settings(database_url="sqlite+aiosqlite://")
    secret = ServerSecret.from_secret(b"k" * 32)
    analytics = AnalyticsService(engine, editor, secret, settings)
    usage = UsageService(engine, secret, editor, settings)
    writer = RequestLogWriter(engine, "node-1")
    at = NOW.timestamp() - 30
    await writer.write(
        [
            make_record(1, consumer="alice-app", started_at=at, status=200),
            make_record(2, consumer="alice-app", started_at=at + 1, status=503),
            make_record(3, consumer="bob-app", started_at=at + 2, status=200),
        ]
    )
    return PortalUsageService(engine, secret, analytics, usage)


async def test_a_developer_reads_only_their_own_applications(
    engine: AsyncEngine, editor: ConfigEditor, portal_usage: PortalUsageService
) -> None:
    config: GatewayConfig = (await editor.state()).config
    alice = access_of(config, ["alice-app"])
    op = operation(engine, clock=lambda: NOW)
    overview = await portal_usage.overview(op, alice, "live")
    [app] = overview["apps"]
    assert app["app"] == "alice-app"
    assert (app["totals"]["requests"], app["totals"]["errors"]) == (2, 1)
    assert sum(app["chart"]["requests"]) == 2
    with pytest.raises(ServiceError) as hidden:
        await portal_usage.app(op, alice, "bob-app", "live")
    assert (hidden.value.kind, hidden.value.target) == (NOT_FOUND, "app")
    with pytest.raises(ServiceError) as hidden:
        await portal_usage.key(op, alice, "no-such-key")
    assert hidden.value.kind is NOT_FOUND
    with pytest.raises(ServiceError) as bad:
        await portal_usage.app(op, alice, "alice-app", "1y")
    assert bad.value.kind is VALIDATION_FAILED
    assert bad.value.errors[0].pointer == "#/window"
    day = await portal_usage.app(op, alice, "alice-app", "24h")
    assert day["granularity"] == "hour"
    assert len(day["chart"]["t"]) == 24
    # Nobody's applications: nothing to show.
    assert (await portal_usage.overview(op, access_of(config, []), "7d"))["apps"] == []
