"""Quota usage without HTTP: organization scoping, the period taken from the operation's
clock, per-worker counters, and an unreadable store reported as its own problem."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.secrets import ServerSecret
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.errors import NOT_FOUND, ServiceError
from portcullis.services.usage import USAGE_UNAVAILABLE, UsageService
from portcullis.settings import Settings
from support.services import apply_config, operation

SECRET = ServerSecret.from_secret(b"u" * 32)
NOW = datetime(2030, 5, 17, 22, 30, tzinfo=UTC)
CONFIG: dict[str, Any] = {
    "consumers": [
        {"username": "alice", "plan": "gold", "organization": "org-a"},
        {"username": "bob", "plan": "gold", "organization": "org-b"},
    ],
    "plans": [
        {
            "name": "gold",
            "quotas": [
                {"name": "daily", "limit": 100, "period": "day", "timezone": "Asia/Tokyo"},
                {"name": "monthly", "limit": 1000, "period": "month", "timezone": "UTC"},
            ],
        }
    ],
    "plugins": [{"name": "key-auth", "config": {}}, {"name": "plan-limits", "config": {}}],
}


@pytest.fixture
async def usage(engine: AsyncEngine, editor: ConfigEditor) -> UsageService:
    await apply_config(engine, CONFIG)
    settings = Settings(database_url="sqlite+aiosqlite://", redis_url=None)
    return UsageService(engine, SECRET, editor, settings)


async def test_usage_is_scoped_and_counted_in_the_operations_period(
    engine: AsyncEngine, usage: UsageService
) -> None:
    with pytest.raises(ServiceError) as hidden:
        await usage.of_consumer(operation(engine, "org-a"), "bob")
    assert (hidden.value.kind, hidden.value.target) == (NOT_FOUND, "username")
    with pytest.raises(ServiceError) as missing:
        await usage.of_key(operation(engine), "no-such-key")
    assert (missing.value.kind, missing.value.target) == (NOT_FOUND, "key_id")

    out = await usage.of_consumer(operation(engine, "org-a", clock=lambda: NOW), "alice")
    assert (out.consumer, out.plan, out.plan_source, out.counters) == (
        "alice",
        "gold",
        "consumer",
        "per_worker",
    )
    assert out.at == NOW
    by_name = {q.name: q for q in out.quotas}
    # 22:30 UTC is already the next day in Tokyo.
    assert by_name["daily"].period_id == "2030-05-18"
    assert by_name["monthly"].period_id == "2030-05"
    assert [(q.used, q.remaining, q.live_workers) for q in out.quotas] == [
        (0, 100, 0),
        (0, 1000, 0),
    ]


async def test_an_unreadable_store_is_usage_unavailable(
    engine: AsyncEngine, usage: UsageService
) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE quota_usage"))
    with pytest.raises(ServiceError) as refusal:
        await usage.of_consumer(operation(engine), "alice")
    assert refusal.value.kind is USAGE_UNAVAILABLE
    assert refusal.value.kind.status == 503


async def test_usage_of_many_consumers_reads_the_counters_once(
    engine: AsyncEngine, usage: UsageService
) -> None:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    everyone = operation(engine, clock=lambda: NOW)
    one_by_one = {name: await usage.of_consumer(everyone, name) for name in ("alice", "bob")}
    event.listen(engine.sync_engine, "before_cursor_execute", count)
    together = await usage.of_consumers(everyone, ["alice", "bob", "nobody"])
    assert together == one_by_one
    counter_reads = [s for s in statements if "quota_usage" in s]
    assert len(counter_reads) == 1
    # An organization-limited caller gets only its own consumers, whatever it names.
    limited = await usage.of_consumers(
        operation(engine, "org-a", clock=lambda: NOW), ["alice", "bob"]
    )
    assert set(limited) == {"alice"}
