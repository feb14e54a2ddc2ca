"""`version.sunset_approaching` (SQLite and PostgreSQL): each consumer that still calls a
version hears of its sunset once, inside the notice period — across rounds, restarts
and control planes running together — a moved sunset is announced again, and a real
control plane delivers the event to a subscribed receiver as a signed webhook."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from api_usage_support import DAY, gateway, traffic
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.log_queue import RequestLogWriter
from portcullis.analytics.rollups import Rollups
from portcullis.analytics.sunset_notices import SunsetNotices
from portcullis.identity.secrets import load_server_secret
from portcullis.model import GatewayConfig
from portcullis.model.loader import load_config_data
from portcullis.store.analytics_tables import SunsetNoticeRow
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import upgrade_to_head
from portcullis.webhooks.endpoints import NewEndpoint, create_endpoint
from support.servers import control_plane
from support.webhook_receiver import webhook_receiver

ALLOW_LOOPBACK = {"PORTCULLIS_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]'}
NOTICE = timedelta(days=30)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A store holding the last hours of `shop` traffic, rolled up."""
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    try:
        await RequestLogWriter(engine, "test-node").write(traffic(time.time()))
        await Rollups(engine, max_batches=100_000, batch_buckets={"minute": 1440}).run_once()
        yield engine
    finally:
        await engine.dispose()


def notices(
    engine: AsyncEngine,
    sunset: datetime,
    notice: timedelta = NOTICE,
    later: timedelta = timedelta(0),
) -> SunsetNotices:
    """A job as a (re)started control plane builds it, on a config with `sunset`, with a
    clock `later` than now."""
    config = load_config_data(gateway(sunset))

    async def current() -> GatewayConfig:
        return config

    return SunsetNotices(
        engine,
        current,
        notice=notice,
        caller_days=30,
        clock=lambda: datetime.now(UTC) + later,
    )


def in_days(days: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)


async def test_each_consumer_still_calling_hears_of_the_sunset_once(engine: AsyncEngine) -> None:
    sunset = in_days(20)
    # Outside the notice period nothing is announced yet.
    assert await notices(engine, sunset, notice=timedelta(days=10)).run_once() == []
    first = await notices(engine, sunset).run_once()
    # alice called v1 (one request through the sandbox); anonymous requests have nobody
    # to tell, bob calls v2 (no sunset), carol's call is older than the 30-day window.
    assert [(e.kind, e.subject) for e in first] == [
        ("version.sunset_approaching", "consumer:alice")
    ]
    data = first[0].data
    assert {k: data[k] for k in ("api", "version", "successor", "consumer", "requests")} == {
        "api": "shop",
        "version": "v1",
        "successor": "v2",
        "consumer": "alice",
        "requests": 4,
    }
    assert datetime.fromisoformat(data["sunset_at"]) == sunset
    assert data["window_days"] == 30
    assert datetime.fromisoformat(data["last_seen"]) > datetime.now(UTC) - timedelta(hours=4)
    # A new job (a restarted control plane) finds it announced.
    assert await notices(engine, sunset).run_once() == []
    # A moved sunset is news: announced again, once.
    moved = await notices(engine, sunset + timedelta(days=7)).run_once()
    assert [e.subject for e in moved] == ["consumer:alice"]
    assert await notices(engine, sunset + timedelta(days=7)).run_once() == []
    # Past the sunset there is nothing left to announce, nor to remember.
    assert (
        await notices(engine, sunset + timedelta(days=7), later=timedelta(days=28)).run_once() == []
    )
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(SunsetNoticeRow)) == 0


async def test_control_planes_announcing_together_announce_once(engine: AsyncEngine) -> None:
    sunset = in_days(5)
    rounds = [notices(engine, sunset).run_once() for _ in range(4)]
    results = await asyncio.gather(*rounds, return_exceptions=True)
    announced = [e for r in results if isinstance(r, list) for e in r]
    assert [e.subject for e in announced] == ["consumer:alice"]


async def test_a_control_plane_delivers_the_notice_as_a_signed_webhook(tmp_path: Path) -> None:
    """On SQLite only: the store-dependent parts run on both stores above; this one is
    about the job running in a control plane and the delivery (~20 s)."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    server = load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], tmp_path / "unused")
    sunset = in_days(20)
    try:
        await ConfigRepository(engine).apply(
            load_config_data(gateway(sunset)), author="test", comment=None
        )
        await RequestLogWriter(engine, "test-node").write(traffic(time.time() - 2 * DAY))
        async with webhook_receiver() as receiver:
            async with write_transaction(engine) as conn:
                _, receiver.secret = await create_endpoint(
                    conn, server, NewEndpoint(receiver.url, ["version.*"]), datetime.now(UTC)
                )
            # The plane's own rollup round feeds `api_callers`, then its notice round runs.
            env = {**ALLOW_LOOPBACK, "PORTCULLIS_SUNSET_NOTICE_INTERVAL": "0.5"}
            with control_plane(database_url, env=env):
                (delivery,) = await receiver.wait_for(1, timeout=60)
    finally:
        await engine.dispose()
    assert delivery.verified is True
    body = json.loads(delivery.body)
    assert body["type"] == "version.sunset_approaching"
    assert body["data"]["consumer"] == "alice"
    assert body["data"]["version"] == "v1"
    assert datetime.fromisoformat(body["data"]["sunset_at"]) == sunset
