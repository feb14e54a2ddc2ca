"""Auto-suspend end to end: a real gateway logs a burst on one API key, the anomaly
detector (auto-suspend on) suspends the key, and the gateway refuses it within ~1 s."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import func, insert, select

from portcullis.admin.background import SystemAuditTrail
from portcullis.analytics.anomalies import AnomalyDetector, DetectorConfig, Signal
from portcullis.events.bus import InProcessBus, read_events
from portcullis.identity.key_admin import KeySpec
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.secrets import load_server_secret
from portcullis.services.audit import AuditFilter, AuditLog
from portcullis.store.analytics_tables import RequestLogRow
from portcullis.store.engine import create_engine, write_transaction
from support.servers import Gateway, gateway, granian_app

DEMO = "portcullis.demo.upstream:create_demo_app"
BURST = 150


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    with granian_app(DEMO) as upstream:
        config = {
            "services": [{"name": "echo", "url": f"http://127.0.0.1:{upstream}/echo"}],
            "routes": [{"name": "keyed", "service": "echo", "paths": ["/keyed"]}],
            "consumers": [{"username": "alice"}],
            "plugins": [{"name": "key-auth", "route": "keyed", "config": {}}],
        }
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {
            # The gateway's own detector runs once at start only: this test drives one.
            "PORTCULLIS_ANOMALY_INTERVAL": "3600",
            "PORTCULLIS_REQUEST_LOG_FLUSH_INTERVAL": "0.2",
        }
        with gateway(tmp_path, path, workers=2, extra_env=env) as g:
            yield g


def history(key_id: str, minute: int) -> list[dict[str, object]]:
    """Twenty quiet minutes (10 requests each) before `minute`, as the log would hold them."""
    return [
        {
            "ts_ms": (minute - m * 60 + s) * 1000,
            "request_id": f"h{m}-{s}",
            "node": "history",
            "method": "GET",
            "path": "/keyed",
            "status": 200,
            "bytes_in": 0,
            "bytes_out": 10,
            "client_ip": "127.0.0.1",
            "latency_ms": 2.0,
            "gateway_ms": 1.0,
            "flags": 0,
            "consumer": "alice",
            "credential_id": key_id,
        }
        for m in range(1, 21)
        for s in range(10)
    ]


async def test_a_burst_through_the_gateway_gets_the_key_suspended(gw: Gateway) -> None:
    engine = create_engine(gw.database_url)
    try:
        keys = KeyRepository(
            engine, load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], Path())
        )
        created = await keys.create(
            "alice", KeySpec(name="mobile"), created_by="e2e", organization=None
        )
        key_id, headers = created.info.id, {"X-API-Key": created.key}
        # The burst must fit in one minute of the clock.
        while time.time() % 60 > 40:
            await asyncio.sleep(1)
        minute = int(time.time()) // 60 * 60
        async with write_transaction(engine) as conn:
            await conn.execute(insert(RequestLogRow), history(key_id, minute))
        async with httpx.AsyncClient(base_url=gw.url, timeout=5) as client:
            for _ in range(BURST):
                assert (await client.get("/keyed", headers=headers)).status_code == 200
        logged = 0
        for _ in range(100):  # the request log is flushed every 0.2 s
            async with engine.connect() as conn:
                logged = await conn.scalar(
                    select(func.count()).where(
                        RequestLogRow.credential_id == key_id,
                        RequestLogRow.ts_ms >= minute * 1000,
                    )
                )
            if logged == BURST:
                break
            await asyncio.sleep(0.1)
        assert logged == BURST

        config = DetectorConfig(
            history_minutes=30,
            warmup_minutes=5,
            auto_suspend=True,
            auto_suspend_signals=frozenset({Signal.REQUEST_RATE}),
        )
        audit = AuditLog(engine)
        detector = AnomalyDetector(
            engine,
            InProcessBus(engine),
            config,
            keys=keys,
            audit=SystemAuditTrail(audit),
            lateness=11,
        )
        # As if the burst's minute had just closed.
        found = await detector.run_once(datetime.fromtimestamp(minute + 60 + 12, UTC))
        suspended_at = time.monotonic()
        assert [
            (a.finding.subject, a.finding.signal, a.finding.observed, a.action) for a in found
        ] == [(key_id, Signal.REQUEST_RATE, BURST, "suspended")]
        lag = None
        async with httpx.AsyncClient(base_url=gw.url, timeout=5) as client:
            while time.monotonic() - suspended_at < 30:  # a hang guard; the lag is printed
                # New connections, so that both workers are asked.
                statuses = set()
                for _ in range(6):
                    r = await client.get("/keyed", headers={**headers, "Connection": "close"})
                    statuses.add(r.status_code)
                if statuses == {401}:
                    lag = time.monotonic() - suspended_at
                    break
                await asyncio.sleep(0.05)
        assert lag is not None, "the gateway still accepts the suspended key"
        print(f"auto-suspended key refused by the gateway after {lag:.2f} s")
        (entry,) = await audit.page(
            AuditFilter(actor="system:anomaly-detector"), limit=5, before_id=None
        )
        assert (entry.action, entry.resource_id) == ("suspend", key_id)
        kinds = [e.kind for e in await read_events(engine) if e.kind.startswith(("key.", "anom"))]
        # key.created (the test's key) and key.suspended come from the key store itself.
        assert kinds == ["key.created", "key.suspended", "anomaly.detected", "key.auto_suspended"]
    finally:
        await engine.dispose()
