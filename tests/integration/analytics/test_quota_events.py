"""`quota.threshold_reached` from the quota counters (SQLite and PostgreSQL): 80 % and
100 % announced once per subject, quota, period and threshold, by however many control
planes read the counters, with the limit in force and the webhook messages."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.quota_events import PublishedCounters, QuotaThresholds, split_key
from portcullis.events.bus import InProcessBus, read_events
from portcullis.identity.key_admin import KeySpec
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.secrets import ServerSecret
from portcullis.limits.calendar import period_of, to_us
from portcullis.limits.quota_usage import _upsert
from portcullis.model import GatewayConfig
from portcullis.model.loader import load_config_data
from portcullis.store.admin_tables import OrganizationRow
from portcullis.store.engine import write_transaction
from portcullis.store.webhook_tables import WebhookMessageRow
from portcullis.webhooks.endpoints import NewEndpoint, create_endpoint

SERVER = ServerSecret.from_secret(b"quota-events-test-secret-0123456789abcdef")
# The job reads the periods at this instant (its injected clock): a run across midnight
# UTC would otherwise see the counters published below as yesterday's.
NOW = datetime.now(UTC)
MONTH = period_of("month", "UTC", to_us(NOW))
DAY = period_of("day", "UTC", to_us(NOW))


def gateway_config(**extra: Any) -> GatewayConfig:
    return load_config_data(
        {
            "services": [{"name": "svc", "url": "http://127.0.0.1:9"}],
            "routes": [{"name": "api", "service": "svc", "paths": ["/api"]}],
            "consumers": [
                {"username": "alice", "plan": "basic", "organization": "acme"},
                {"username": "bob", "plan": "basic"},
            ],
            "plans": [
                {
                    "name": "basic",
                    "organization": None,
                    "quotas": [
                        {"name": "monthly", "limit": 10, "period": "month"},
                        {"name": "keyday", "limit": 5, "period": "day", "key": "credential"},
                    ],
                }
            ],
            "plugins": [{"name": "plan-limits", "config": {}}],
            **extra,
        }
    )


async def publish(engine: AsyncEngine, worker: str, key: str, used: int, end_us: int) -> None:
    """What a data-plane worker publishes (limits/quota_usage.py) for one counter."""
    row = {
        "worker_id": worker,
        "counter_key": key,
        "period_end_us": end_us,
        "used": used,
        "updated_at": datetime.now(UTC),
    }
    async with write_transaction(engine) as conn:
        await _upsert(conn, [row], add=False)


def job(engine: AsyncEngine, config: GatewayConfig, bus: InProcessBus) -> QuotaThresholds:
    async def current() -> GatewayConfig:
        return config

    return QuotaThresholds(engine, bus, PublishedCounters(engine), current, clock=lambda: NOW)


async def _setup(engine: AsyncEngine) -> tuple[str, str]:
    now = datetime.now(UTC)
    org = str(uuid.uuid4())
    async with write_transaction(engine) as conn:
        await conn.execute(
            insert(OrganizationRow).values(id=org, name="acme", created_at=now, updated_at=now)
        )
        endpoint, _ = await create_endpoint(
            conn, SERVER, NewEndpoint("http://127.0.0.1:9/hook", ["quota.*"]), now
        )
    return org, endpoint


async def test_80_and_100_percent_are_announced_once_each(engine: AsyncEngine) -> None:
    org, endpoint = await _setup(engine)
    bus = InProcessBus(engine)
    subscription = bus.subscribe(["quota.threshold_reached"])
    config = gateway_config()
    first, second = job(engine, config, bus), job(engine, config, bus)
    key = f"pq:monthly:{MONTH.id}:c=alice"
    assert split_key(key) == ("pq:monthly:", MONTH.id, "c=alice")

    await publish(engine, "w1", key, 4, MONTH.ends_us)
    await publish(engine, "w2", key, 3, MONTH.ends_us)
    assert await first.run_once() == []  # 7 of 10

    await publish(engine, "w2", key, 4, MONTH.ends_us)  # 8 of 10: 80 %
    # Two control planes reading the same counters at once: one event.
    both = await asyncio.gather(first.run_once(), second.run_once())
    (event,) = [e for events in both for e in events]
    assert (event.kind, event.subject) == ("quota.threshold_reached", "consumer:alice")
    assert event.organization_id == org
    assert event.data == {
        "consumer": "alice",
        "key_id": None,
        "plan": "basic",
        "quota": "monthly",
        "route": None,
        "period": "month",
        "period_id": MONTH.id,
        "resets_at": MONTH.ends_at().astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "threshold": 80,
        "limit": 10,
        "used": 8,
    }
    assert await asyncio.wait_for(subscription.get(), 1) == event
    assert await first.run_once() == []
    assert await job(engine, config, bus).run_once() == []  # a restarted control plane

    await publish(engine, "w1", key, 7, MONTH.ends_us)  # 11 of 10
    (full,) = await second.run_once()
    assert (full.data["threshold"], full.data["used"]) == (100, 11)
    assert await first.run_once() == []

    stored = await read_events(engine, kinds=["quota.threshold_reached"])
    assert stored == [event, full]
    async with engine.connect() as conn:
        queued = (
            await conn.execute(
                select(WebhookMessageRow.event_id).where(WebhookMessageRow.endpoint_id == endpoint)
            )
        ).all()
    assert sorted(q.event_id for q in queued) == [event.id, full.id]


async def test_the_limit_in_force_and_per_key_quotas(engine: AsyncEngine) -> None:
    await _setup(engine)
    keys = KeyRepository(engine, SERVER)
    key_id = (
        await keys.create("bob", KeySpec(name="k"), created_by="t", organization=None)
    ).info.id
    # An override doubles bob's quotas: 8 of monthly 20 is 40 %, not 80 %.
    config = gateway_config(
        overrides=[
            {
                "name": "launch",
                "consumer": "bob",
                "multiplier": 2,
                "expires_at": "2099-01-01T00:00:00Z",
                "reason": "launch",
            }
        ]
    )
    bus = InProcessBus(engine)
    await publish(engine, "w1", f"pq:monthly:{MONTH.id}:c=bob", 8, MONTH.ends_us)
    await publish(engine, "w1", f"pq:keyday:{DAY.id}:k={key_id}", 10, DAY.ends_us)  # 10 of 10
    # Counters of no consumer, of an unknown quota or of an ended period say nothing.
    await publish(engine, "w1", f"pq:keyday:{DAY.id}:i=203.0.113.9", 10, DAY.ends_us)
    await publish(engine, "w1", f"pq:gone:{MONTH.id}:c=bob", 99, MONTH.ends_us)
    await publish(engine, "w1", "pq:monthly:1999-01:c=bob", 99, MONTH.ends_us)
    events = await job(engine, config, bus).run_once()
    assert sorted((e.subject, e.data["quota"], e.data["threshold"]) for e in events) == [
        (f"key:{key_id}", "keyday", 80),
        (f"key:{key_id}", "keyday", 100),
    ]
    assert {e.data["limit"] for e in events} == {10}
    assert {e.data["consumer"] for e in events} == {"bob"}
